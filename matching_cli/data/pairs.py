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

from functools import cached_property

import numpy as np
import scipy.sparse as sp

from matching_cli.data.features import ATTRIBUTE_FIELDS, TEXT_FIELDS, Listings, column_bounds

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
# The families that read the text fields' arrays alone (`text_rows`, `name_char`).
TEXT_FAMILIES = ("text", "digits")
# Pairs a batch: a million at the real size took 5.7-6.5 s in batches of 16,384, 6.4-7.2 s in
# batches of 65,536 (its products' fresh memory each time), 6.9-8.4 s in smaller ones; with two
# processes at once (predict's workers on two cores) 16,384 and 65,536 did the same.
BATCH_PAIRS = 16_384
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


def _field_dots(x: sp.csr_matrix, y: sp.csr_matrix, bounds: np.ndarray) -> np.ndarray:
    """(rows, fields) dot products x[k] . y[k] within each field's columns (`column_bounds`):
    the product's entries summed per row and field."""
    product = x.multiply(y).tocsr()
    fields = len(bounds) - 1
    row = np.repeat(np.arange(product.shape[0]), np.diff(product.indptr))
    field = np.searchsorted(bounds, product.indices, side="right") - 1
    sums = np.bincount(row * fields + field, product.data, minlength=product.shape[0] * fields)
    return sums.reshape(-1, fields).astype(np.float32)


def _ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
    return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)


class _Batch:
    """A batch of pairs (rows a[k], b[k] of `Listings`): each side's rows of a matrix are gathered
    once, and each product of them is computed once, for every family that reads it."""

    def __init__(self, f: Listings, a: np.ndarray, b: np.ndarray):
        self.f, self.a, self.b = f, a, b

    def same(self, name: str) -> np.ndarray:
        """Dot products of a text field, a's with b's."""
        return self._text_same[:, _TEXT_INDEX[name]]

    def across(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """Dot products of a text field with what the other listing gives in its place
        (`Listings.text_across`): a's with b's, and b's with a's."""
        k = _TEXT_INDEX[name]
        ab, ba = self._text_across
        return ab[:, k], ba[:, k]

    def text_counts(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """How many entries each side's row of a text field has."""
        k = _TEXT_INDEX[name]
        return self._text_counts[0][:, k], self._text_counts[1][:, k]

    @cached_property
    def _text_counts(self) -> tuple[np.ndarray, np.ndarray]:
        return self.f.text_counts[self.a], self.f.text_counts[self.b]

    @cached_property
    def _text_rows(self) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        return self.f.text_rows[self.a], self.f.text_rows[self.b]

    @cached_property
    def _text_same(self) -> np.ndarray:
        return _field_dots(*self._text_rows, _TEXT_BOUNDS)

    @cached_property
    def _text_across(self) -> tuple[np.ndarray, np.ndarray]:
        rows_a, rows_b = self._text_rows
        across_a, across_b = self.f.text_across[self.a], self.f.text_across[self.b]
        return (
            _field_dots(rows_a, across_b, _TEXT_BOUNDS),
            _field_dots(across_a, rows_b, _TEXT_BOUNDS),
        )

    @cached_property
    def attributes(self) -> np.ndarray:
        """(pairs, ATTRIBUTE_FIELDS) dot products, each field with itself."""
        rows = self.f.attribute_rows
        return _field_dots(rows[self.a], rows[self.b], _ATTRIBUTE_BOUNDS)


_TEXT_INDEX = {name: k for k, name in enumerate(TEXT_FIELDS)}
_TEXT_BOUNDS = column_bounds(TEXT_FIELDS)
_ATTRIBUTE_BOUNDS = column_bounds(ATTRIBUTE_FIELDS)


def _text(batch: _Batch) -> list[np.ndarray]:
    f, a, b = batch.f, batch.a, batch.b
    shared = batch.same("name_tokens")
    na, nb = batch.text_counts("name_tokens")
    return [
        _dot(f.name_char[a], f.name_char[b]),
        batch.same("name_word"),
        batch.same("desc_word"),
        np.maximum(*batch.across("name_word")),
        _ratio(shared, na + nb - shared),
        _ratio(shared, np.minimum(na, nb)),
        (~(f.has_desc[a] & f.has_desc[b])).astype(np.float32),
    ]


def _digits(batch: _Batch) -> list[np.ndarray]:
    shared = batch.same("name_digits")
    na, nb = batch.text_counts("name_digits")
    both = (na > 0) & (nb > 0)
    # A value on one side whose unit the other side gives with other values only ("128gb" against
    # "256gb"): units of a in b, counted per value of a, less the values they share; both ways.
    unit_hits = np.add(*batch.across("unit_counts"))
    conflicts = np.maximum(unit_hits - 2 * batch.same("unit_values"), 0)
    return [
        _ratio(shared, na + nb - shared),
        shared,
        np.where(both, np.minimum(na, nb) - shared, 0).astype(np.float32),
        conflicts,
        (both & (shared == 0)).astype(np.float32),
        np.maximum(*batch.across("name_digits")),
        (~both).astype(np.float32),
    ]


def _attributes(batch: _Batch) -> list[np.ndarray]:
    shared, equal, numeric, numeric_equal = batch.attributes.T
    f, a, b = batch.f, batch.a, batch.b
    return [
        shared,
        _ratio(equal, shared),
        np.maximum(numeric - numeric_equal, 0),
        (~(f.has_attrs[a] & f.has_attrs[b])).astype(np.float32),
    ]


def _categories(batch: _Batch) -> list[np.ndarray]:
    ca, cb = batch.f.categories[batch.a], batch.f.categories[batch.b]
    same = ((ca == cb) & (ca >= 0)).astype(np.float32)
    missing = (ca[:, 0] < 0) | (cb[:, 0] < 0)
    return [same[:, 0], same[:, 1], same[:, 2], missing.astype(np.float32)]


def _pictures(batch: _Batch) -> list[np.ndarray]:
    """Cosines of every picture of a with every picture of b, reduced per pair.

    Pairs are grouped by their (pictures of a, pictures of b) counts, and each group is one
    batched product of the gathered vectors: each picture is gathered once per pair, not once
    per picture pair (3x faster at the full data's 1.8 pictures a listing). A group is taken in
    slices of at most PICTURE_VECTORS vectors a side, so listings with many pictures cannot blow
    the gathered vectors up to gigabytes.
    """
    f, a, b = batch.f, batch.a, batch.b
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
        batch = _Batch(listings, left[rows], right[rows])
        columns = [
            col for family in FAMILIES if family in families for col in _COMPUTE[family](batch)
        ]
        out[rows] = np.column_stack(columns)
    return out
