"""Per-listing features from the listings' own fields, computed once and stored as arrays.

`fit_text_model` learns the TF-IDF vocabularies from all listings' names; `listing_features` turns
the raw columns into sparse rows and small arrays (`Listings`); `matching_cli.data.pairs` compares
two rows of them. Everything is saved with `np.save` / `scipy.sparse.save_npz` without pickle, and
the fitted TF-IDF as JSON terms plus an idf array, so a served model computes the same features for
listings it has never seen.

Every input may be absent (a whole column, or a value): absent text is "", absent attributes an
empty dict, absent categories code -1, absent pictures zero vectors; the pair step turns them into
neutral values plus a "missing" flag.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, fields
from functools import lru_cache
from pathlib import Path

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher
from sklearn.feature_extraction.text import TfidfVectorizer

from matching_cli.data.text import UNITS, digit_tokens, normalise, normalise_all, tokens

# Descriptions are cut before normalising: the first part names the product, the rest costs time
# and memory (each kept character adds up to three char n-grams to the listing's TF-IDF row: at
# 1,000 characters 2.25M listings would need tens of GB; demo descriptions are under 240).
DESCRIPTION_CHARS = 300
HASH_FEATURES = 1 << 22
CATEGORY_LEVELS = ("2", "3", "4")
_UNIT_SUFFIXES = tuple(sorted(set(UNITS.values()), key=len, reverse=True))


def _char_vectorizer(**kwargs) -> TfidfVectorizer:
    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True, dtype=np.float32, **kwargs
    )


def _given_tokens(words: list[str]) -> list[str]:
    return words


def _word_vectorizer(**kwargs) -> TfidfVectorizer:
    """Word TF-IDF over token lists made by `tokens` (made once, also used for the hashed sets)."""
    return TfidfVectorizer(
        analyzer=_given_tokens, sublinear_tf=True, lowercase=False, dtype=np.float32, **kwargs
    )


@dataclass
class TextModel:
    """TF-IDF of names, by character n-grams (3-5, within words) and by word tokens."""

    char: TfidfVectorizer
    word: TfidfVectorizer

    def to_arrays(self) -> tuple[dict[str, np.ndarray], dict]:
        """The idf weights as arrays and the vocabularies as JSON-ready lists (index order)."""
        arrays = {"char_idf": self.char.idf_.astype(np.float64), "word_idf": self.word.idf_}
        meta = {
            "char_terms": _terms(self.char.vocabulary_),
            "word_terms": _terms(self.word.vocabulary_),
        }
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], meta: dict) -> TextModel:
        char = _char_vectorizer(vocabulary={t: i for i, t in enumerate(meta["char_terms"])})
        word = _word_vectorizer(vocabulary={t: i for i, t in enumerate(meta["word_terms"])})
        char.idf_ = np.asarray(arrays["char_idf"], dtype=np.float64)
        word.idf_ = np.asarray(arrays["word_idf"], dtype=np.float64)
        return cls(char=char, word=word)


def _terms(vocabulary: dict[str, int]) -> list[str]:
    terms = [""] * len(vocabulary)
    for term, index in vocabulary.items():
        terms[index] = term
    return terms


def fit_text_model(
    normalised_names: Sequence[str], max_features: int = 1 << 18, max_names: int = 300_000
) -> TextModel:
    """Fit both vocabularies on the (normalised) names of the listings.

    Above `max_names` an evenly spaced sample is used: the idf of any term that matters is stable
    long before millions of names, and fitting on all of them would dominate prepare's time.
    """
    names = [name for name in normalised_names if name] or ["empty"]
    if len(names) > max_names:
        names = [names[i] for i in np.linspace(0, len(names) - 1, max_names).astype(np.int64)]
    min_df = 2 if len(names) >= 1000 else 1
    char = _char_vectorizer(min_df=min_df, max_features=max_features).fit(names)
    word = _word_vectorizer(min_df=min_df, max_features=max_features)
    word.fit([tokens(name) for name in names])
    return TextModel(char=char, word=word)


@dataclass
class Listings:
    """Per-listing feature arrays, row i = listing i (the same order as the item matrix)."""

    name_char: sp.csr_matrix  # TF-IDF rows, L2-normalised (all-zero for an empty name)
    name_word: sp.csr_matrix
    desc_char: sp.csr_matrix
    desc_word: sp.csr_matrix
    name_tokens: sp.csr_matrix  # binary, hashed word tokens of the name
    name_digits: sp.csr_matrix  # binary, hashed digit-bearing tokens of the name
    desc_digits: sp.csr_matrix  # binary, hashed digit-bearing tokens of the description
    unit_values: sp.csr_matrix  # binary, "128gb"-like tokens of name and description
    unit_counts: sp.csr_matrix  # per unit ("gb"), how many values the listing gives for it
    attr_keys: sp.csr_matrix  # binary, hashed attribute names
    attr_values: sp.csr_matrix  # binary, hashed "name=values"
    attr_numeric_keys: sp.csr_matrix  # binary, attribute names whose value is a number
    attr_numeric_values: sp.csr_matrix  # binary, "name=number" of those
    has_desc: np.ndarray  # bool
    has_attrs: np.ndarray  # bool
    categories: np.ndarray  # (n, 3) int64 hash codes of levels 2/3/4, -1 = missing
    pictures: np.ndarray  # (m, d) float32, L2-normalised picture vectors of all listings
    picture_offsets: np.ndarray  # (n + 1,) int64: listing i owns pictures[off[i]:off[i+1]]

    def __len__(self) -> int:
        return self.has_desc.shape[0]

    @classmethod
    def stack(cls, parts: list[Listings]) -> Listings:
        """Consecutive row blocks as one; every part's pictures must be absent (filled later)."""
        values = {}
        for field in fields(cls):
            if field.name in ("pictures", "picture_offsets"):
                continue
            column = [getattr(part, field.name) for part in parts]
            values[field.name] = (
                sp.vstack(column, format="csr")
                if sp.issparse(column[0])
                else np.concatenate(column)
            )
        n = sum(len(part) for part in parts)
        return cls(
            **values,
            pictures=np.zeros((0, 1), np.float32),
            picture_offsets=np.zeros(n + 1, np.int64),
        )

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        for field in fields(self):
            value = getattr(self, field.name)
            if sp.issparse(value):
                sp.save_npz(folder / f"{field.name}.npz", value.tocsr())
            else:
                np.save(folder / f"{field.name}.npy", value, allow_pickle=False)

    @classmethod
    def load(cls, folder: Path) -> Listings:
        values = {}
        for field in fields(cls):
            npz = folder / f"{field.name}.npz"
            if npz.exists():
                values[field.name] = sp.load_npz(npz).tocsr()
            else:
                values[field.name] = np.load(folder / f"{field.name}.npy", allow_pickle=False)
        return cls(**values)


