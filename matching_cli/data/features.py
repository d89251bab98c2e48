"""Per-listing features from the listings' own fields, computed once and stored as arrays.

`fit_text_model` learns the TF-IDF vocabularies from the listings' names; `listing_features` turns
the raw columns into sparse rows and small arrays (`Listings`); `matching_cli.data.pairs` compares
two rows of them. The text work is done once per distinct word (`data/words.py`) and per distinct
attribute or category text, so millions of listings cost little more than their vocabulary.
Everything is saved with `np.save` without pickle (sparse rows as their parts' arrays), and the
TF-IDF as arrays (n-gram keys, idf) plus the word terms in JSON, so a served model computes the
same features for listings it has never seen.

Every input may be absent (a whole column, or a value): absent text is "", absent attributes an
empty dict, absent categories code -1, absent pictures zero vectors; the pair step turns them into
neutral values plus a "missing" flag.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from matching_cli.data.arrays import load_csr, mapped, save_csr
from matching_cli.data.fields import Fields
from matching_cli.data.ngrams import NGRAMS, ngram_keys
from matching_cli.data.text import UNITS
from matching_cli.data.words import (
    HASH_FEATURES,
    Words,
    as_strings,
    hashed,
    remap_columns,
    token_hash,
)
from matching_cli.errors import DataError

# A "128gb"-like token: a number and one of the units `normalise` writes (longest tried first).
_UNIT_VALUE = re.compile(
    r"(?:\d+\.?\d*|\.\d+)("
    + "|".join(sorted(map(re.escape, set(UNITS.values())), key=len, reverse=True))
    + ")"
)
_DIGIT = re.compile(r"\d")
# Picture vectors are kept in half precision: the full data's 4M pictures take 1 GB instead of 2,
# and a cosine of unit vectors loses only about 1e-3 (the pair step computes it in float32).
PICTURE_DTYPE = np.float16
MAX_EXTRA_PICTURES = 8  # per listing: a few more pictures say what they can; dozens cost memory

# The sparse fields compared pair by pair are stored side by side, one matrix for the names' and
# descriptions' and one for the attributes', so that a pair reads each listing's row of them in one
# piece: a batch gathers rows 8 times, not 24. At the real size the fields but the names' n-grams
# took 1.3 s a million pairs this way, 2.9-4.9 s field by field. Each field has columns of its own:
# the word vocabulary's width (at most MAX_TEXT_FEATURES terms), or the hashed tokens'.
MAX_TEXT_FEATURES = 1 << 18
TEXT_FIELDS = {
    "name_word": MAX_TEXT_FEATURES,  # TF-IDF rows of the name's words, L2-normalised
    # Descriptions' words count, their character n-grams do not: at 300 characters they were half
    # of prepare's memory on the full data, and the names' n-grams carry the spelling variants.
    "desc_word": MAX_TEXT_FEATURES,
    "name_tokens": HASH_FEATURES,  # binary, hashed word tokens of the name
    "name_digits": HASH_FEATURES,  # binary, hashed digit-bearing tokens of the name
    "unit_values": HASH_FEATURES,  # binary, "128gb"-like tokens of name and description
    "unit_counts": HASH_FEATURES,  # per unit ("gb"), how many values the listing gives for it
}
ATTRIBUTE_FIELDS = {
    "attr_keys": HASH_FEATURES,  # binary, hashed attribute names
    "attr_values": HASH_FEATURES,  # binary, hashed "name=values"
    "attr_numeric_keys": HASH_FEATURES,  # binary, attribute names whose value is a number
    "attr_numeric_values": HASH_FEATURES,  # binary, "name=number" of those
}


@dataclass
class TextModel:
    """TF-IDF of names, by character n-grams (of `ngrams` characters, within words;
    `data/ngrams.py`, kept as 64-bit keys in ascending order) and by word tokens (terms in index
    order), each with its idf, ln((1 + n) / (1 + df)) + 1 over n names; counts enter as
    1 + ln(count) and rows are L2-normalised (scikit-learn's sublinear TF-IDF)."""

    char_keys: np.ndarray
    char_idf: np.ndarray
    word_terms: list[str]
    word_idf: np.ndarray
    ngrams: tuple[int, int] = NGRAMS

    @cached_property
    def _word_index(self) -> dict[str, int]:
        return {term: i for i, term in enumerate(self.word_terms)}

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The n-gram keys and idf weights as arrays, the word terms as a JSON-ready list."""
        arrays = {"char_keys": self.char_keys, "char_idf": self.char_idf, "word_idf": self.word_idf}
        return arrays, {"word_terms": self.word_terms, "char_ngrams": list(self.ngrams)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> TextModel:
        if "char_keys" not in arrays:  # n-gram strings, before they were hashed
            raise DataError(
                "this text model was saved by an older version of matching; train the model again"
            )
        return cls(
            char_keys=np.asarray(arrays["char_keys"], dtype=np.uint64),
            char_idf=np.asarray(arrays["char_idf"], dtype=np.float64),
            word_terms=list(meta["word_terms"]),
            word_idf=np.asarray(arrays["word_idf"], dtype=np.float64),
            # Saved before the sizes were recorded: 3 to 5 characters, as the code was then.
            ngrams=tuple(meta.get("char_ngrams", (3, 5))),
        )

    def word_tfidf(self, words: Words, counts: sp.csr_matrix) -> sp.csr_matrix:
        """Rows' word TF-IDF from their token counts (`words.token_counts()`)."""
        index = self._word_index
        column_of = np.array([index.get(t, -1) for t in words.token_strings], dtype=np.int64)
        return _tfidf(remap_columns(counts, column_of, len(index)), self.word_idf)

    def char_tfidf(self, words: Words) -> sp.csr_matrix:
        """Rows' character n-gram TF-IDF, the n-grams of each distinct word found once, sorted
        within each row: scipy multiplies two sorted rows without a workspace. At the real size,
        with 3-5-grams, a million pairs' features took 5.0-5.3 s so, 5.3-5.6 s unsorted; the
        sorting took 3 s of `prepare`, while its worker was still busy."""
        owner, keys = ngram_keys(words.normalised, self.ngrams)
        column = np.minimum(np.searchsorted(self.char_keys, keys), len(self.char_keys) - 1)
        known = self.char_keys[column] == keys if len(self.char_keys) else keys < 0
        shape = (len(words.normalised), len(self.char_keys))
        grams = _word_grams(owner[known], column[known], shape)
        rows = _tfidf((words.rows @ grams).tocsr(), self.char_idf)
        rows.sort_indices()
        return rows


def _word_grams(owner: np.ndarray, column: np.ndarray, shape: tuple[int, int]) -> sp.csr_matrix:
    """(distinct words, terms) n-gram counts from (word, term) pairs."""
    grams = sp.csr_matrix((np.ones(len(owner), np.float32), (owner, column)), shape=shape)
    grams.sum_duplicates()
    return grams


def _tfidf(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Sublinear TF-IDF rows, L2-normalised (an all-zero row stays zero), in place of `counts`
    when it is float32 already (a fresh product is: no second copy of 1.5 GB at full size)."""
    x = counts.astype(np.float32, copy=False)
    np.log(x.data, out=x.data)
    x.data += 1.0
    weights = idf.astype(np.float32)
    for start in range(0, x.nnz, 1 << 24):  # idf gathered a slice at a time
        x.data[start : start + (1 << 24)] *= weights[x.indices[start : start + (1 << 24)]]
    return unit_sparse_rows(x)


def unit_sparse_rows(x: sp.csr_matrix, rows_at_once: int = 1 << 18) -> sp.csr_matrix:
    """`x`'s rows L2-normalised in place (an all-zero row stays zero), summed in double
    precision, a part of the rows at a time: scikit-learn's `normalize`, without importing
    scikit-learn (0.7 s of every command's start)."""
    for lo in range(0, x.shape[0], rows_at_once):
        bounds = x.indptr[lo : lo + rows_at_once + 1]
        part = x.data[bounds[0] : bounds[-1]]
        if not len(part):
            continue
        counts = np.diff(bounds)
        # A zero after the last entry: the rows at the end that are empty start there. reduceat
        # gives an empty row the entry where it starts: its scale is set to zero below.
        squares = np.zeros(len(part) + 1)
        np.square(part, out=squares[:-1], dtype=np.float64)
        norms = np.sqrt(np.add.reduceat(squares, bounds[:-1] - bounds[0]))
        scale = np.divide(1.0, norms, out=np.zeros_like(norms), where=(norms > 0) & (counts > 0))
        part *= np.repeat(scale.astype(x.dtype), counts)
    return x


def fit_text_model(
    names: Words | Sequence[str | None],
    max_features: int = MAX_TEXT_FEATURES,
    max_names: int = 300_000,
    ngrams: tuple[int, int] = NGRAMS,
) -> TextModel:
    """Fit both vocabularies on the names of the listings.

    Above `max_names` non-empty names an evenly spaced sample is used: the idf of any term that
    matters is stable long before millions of names. Terms in fewer than 2 names are dropped
    (from 1,000 names on), and the `max_features` most frequent kept.
    """
    if not isinstance(names, Words):
        names = Words.of(as_strings(names, len(names)))
    rows = np.flatnonzero(names.has_text())
    if len(rows) > max_names:
        rows = rows[np.linspace(0, len(rows) - 1, max_names).astype(np.int64)]
    sample = names.rows[rows]
    n = len(rows)
    min_df = 2 if n >= 1000 else 1
    kept, word_idf = _vocabulary((sample @ names.word_tokens).tocsr(), n, min_df, max_features)
    order = sorted(range(len(kept)), key=lambda i: names.token_strings[kept[i]])
    word_terms = [names.token_strings[kept[i]] for i in order]
    used = np.flatnonzero(np.asarray(sample.sum(axis=0)).ravel() > 0)
    owner, keys = ngram_keys([names.normalised[word] for word in used], ngrams)
    distinct_keys, column = np.unique(keys, return_inverse=True)
    grams = _word_grams(used[owner], column, (len(names.normalised), len(distinct_keys)))
    kept, char_idf = _vocabulary((sample @ grams).tocsr(), n, min_df, max_features)
    return TextModel(distinct_keys[kept], char_idf, word_terms, word_idf[order], ngrams)


def _vocabulary(
    counts: sp.csr_matrix, n: int, min_df: int, max_features: int
) -> tuple[np.ndarray, np.ndarray]:
    """The columns kept, ascending, and their idf."""
    width = counts.shape[1]
    df = np.bincount(counts.indices, minlength=width)[:width]
    tf = np.bincount(counts.indices, counts.data, minlength=width)[:width]
    kept = np.flatnonzero(df >= min_df)
    if len(kept) > max_features:
        kept = np.sort(kept[np.argsort(-tf[kept], kind="stable")[:max_features]])
    return kept, np.log((1 + n) / (1 + df[kept].astype(np.float64))) + 1


def column_bounds(widths: dict[str, int]) -> np.ndarray:
    """Where each field's columns start, and after the last where they end."""
    return np.concatenate([[0], np.cumsum(list(widths.values()))]).astype(np.int64)


def side_by_side(
    parts: dict[str, sp.csr_matrix | None], widths: dict[str, int], n: int
) -> sp.csr_matrix:
    """The fields' rows in their columns (`widths`, in its order; None: no entries there), sorted
    within each row: scipy multiplies unsorted rows through a workspace as wide as all columns."""
    blocks = []
    for name, width in widths.items():
        part = parts.get(name)
        if part is None:
            blocks.append(sp.csr_matrix((n, width), dtype=np.float32))
            continue
        if part.shape[1] > width:
            raise ValueError(f"{name}: {part.shape[1]} columns, more than its {width}")
        blocks.append(sp.csr_matrix((part.data, part.indices, part.indptr), shape=(n, width)))
    matrix = sp.hstack(blocks, format="csr", dtype=np.float32)
    matrix.sort_indices()
    return matrix


@dataclass
class Listings:
    """Per-listing feature arrays, row i = listing i (the same order as the item matrix)."""

    name_char: sp.csr_matrix  # TF-IDF rows, L2-normalised (all-zero for an empty name)
    text_rows: sp.csr_matrix  # TEXT_FIELDS side by side
    # What a pair compares across fields, in the columns of the field it is compared with: the
    # description's words at name_word's, its digit tokens at name_digits', and which units the
    # listing gives at all (1 for each) at unit_counts'.
    text_across: sp.csr_matrix
    # (n, len(TEXT_FIELDS)) float32: how many entries each field of text_rows has. Stored, not
    # counted per pair: counting them in the gathered rows took 0.4 s a million pairs.
    text_counts: np.ndarray
    attribute_rows: sp.csr_matrix  # ATTRIBUTE_FIELDS side by side
    has_desc: np.ndarray  # bool
    has_attrs: np.ndarray  # bool
    categories: np.ndarray  # (n, 3) int64 hash codes of levels 2/3/4, -1 = missing
    pictures: np.ndarray  # (m, d) float16, L2-normalised picture vectors of all listings
    picture_spans: np.ndarray  # (n, 2) int64: listing i owns pictures[start : start + count]

    def __len__(self) -> int:
        return self.has_desc.shape[0]

    def text_field(self, name: str) -> sp.csr_matrix:
        """One of TEXT_FIELDS alone, in columns of its own."""
        bounds = column_bounds(TEXT_FIELDS)
        k = list(TEXT_FIELDS).index(name)
        return self.text_rows[:, bounds[k] : bounds[k + 1]].tocsr()

    def save(self, folder: Path) -> None:
        save_arrays(folder, {field.name: getattr(self, field.name) for field in fields(self)})

    @classmethod
    def load(cls, folder: Path, only: Collection[str] | None = None) -> Listings:
        """Every array mapped read-only, not read: the full data's are 3 GB, which reading took 6 s
        of each `predict`, and processes that score pairs share them through the page cache.
        With `only`, the other fields are None (`prepare` reads the text fields' arrays while
        those of the others are still being made)."""
        values: dict[str, sp.csr_matrix | np.ndarray | None] = {}
        for field in fields(cls):
            if only is not None and field.name not in only:
                values[field.name] = None
            elif (folder / field.name).is_dir():
                values[field.name] = load_csr(folder / field.name)
            else:
                values[field.name] = mapped(folder / f"{field.name}.npy")
        return cls(**values)


def save_arrays(folder: Path, values: dict[str, sp.csr_matrix | np.ndarray]) -> None:
    """`Listings` fields, each in its own file: dense ones as npy, sparse ones as a folder of
    their parts' npy files (read back mapped, like the dense ones)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        if sp.issparse(value):
            save_csr(folder / name, value.tocsr())
        else:
            np.save(folder / f"{name}.npy", value, allow_pickle=False)


def unit_rows(vectors: np.ndarray, in_place: bool = False) -> np.ndarray:
    """Picture vectors L2-normalised (a zero vector stays zero), as PICTURE_DTYPE; with
    `in_place` a float32 array is scaled where it is and returned as float32 (cast when stored).

    Divided by the norm, as `tables.normalise` does the item matrix whose main pictures `prepare`
    stores: multiplied by its reciprocal instead, 0.4% of vectors came out one float16 step apart,
    and the served model's picture cosines differed from `predict`'s by up to 5e-5."""
    vectors = np.asarray(vectors, np.float32) if in_place else np.array(vectors, np.float32)
    norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))[:, None]
    np.divide(vectors, norms, out=vectors, where=norms > 0)
    return vectors if in_place else vectors.astype(PICTURE_DTYPE)


def picture_arrays(
    main: Sequence | None, extra: Sequence | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """All picture vectors of each listing (its main picture, then its first MAX_EXTRA_PICTURES
    extra ones; `unit_rows`), and each listing's span of them (start, count). The main picture is
    the one the item matrix holds: the listing's one vector, or the mean direction of several.

    `main` and `extra` hold per listing a list of vectors or None (the parquet's list-of-lists).
    """
    vectors: list[np.ndarray] = []
    counts = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for column, limit in ((main, None), (extra, MAX_EXTRA_PICTURES)):
            value = None if column is None else column[i]
            if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
                continue  # None, NaN, or no pictures
            if isinstance(value[0], (int, float, np.number)):  # one vector, not a list of them
                value = [value]
            value = [np.asarray(v, dtype=np.float32) for v in value[:limit] if v is not None]
            block = np.asarray(value)
            if limit is None and block.ndim == 2 and block.shape[0]:
                block = block.sum(axis=0, keepdims=True)  # normalised below: the mean direction
            if block.ndim == 2 and block.shape[0]:
                vectors.append(block)
                counts[i] += block.shape[0]
    spans = np.column_stack([np.cumsum(counts) - counts, counts]).astype(np.int64)
    if not vectors:
        return np.zeros((0, 1), dtype=PICTURE_DTYPE), spans
    return unit_rows(np.concatenate(vectors)), spans


def _token_kinds(words: Words) -> tuple[np.ndarray, np.ndarray, list[str | None]]:
    """Per token of `words`: its hash, whether it carries a digit, and its unit ("gb") if any."""
    digits = np.array([bool(_DIGIT.search(t)) for t in words.token_strings], dtype=bool)
    units = [
        (m.group(1) if (m := _UNIT_VALUE.fullmatch(t)) else None) if d else None
        for t, d in zip(words.token_strings, digits, strict=True)
    ]
    return words.token_hashes(), digits, units


def _unit_matrices(
    sides: list[tuple[sp.csr_matrix, np.ndarray, list[str | None]]],
) -> tuple[sp.csr_matrix, ...]:
    """Binary "128gb"-like tokens of all sides (token counts, hashes, units) together, and per
    unit how many of them a listing has (columns: the unit's hash)."""
    values, tokens, units = None, [], []
    for counts, hashes, unit_names in sides:
        has_unit = np.array([u is not None for u in unit_names], dtype=bool)
        tokens.append(hashes[has_unit])
        units.append([token_hash(u) for u in unit_names if u is not None])
        side = hashed(counts, hashes, has_unit)
        values = side if values is None else values + side
    values = values.tocsr()
    values.data[:] = 1.0
    # Every column of `values` is a unit token's hash: look its unit up among those few.
    token, unit = np.concatenate(tokens), np.concatenate(units).astype(np.int64)
    order = np.argsort(token, kind="stable")
    columns = unit[order][np.searchsorted(token[order], values.indices)]
    counts = sp.csr_matrix((values.data.copy(), columns, values.indptr.copy()), values.shape)
    counts.sum_duplicates()
    return values, counts


def listing_features(
    text_model: TextModel,
    names: Sequence[str | None] | pa.Array,
    descriptions: Sequence[str | None] | pa.Array | None = None,
    attributes: Sequence[str | None] | pa.Array | None = None,
    categories: Sequence[str | None] | pa.Array | None = None,
    main_pictures: Sequence | None = None,
    extra_pictures: Sequence | None = None,
) -> Listings:
    """Raw columns (None = the catalogue lacks the column) -> `Listings`, one row per name."""
    fields = Fields.parse(names, descriptions, attributes, categories)
    return features_of(
        text_model, fields, *picture_arrays(main_pictures, extra_pictures, len(names))
    )


def features_of(
    text_model: TextModel,
    fields: Fields,
    pictures: np.ndarray,
    picture_spans: np.ndarray,
) -> Listings:
    """`Listings` from parsed fields and picture arrays (`picture_arrays`)."""
    return Listings(
        **text_features(text_model, fields.names, fields.descriptions),
        **attribute_features(fields.attributes, fields.categories),
        pictures=pictures,
        picture_spans=picture_spans,
    )


def text_features(
    text_model: TextModel, names: Words, descriptions: Words
) -> dict[str, sp.csr_matrix | np.ndarray]:
    """The `Listings` fields of the names and descriptions."""
    return {"name_char": text_model.char_tfidf(names), **text_rows(text_model, names, descriptions)}


def text_rows(
    text_model: TextModel, names: Words, descriptions: Words
) -> dict[str, sp.csr_matrix | np.ndarray]:
    """`text_features` but the names' n-gram rows, which prepare saves first: at the real size
    they are 1.5 GB that need not be held while these are made."""
    name_counts, desc_counts = names.token_counts(), descriptions.token_counts()
    name_hashes, name_digit, name_units = _token_kinds(names)
    desc_hashes, desc_digit, desc_units = _token_kinds(descriptions)
    unit_values, unit_counts = _unit_matrices(
        [(name_counts, name_hashes, name_units), (desc_counts, desc_hashes, desc_units)]
    )
    n = names.rows.shape[0]
    rows = {
        "name_word": text_model.word_tfidf(names, name_counts),
        "desc_word": text_model.word_tfidf(descriptions, desc_counts),
        "name_tokens": hashed(name_counts, name_hashes),
        "name_digits": hashed(name_counts, name_hashes, name_digit),
        "unit_values": unit_values,
        "unit_counts": unit_counts,
    }
    across = {
        "name_word": rows["desc_word"],
        "name_digits": hashed(desc_counts, desc_hashes, desc_digit),
        "unit_counts": unit_counts.sign(),
    }
    return {
        "text_rows": side_by_side(rows, TEXT_FIELDS, n),
        "text_across": side_by_side(across, TEXT_FIELDS, n),
        "text_counts": np.column_stack([np.diff(rows[name].indptr) for name in TEXT_FIELDS]).astype(
            np.float32
        ),
        "has_desc": descriptions.has_text(),
    }


def attribute_features(
    attributes: list[sp.csr_matrix], categories: np.ndarray
) -> dict[str, sp.csr_matrix | np.ndarray]:
    """The `Listings` fields of the attributes (`fields.attribute_rows`) and categories."""
    keys = attributes[0]
    return {
        "attribute_rows": side_by_side(
            dict(zip(ATTRIBUTE_FIELDS, attributes, strict=True)), ATTRIBUTE_FIELDS, keys.shape[0]
        ),
        "has_attrs": np.diff(keys.indptr) > 0,
        "categories": categories,
    }
