"""Text columns as their distinct words: the Python text work done once per distinct word.

Millions of listings repeat a few hundred thousand words ("смартфон", "128гб", "<li>Бренд:").
`Words.of` does in Arrow what reaches across spaces (HTML tags, the common entities, lower case, a
unit written after a space), splits at white space, and gives each distinct word to `normalise`
and `tokens` (in Python, once; plain words need neither); a row's tokens are then a sparse
product, rows x words x tokens. The result equals `tokens(normalise(text))` row by row
(`tests/test_features.py` checks), but for what the Arrow pass cannot see: a rare entity that
stands for a space, or a unit after a space written in full-width letters.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from matching_cli.data.arrays import load_csr, save_csr
from matching_cli.data.text import LOOKALIKE_SET, LOOKALIKES, UNITS, normalise, tokens

HASH_FEATURES = 1 << 22
_ENTITIES = {
    "&nbsp;": " ", "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'",
    "&apos;": "'",
}  # fmt: skip
# A number, white space, then a unit ("8 гб") becomes one word ("8гб") before the split; the unit
# must end there (not "8 гбайт..."), as in `text.normalise`. RE2's \s is [\t\n\f\r ]: the vertical
# tab is added, and the other white space is made a space first (`_spaced`).
_UNIT_AFTER_SPACE = (
    r"(\d)[\s\v]+("
    + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True))
    + r")([^a-zа-я0-9]|$)"
)


# Words that normalise to themselves and are one token: Latin letters then digits or either
# alone ("kh5319", the commonest model code; no unit can follow the digits), or Russian letters
# only with at least one that has no Latin look-alike (a word of look-alikes alone is mapped).
_PLAIN = "^(?:[a-z]+[0-9]*|[0-9]+|[а-я]*[бгджзийлпфцчшщъыьэюя][а-я]*)$"


# Code-like words ("ab8843", "кт-1019", "264."): letters, then digits, a hyphen between or not,
# and one punctuation mark after them or none.
# Synthetic and real catalogues have hundreds of thousands of distinct ones; `_code_word` gives
# what `normalise` and `tokens` give them, without the regexes (5x faster; tests check it).
_CODE = "^(?:[a-zа-яё]*[0-9]+|[a-zа-яё]+-[0-9]+)[.,;:!?]?$"
_CYRILLIC_LETTERS = frozenset("абвгдежзийклмнопрстуфхцчшщъыьэюя")
_DIGITS = "0123456789"


def _code_word(word: str) -> tuple[str, list[str]]:
    """`normalise(word)` and its `tokens`, for a word matching `_CODE`: look-alike letters become
    Latin in an atom that mixes in Latin letters or digits, or that has only look-alikes."""
    word = word.replace("ё", "е")
    mark = "" if word[-1] in _DIGITS else word[-1]  # kept in the text, in no token
    code = word[: len(word) - len(mark)]
    letters, hyphen, digits = code.partition("-")
    if not hyphen:  # one atom; it has digits, so Cyrillic in it is a code's
        cyrillic = not _CYRILLIC_LETTERS.isdisjoint(code)
        code = code.translate(LOOKALIKES) if cyrillic else code
        return code + mark, [code]
    if not _CYRILLIC_LETTERS.isdisjoint(letters) and (
        any("a" <= c <= "z" for c in letters) or set(letters) <= LOOKALIKE_SET
    ):
        letters = letters.translate(LOOKALIKES)
    return f"{letters}-{digits}{mark}", [letters + digits, letters, digits]


_PLAIN_WORD, _CODE_WORD = re.compile(_PLAIN), re.compile(_CODE)


def normalise_word(text: str) -> str:
    """`normalise(text)`, without its regexes where the text is one plain or code-like word
    (most attribute values: "черный", "KH5319"): 4x faster over the demo data's 343k distinct
    attribute texts, all of them the same."""
    word = text.lower()
    if _PLAIN_WORD.fullmatch(word):
        return word
    if _CODE_WORD.fullmatch(word):
        return _code_word(word)[0]
    return normalise(text)


def as_strings(values: Sequence | pa.Array | pa.ChunkedArray | None, n: int) -> pa.Array:
    """A text column as an Arrow string array of length n; None (no such column), NaN and
    non-strings are null."""
    if values is None:
        return pa.nulls(n, pa.string())
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    if isinstance(values, pa.Array):
        return values
    return pa.array([v if isinstance(v, str) else None for v in values], pa.string())


def prenormalise(column: pa.Array, max_chars: int | None = None) -> pa.Array:
    """The part of `text.normalise` that crosses spaces, over a whole column in Arrow (NFKC and
    the rest are done per word)."""
    text = pc.fill_null(column, "") if column.null_count else column  # no copy where none is
    # Cut only when some text is longer: counting is 0.1 s over the real size's descriptions, cutting
    # them all 0.4-1.2 s (none of the demo data's is longer).
    if max_chars is not None and (pc.max(pc.utf8_length(text)).as_py() or 0) > max_chars:
        text = pc.utf8_slice_codeunits(text, 0, max_chars)
    text = _in_rows_with(text, "&", _replace_entities)
    text = _spaced(pc.utf8_lower(pc.replace_substring_regex(text, r"<[^>]*>", " ")))
    return pc.replace_substring_regex(text, _UNIT_AFTER_SPACE, r"\1\2\3")


def _replace_entities(text: pa.Array) -> pa.Array:
    for entity, char in _ENTITIES.items():
        text = pc.replace_substring(text, entity, char)
    return text


def _in_rows_with(text: pa.Array, pattern: str, change: Callable[[pa.Array], pa.Array]) -> pa.Array:
    """`change` done in the texts that `pattern` matches alone (few do; the rest are not copied).
    The regex kernel finds even one character 6x faster than `match_substring` (0.11 s against
    0.68 s over the real size's descriptions)."""
    rows = pc.match_substring_regex(text, pattern)
    if not pc.any(rows).as_py():
        return text
    return pc.replace_with_mask(text, rows, change(text.filter(rows)))


# The white space that Python (and `utf8_split_whitespace`) knows and `ascii_split_whitespace`
# does not: made a space first, the ASCII split gives the same words 2.4x faster (0.8 s against
# 1.9 s over the real size's descriptions).
_OTHER_SPACE = "[\x1c-\x1f\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]"


def _spaced(text: pa.Array) -> pa.Array:
    """The white space that `ascii_split_whitespace` does not know made a space: then that splits
    as `utf8_split_whitespace` does."""
    return _in_rows_with(
        text, _OTHER_SPACE, lambda some: pc.replace_substring_regex(some, _OTHER_SPACE, " ")
    )


def distinct(column: pa.Array) -> tuple[np.ndarray, list]:
    """(code of each row's value, -1 for null; the distinct values as Python objects)."""
    codes, dictionary = distinct_array(column)
    return codes, dictionary.to_pylist()


def distinct_array(column: pa.Array) -> tuple[np.ndarray, pa.Array]:
    """`distinct`, the distinct values kept as an Arrow array. A dictionary column (chunks with
    dictionaries of their own, as read from a file) is taken as it is, its dictionaries merged."""
    if isinstance(column, pa.ChunkedArray):  # combining merges the chunks' dictionaries
        column = column.combine_chunks()
    encoded = pc.dictionary_encode(column)  # a dictionary array is returned as it is
    codes = pc.fill_null(encoded.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64)
    return codes, encoded.dictionary


def token_hash(token: str) -> int:
    """A token's column among HASH_FEATURES: crc32, the same in every process and version."""
    return zlib.crc32(token.encode()) % HASH_FEATURES


@dataclass
class Words:
    """A text column as `rows` (n x distinct words, counts) and, per distinct word, its normalised
    form and its tokens (`word_tokens`, distinct words x `token_strings`, counts)."""

    rows: sp.csr_matrix
    normalised: list[str]
    word_tokens: sp.csr_matrix
    token_strings: list[str]

    @classmethod
    def of(cls, column: pa.Array, max_chars: int | None = None) -> Words:
        split = pc.ascii_split_whitespace(prenormalise(column, max_chars))  # spaced there
        lengths = pc.list_value_length(split).to_numpy(zero_copy_only=False).astype(np.int64)
        codes, dictionary = distinct_array(pc.list_flatten(split))
        # Most distinct words are plain Latin or Russian words that `normalise` leaves as they
        # are and `tokens` keeps whole; the rest (codes, numbers, look-alikes) go through both.
        plain = pc.match_substring_regex(dictionary, _PLAIN).to_numpy(zero_copy_only=False)
        code = pc.match_substring_regex(dictionary, _CODE).to_numpy(zero_copy_only=False)
        words = dictionary.to_pylist()
        indptr = np.concatenate([[0], np.cumsum(lengths)])
        rows = sp.csr_matrix(
            (np.ones(len(codes), np.float32), codes, indptr), shape=(len(lengths), len(words))
        )
        rows.sum_duplicates()
        normalised: list[str] = []
        found: list[str] = []  # each word's tokens, one word after another
        sizes: list[int] = []
        for word, is_plain, is_code in zip(words, plain, code, strict=True):
            if is_plain:
                text, its = word, [word]
            elif is_code:
                text, its = _code_word(word)
            else:
                text = normalise(word)
                its = tokens(text)
            normalised.append(text)
            found += its
            sizes.append(len(its))
        # Numbered in the order they first come, as a dict would number them, in one Arrow pass.
        token_of, token_strings = distinct(pa.array(found, pa.string()))
        word_tokens = sp.csr_matrix(
            (np.ones(len(found), np.float32), token_of, np.concatenate([[0], np.cumsum(sizes)])),
            shape=(len(words), len(token_strings)),
        )
        word_tokens.sum_duplicates()
        return cls(rows, normalised, word_tokens, token_strings)

    def token_counts(self) -> sp.csr_matrix:
        """(n, len(token_strings)): how often each token occurs in each row."""
        return (self.rows @ self.word_tokens).tocsr()

    def has_text(self) -> np.ndarray:
        """Rows with at least one non-empty normalised word."""
        nonempty = np.array([bool(text) for text in self.normalised], dtype=np.float32)
        return (self.rows @ nonempty) > 0

    def token_hashes(self) -> np.ndarray:
        return np.fromiter(map(token_hash, self.token_strings), np.int64, len(self.token_strings))

    def save(self, folder: Path) -> None:
        """Into `folder`: the two matrices as folders of their parts, the strings as JSON."""
        for name in ("rows", "word_tokens"):
            save_csr(folder / name, getattr(self, name))
        strings = {"normalised": self.normalised, "token_strings": self.token_strings}
        (folder / "strings.json").write_text(json.dumps(strings, ensure_ascii=False))

    @classmethod
    def load(cls, folder: Path) -> Words:
        """What `save` wrote, the matrices mapped, not read."""
        strings = json.loads((folder / "strings.json").read_text())
        matrices = {name: load_csr(folder / name) for name in ("rows", "word_tokens")}
        return cls(**matrices, **strings)


def remap_columns(
    matrix: sp.csr_matrix, column_of: np.ndarray, width: int, binary: bool = False
) -> sp.csr_matrix:
    """`matrix` with column j moved to column_of[j] (dropped where it is -1), values that meet in
    one column summed (or 1 when `binary`)."""
    columns = column_of[matrix.indices]
    keep = columns >= 0
    if keep.all():  # copies: summing the duplicates below sorts and shrinks them in place
        data, indptr = matrix.data.copy(), matrix.indptr.copy()
    else:
        data, columns = matrix.data[keep], columns[keep]
        # Where each row starts among the entries kept: 4x faster than a running sum of `keep`.
        indptr = np.searchsorted(np.flatnonzero(keep), matrix.indptr)
    out = sp.csr_matrix((data, columns, indptr), shape=(matrix.shape[0], width))
    out.sum_duplicates()
    if binary:
        out.data[:] = 1.0
    return out.astype(np.float32, copy=False)


def hashed(matrix: sp.csr_matrix, hashes: np.ndarray, keep: np.ndarray | None = None):
    """Binary (n, HASH_FEATURES) rows of the columns of `matrix` (tokens) that `keep` selects."""
    column_of = hashes if keep is None else np.where(keep, hashes, -1)
    return remap_columns(matrix, column_of, HASH_FEATURES, binary=True)