def _hashed(rows: list[list[str]], binary: bool = True) -> sp.csr_matrix:
    hasher = FeatureHasher(HASH_FEATURES, input_type="string", alternate_sign=False)
    matrix = hasher.transform(rows).tocsr()
    if binary:
        matrix.data[:] = 1.0
    return matrix.astype(np.float32)


def _unit_of(token: str) -> str | None:
    for unit in _UNIT_SUFFIXES:
        if token.endswith(unit) and token[: -len(unit)].replace(".", "", 1).isdigit():
            return unit
    return None


def _parse_json(text: str | None) -> dict:
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):  # deep nesting breaks the parser itself
        return {}
    return value if isinstance(value, dict) else {}


@lru_cache(maxsize=1 << 17)
def _attribute_text(text: str) -> str:
    """Attribute names and values repeat across listings ("Бренд", "Китай"): normalise each once."""
    return normalise(text)


def _attribute_rows(attributes: Sequence[str | None]) -> tuple[list[list[str]], ...]:
    keys, values, numeric_keys, numeric_values = [], [], [], []
    for text in attributes:
        mapping = _parse_json(text)
        k, v, nk, nv = [], [], [], []
        for key, raw in mapping.items():
            key = _attribute_text(str(key))
            items = raw if isinstance(raw, list) else [raw]
            value = "|".join(sorted(_attribute_text(str(x)) for x in items))
            k.append(key)
            v.append(f"{key}={value}")
            number = value.split(" ")[0].rstrip("abcdefghijklmnopqrstuvwxyz")
            if number.replace(".", "", 1).isdigit():
                nk.append(key)
                nv.append(f"{key}={float(number)}")
        keys.append(k), values.append(v), numeric_keys.append(nk), numeric_values.append(nv)
    return keys, values, numeric_keys, numeric_values


