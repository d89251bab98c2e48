"""Pair features: two rows of `Listings` -> one float32 row of named similarities, in batches.

Columns come in families that a `[features]` setting switches on and off. Neutral values, when a
listing lacks the field: similarities and counts 0, and the family's "*_missing" flag 1 (either
listing lacks it). No column is ever NaN, so both trees and the MLP read them as they are.

| family     | columns |
|------------|---------|
| text       | name char/word TF-IDF cosine, description word cosine, name-vs-description word
|            | cosine (the larger of the two directions), name token Jaccard and overlap, desc_missing |
| digits     | Jaccard and shared count of digit-bearing name tokens, unmatched ones, unit conflicts
|            | ("128gb" vs "256gb"), "both have codes and none shared", a name code found in the
|            | other's description, digits_missing |
| attributes | shared keys, share of shared keys with equal values, numeric conflicts, attr_missing |
| categories | same level 2, 3, 4; cat_missing |
| pictures   | best and mean cosine over all picture pairs; pic_missing |
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from matching_cli.data.features import Listings

FAMILIES: dict[str, tuple[str, ...]] = {
    "text": (
        "name_char_cos", "name_word_cos", "desc_word_cos", "cross_word_cos",
        "name_jaccard", "name_overlap", "desc_missing",
    ),
    "digits": (
        "digit_jaccard", "digit_shared", "digit_unmatched", "unit_conflicts",
        "digit_none_shared", "digit_cross_match", "digits_missing",
    ),
    "attributes": ("attr_shared_keys", "attr_equal_share", "attr_numeric_conflicts", "attr_missing"),
    "categories": ("cat2_same", "cat3_same", "cat4_same", "cat_missing"),
    "pictures": ("pic_best_cos", "pic_mean_cos", "pic_missing"),
}  # fmt: skip
BATCH_PAIRS = 65_536
PICTURE_VECTORS = 1 << 18


def feature_names(families: tuple[str, ...] = tuple(FAMILIES)) -> list[str]:
    """Column names, in order, of `pair_features` for these families."""
    unknown = set(families) - set(FAMILIES)
    if unknown:
        raise ValueError(f"unknown feature families {sorted(unknown)}; known: {list(FAMILIES)}")
    return [name for family in FAMILIES if family in families for name in FAMILIES[family]]


def _dot(x: sp.csr_matrix, y: sp.csr_matrix) -> np.ndarray:
    """Row-wise dot products of two blocks of rows, x[k] . y[k]."""
    return np.asarray(x.multiply(y).sum(axis=1), dtype=np.float32).ravel()


def _sides(x: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The rows of x for both sides of the pairs, each gathered once for all the dots of a batch."""
    return x[a], x[b]


def _nnz(x: sp.csr_matrix, rows: np.ndarray) -> np.ndarray:
    return np.diff(x.indptr)[rows].astype(np.float32)


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