def category_codes(categories: Sequence[str | None]) -> np.ndarray:
    """(n, 3) codes of category levels 2, 3, 4 (crc32 of the name, stable anywhere), -1 = missing."""
    codes = np.full((len(categories), len(CATEGORY_LEVELS)), -1, dtype=np.int64)
    for row, text in enumerate(categories):
        mapping = _parse_json(text)
        for column, level in enumerate(CATEGORY_LEVELS):
            name = mapping.get(level)
            if name:
                codes[row, column] = zlib.crc32(str(name).strip().lower().encode())
    return codes


def picture_arrays(
    main: Sequence | None, extra: Sequence | None, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """All picture vectors of each listing (main first, then extras), L2-normalised, with offsets.

    `main` and `extra` hold per listing a list of vectors or None (the parquet's list-of-lists).
    """
    vectors: list[np.ndarray] = []
    counts = np.zeros(n, dtype=np.int64)
    for i in range(n):
        for column in (main, extra):
            value = None if column is None else column[i]
            if not isinstance(value, (list, tuple, np.ndarray)) or len(value) == 0:
                continue  # None, NaN, or no pictures
            block = np.asarray([np.asarray(v, dtype=np.float32) for v in value if v is not None])
            if block.ndim == 2 and block.shape[0]:
                vectors.append(block)
                counts[i] += block.shape[0]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    if not vectors:
        return np.zeros((0, 1), dtype=np.float32), offsets
    stacked = np.concatenate(vectors).astype(np.float32)
    norms = np.linalg.norm(stacked, axis=1, keepdims=True)
    return stacked / np.where(norms > 0, norms, 1.0), offsets


def listing_features(
    text_model: TextModel,
    names: Sequence[str | None],
    descriptions: Sequence[str | None] | None = None,
    attributes: Sequence[str | None] | None = None,
    categories: Sequence[str | None] | None = None,
    main_pictures: Sequence | None = None,
    extra_pictures: Sequence | None = None,
    normalised_names: list[str] | None = None,
) -> Listings:
    """Raw columns (None = the catalogue lacks the column) -> `Listings`, one row per name.
    `normalised_names`: `normalise_all(names)` when the caller has it already (prepare does)."""
    n = len(names)
    name_text = normalised_names if normalised_names is not None else normalise_all(names)
    desc_text = normalise_all(descriptions, DESCRIPTION_CHARS) if descriptions is not None else []
    desc_text = desc_text or [""] * n
    name_words = [tokens(text) for text in name_text]
    desc_words = [tokens(text) for text in desc_text]
    name_digit_words = [digit_tokens(words) for words in name_words]
    desc_digit_words = [digit_tokens(words) for words in desc_words]
    unit_values, unit_names = [], []
    for a, b in zip(name_digit_words, desc_digit_words, strict=True):
        values = sorted({word for word in a + b if _unit_of(word)})
        unit_values.append(values)
        unit_names.append([_unit_of(word) for word in values])
    keys, values, numeric_keys, numeric_values = _attribute_rows(attributes or [None] * n)
    pictures, offsets = picture_arrays(main_pictures, extra_pictures, n)
    return Listings(
        name_char=text_model.char.transform(name_text).tocsr(),
        name_word=text_model.word.transform(name_words).tocsr(),
        desc_char=text_model.char.transform(desc_text).tocsr(),
        desc_word=text_model.word.transform(desc_words).tocsr(),
        name_tokens=_hashed(name_words),
        name_digits=_hashed(name_digit_words),
        desc_digits=_hashed(desc_digit_words),
        unit_values=_hashed(unit_values),
        unit_counts=_hashed(unit_names, binary=False),
        attr_keys=_hashed(keys),
        attr_values=_hashed(values),
        attr_numeric_keys=_hashed(numeric_keys),
        attr_numeric_values=_hashed(numeric_values),
        has_desc=np.array([bool(text) for text in desc_text]),
        has_attrs=np.array([bool(k) for k in keys]),
        categories=category_codes(categories or [None] * n),
        pictures=pictures,
        picture_offsets=offsets,
    )