def _text(f: Listings, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    tokens_a, tokens_b = _sides(f.name_tokens, a, b)
    shared = _dot(tokens_a, tokens_b)
    na, nb = _nnz(f.name_tokens, a), _nnz(f.name_tokens, b)
    name_a, name_b = _sides(f.name_word, a, b)
    desc_a, desc_b = _sides(f.desc_word, a, b)
    return [
        _dot(*_sides(f.name_char, a, b)),
        _dot(name_a, name_b),
        _dot(desc_a, desc_b),
        np.maximum(_dot(name_a, desc_b), _dot(desc_a, name_b)),
        _ratio(shared, na + nb - shared),
        _ratio(shared, np.minimum(na, nb)),
        (~(f.has_desc[a] & f.has_desc[b])).astype(np.float32),
    ]


def _digits(f: Listings, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    name_a, name_b = _sides(f.name_digits, a, b)
    shared = _dot(name_a, name_b)
    na, nb = _nnz(f.name_digits, a), _nnz(f.name_digits, b)
    both = (na > 0) & (nb > 0)
    # A value on one side whose unit the other side gives with other values only ("128gb" against
    # "256gb"): units of a in b, counted per value of a, less the values they share; both ways.
    counts_a, counts_b = _sides(f.unit_counts, a, b)
    unit_hits = _dot(counts_a, counts_b.sign()) + _dot(counts_a.sign(), counts_b)
    conflicts = np.maximum(unit_hits - 2 * _dot(*_sides(f.unit_values, a, b)), 0)
    desc_a, desc_b = _sides(f.desc_digits, a, b)
    cross = np.maximum(_dot(name_a, desc_b), _dot(desc_a, name_b))
    return [
        _ratio(shared, na + nb - shared),
        shared,
        np.where(both, np.minimum(na, nb) - shared, 0).astype(np.float32),
        conflicts,
        (both & (shared == 0)).astype(np.float32),
        cross,
        (~both).astype(np.float32),
    ]


def _attributes(f: Listings, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    shared = _dot(*_sides(f.attr_keys, a, b))
    equal = _dot(*_sides(f.attr_values, a, b))
    numeric = _dot(*_sides(f.attr_numeric_keys, a, b))
    numeric_equal = _dot(*_sides(f.attr_numeric_values, a, b))
    return [
        shared,
        _ratio(equal, shared),
        np.maximum(numeric - numeric_equal, 0),
        (~(f.has_attrs[a] & f.has_attrs[b])).astype(np.float32),
    ]


def _categories(f: Listings, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    ca, cb = f.categories[a], f.categories[b]
    same = ((ca == cb) & (ca >= 0)).astype(np.float32)
    missing = (ca[:, 0] < 0) | (cb[:, 0] < 0)
    return [same[:, 0], same[:, 1], same[:, 2], missing.astype(np.float32)]


def _pictures(f: Listings, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """Cosines of every picture of a with every picture of b, reduced per pair.

    Pairs are grouped by their (pictures of a, pictures of b) counts, and each group is one
    batched product of the gathered vectors: each picture is gathered once per pair, not once
    per picture pair (3x faster at the full data's 1.8 pictures a listing). A group is taken in
    slices of at most PICTURE_VECTORS vectors a side, so listings with many pictures cannot blow
    the gathered vectors up to gigabytes.
    """
    start, count = f.picture_spans[:, 0], f.picture_spans[:, 1]
    count_a, count_b = count[a], count[b]
    missing = (count_a == 0) | (count_b == 0)
    best = np.zeros(len(a), dtype=np.float32)
    mean = np.zeros(len(a), dtype=np.float32)
    width = int(count.max(initial=0)) + 1
    shape = np.where(missing, 0, count_a * width + count_b)
    order = np.argsort(shape, kind="stable")
    shapes, first, sizes = np.unique(shape[order], return_index=True, return_counts=True)
    for key, lo, size in zip(shapes.tolist(), first.tolist(), sizes.tolist(), strict=True):
        if key == 0:
            continue  # a side without pictures: neutral values
        i, j = divmod(key, width)
        step = max(1, PICTURE_VECTORS // max(i, j))
        for s in range(lo, lo + size, step):
            rows = order[s : min(s + step, lo + size)]
            left = f.pictures[start[a[rows]][:, None] + np.arange(i)]
            right = f.pictures[start[b[rows]][:, None] + np.arange(j)]
            # Stored in half precision, summed in single: cheaper than converting the vectors.
            cosine = np.einsum("gid,gjd->gij", left, right, dtype=np.float32).reshape(len(rows), -1)
            best[rows] = cosine.max(axis=1)
            mean[rows] = cosine.mean(axis=1)
    return [best, mean, missing.astype(np.float32)]


_COMPUTE = {
    "text": _text,
    "digits": _digits,
    "attributes": _attributes,
    "categories": _categories,
    "pictures": _pictures,
}


def pair_features(
    listings: Listings,
    left: np.ndarray,
    right: np.ndarray,
    families: tuple[str, ...] = tuple(FAMILIES),
    batch_pairs: int = BATCH_PAIRS,
) -> np.ndarray:
    """(len(left), len(feature_names(families))) float32 features of pairs (left[k], right[k]).

    The pairs are taken in the order of their left rows: each batch then reads the left side's
    rows of every array from one stretch of memory, not from all over it. At the real size that
    took a million random pairs' features from 9.0-10.6 s to 7.8-8.4 s; each row's values are the
    same either way (taking the right side in order too was slower: its rows must be put back)."""
    names = feature_names(families)
    out = np.empty((len(left), len(names)), dtype=np.float32)
    left, right = np.asarray(left, dtype=np.int64), np.asarray(right, dtype=np.int64)
    order = np.argsort(left, kind="stable")
    for start in range(0, len(left), batch_pairs):
        rows = order[start : start + batch_pairs]
        a, b = left[rows], right[rows]
        columns = [
            col
            for family in FAMILIES
            if family in families
            for col in _COMPUTE[family](listings, a, b)
        ]
        out[rows] = np.column_stack(columns)
    return out
