"""The listings' fields parsed, before any fitted model: `Fields` is what `features_of` reads.

Names and descriptions become `Words` (`data/words.py`); attribute texts (Ozon's
{"name": ["value", ...]} JSON) become hashed rows of names, "name=values" and numeric values;
category texts the codes of levels 2-4. Each distinct text, attribute entry or word is parsed once.
Descriptions are cut at DESCRIPTION_CHARS before any of this: the first part names the product,
the rest costs time and memory.
"""

from __future__ import annotations

import json
import logging
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from matching_cli.data.words import (
    HASH_FEATURES,
    Words,
    as_strings,
    distinct,
    normalise_word,
    token_hash,
)

log = logging.getLogger(__name__)
DESCRIPTION_CHARS = 300
CATEGORY_LEVELS = ("2", "3", "4")


@dataclass
class Fields:
    names: Words
    descriptions: Words
    attributes: list[sp.csr_matrix]  # hashed names, name=values, numeric names, name=number
    categories: np.ndarray  # (n, 3) int64 codes of levels 2/3/4, -1 = missing

    @classmethod
    def parse(
        cls,
        names: Sequence[str | None] | pa.Array,
        descriptions: Sequence[str | None] | pa.Array | None = None,
        attributes: Sequence[str | None] | pa.Array | None = None,
        categories: Sequence[str | None] | pa.Array | None = None,
    ) -> Fields:
        """Raw columns (None = the catalogue lacks the column), one row per listing."""
        n = len(names)
        return cls(
            Words.of(as_strings(names, n)), *parse_others(n, descriptions, attributes, categories)
        )


def parse_others(
    n: int,
    descriptions: Sequence[str | None] | pa.Array | None,
    attributes: Sequence[str | None] | pa.Array | None,
    categories: Sequence[str | None] | pa.Array | None,
) -> tuple[Words, list[sp.csr_matrix], np.ndarray]:
    """Every field but the names (which the text model is fitted on first)."""
    return (
        Words.of(as_strings(descriptions, n), DESCRIPTION_CHARS),
        attribute_rows(as_strings(attributes, n)),
        category_codes(as_strings(categories, n)),
    )


def _parse_json(text: str | None) -> dict:
    return json_object(text) or {}


def json_object(text: str | None) -> dict | None:
    """The JSON object in `text`: {} where there is no text, None where the text is no JSON
    object."""
    if not isinstance(text, str) or not text:
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError, RecursionError):  # deep nesting breaks the parser itself
        return None
    return value if isinstance(value, dict) else None


@lru_cache(maxsize=1 << 17)
def _attribute_text(text: str) -> str:
    """Attribute names and values repeat across listings ("Бренд", "Китай"): normalise each once."""
    return normalise_word(text)


@lru_cache(maxsize=1 << 18)
def _attribute_entry(key: str, items: tuple[str, ...]) -> tuple[int, int, int, int]:
    """Hashed name, "name=values", and for a numeric value the name and "name=number" (-1, -1
    when the value is not a number)."""
    key = _attribute_text(key)
    value = "|".join(sorted(_attribute_text(x) for x in items))
    number = value.split(" ")[0].rstrip("abcdefghijklmnopqrstuvwxyz")
    if not number.replace(".", "", 1).isdigit():
        return token_hash(key), token_hash(f"{key}={value}"), -1, -1
    return (
        token_hash(key),
        token_hash(f"{key}={value}"),
        token_hash(key),
        token_hash(f"{key}={float(number)}"),
    )


# Ozon's attribute texts are {"name": ["value", ...], ...}: split at `], "` they fall into entries
# that repeat across listings ("Страна-изготовитель": ["Китай"]), each then parsed once. A text of
# another shape (scalar values, `], "` inside a value) does not split into valid entries and is
# parsed whole instead.
_ENTRY_END = r'\]\s*,\s*"'


# The usual entry, `name": ["value", ...` once its braces are cut: strings without escapes or
# control characters, JSON white space. It is read by this pattern, 3x faster than `json.loads`
# and to the same result; any other piece goes to the JSON parser.
_JSON_SPACE = r"[ \t\n\r]*"
_PLAIN_STRING = r'"[^"\\\x00-\x1f]*"'
_SIMPLE_ENTRY = re.compile(
    rf'([^"\\\x00-\x1f]*)"{_JSON_SPACE}:{_JSON_SPACE}\[{_JSON_SPACE}'
    rf"((?:{_PLAIN_STRING}(?:{_JSON_SPACE},{_JSON_SPACE}{_PLAIN_STRING})*)?){_JSON_SPACE}"
)
_STRING_INSIDE = re.compile(r'"([^"]*)"')


def _entry(piece: str) -> list[tuple[int, int, int, int]] | None:
    """The hashes of one split piece of a mapping: [] for none, None when it is no entry."""
    core = piece.strip().removeprefix("{").lstrip().removeprefix('"')
    core = core.rstrip().removesuffix("}").rstrip().removesuffix("]")
    if not core:
        return []
    simple = _SIMPLE_ENTRY.fullmatch(core)
    if simple:
        key, values = simple.groups()
        return [_attribute_entry(key, tuple(_STRING_INSIDE.findall(values)))]
    mapping = _parse_json('{"' + core + "]}")
    return _entries(mapping) if len(mapping) == 1 else None


def _entries(mapping: dict) -> list[tuple[int, int, int, int]]:
    return [
        _attribute_entry(str(key), tuple(map(str, raw if isinstance(raw, list) else [raw])))
        for key, raw in mapping.items()
    ]


def _entry_hashes(found: list[list[tuple[int, int, int, int]] | None]) -> list[sp.csr_matrix]:
    """Per kind (names, name=values, numeric names, name=number), the binary
    (len(found), HASH_FEATURES) matrix whose row i holds the hashes of the entries found[i] (None:
    none)."""
    counts = np.fromiter((len(f or ()) for f in found), np.int64, len(found))
    hashes = np.fromiter(
        (h for f in found for entry in f or () for h in entry), np.int64, 4 * int(counts.sum())
    ).reshape(-1, 4)
    owner = np.repeat(np.arange(len(found)), counts)
    matrices = []
    for kind in range(4):
        has = hashes[:, kind] >= 0
        ones = np.ones(int(has.sum()), np.float32)
        matrix = sp.csr_matrix(
            (ones, (owner[has], hashes[has, kind])), shape=(len(found), HASH_FEATURES)
        )
        matrix.data[:] = 1.0  # one hash twice in a row (two names that collide) counts once
        matrices.append(matrix)
    return matrices


def attribute_rows(column: pa.Array, source: str | None = None) -> list[sp.csr_matrix]:
    """The four hashed attribute matrices: names, name=values, numeric names, name=number. Texts
    that are no JSON object give empty rows, and a warning that counts them (naming `source`)."""
    _warn_cut_short(column, source)
    split = pc.split_pattern_regex(pc.fill_null(column, ""), _ENTRY_END)
    lengths = pc.list_value_length(split).to_numpy(zero_copy_only=False).astype(np.int64)
    codes, pieces = distinct(pc.list_flatten(split))
    rows = sp.csr_matrix(
        (np.ones(len(codes), np.float32), codes, np.concatenate([[0], np.cumsum(lengths)])),
        shape=(len(lengths), len(pieces)),
    )
    entries = [_entry(piece) for piece in pieces]
    whole = (rows @ np.array([e is None for e in entries], np.float32)) > 0
    redo = np.flatnonzero(whole)
    per_piece = _entry_hashes(entries)
    if len(redo):
        texts = [column[int(i)].as_py() for i in redo]
        mappings = [json_object(text) for text in texts]
        _warn_unreadable(source, [t for t, m in zip(texts, mappings, strict=True) if m is None])
        redone = _entry_hashes([_entries(mapping or {}) for mapping in mappings])
        keep = sp.diags((~whole).astype(np.float32))
        # Puts row k of the texts parsed whole in row redo[k].
        place = sp.csr_matrix(
            (np.ones(len(redo), np.float32), (redo, np.arange(len(redo)))),
            shape=(len(lengths), len(redo)),
        )
    matrices = []
    for kind in range(4):
        matrix = rows @ per_piece[kind]
        if len(redo):
            matrix = keep @ matrix + place @ redone[kind]
        matrix = matrix.tocsr()
        matrix.data[:] = 1.0
        # A product's columns come unsorted, and scipy multiplies unsorted rows through a
        # workspace as wide as the 4M hashed columns: the pairs' attribute dots took 7x as long.
        matrix.sort_indices()
        matrices.append(matrix)
    return matrices


def _warn_cut_short(column: pa.Array, source: str | None) -> None:
    """Values that begin a JSON object and do not end it (cut at a length limit on export?) are
    read as far as they go, their last entry perhaps short of values: told, with a count. Only the
    few values that do not end in "}" are looked at closer."""
    ends = pc.fill_null(pc.ends_with(column, "}"), True)
    if pc.all(ends).as_py():
        return
    text = pc.utf8_trim_whitespace(column.filter(pc.invert(ends)))
    cut = pc.and_(pc.starts_with(text, "{"), pc.invert(pc.ends_with(text, "}")))
    if pc.any(cut).as_py():
        log.warning(
            "%s%s 'characteristic_attributes_mapping' values end before their JSON object does "
            "(e.g. %r); they are read as far as they go",
            f"{source}: " if source else "",
            f"{pc.sum(cut).as_py():,}",
            text.filter(cut)[0].as_py()[-80:],
        )


def _warn_unreadable(source: str | None, texts: list[str]) -> None:
    if texts:
        log.warning(
            "%s%d 'characteristic_attributes_mapping' values are not JSON objects (e.g. %r); "
            "those listings count as having no attributes",
            f"{source}: " if source else "",
            len(texts),
            texts[0][:80],
        )


def category_codes(column: pa.Array) -> np.ndarray:
    """(n, 3) codes of category levels 2, 3, 4 (crc32 of the name, stable anywhere), -1 = missing;
    each distinct text is parsed once."""
    codes, texts = distinct(column)
    table = np.full((len(texts) + 1, len(CATEGORY_LEVELS)), -1, dtype=np.int64)
    for row, text in enumerate(texts):
        mapping = _parse_json(text)
        for column, level in enumerate(CATEGORY_LEVELS):
            name = mapping.get(level)
            if name:
                table[row, column] = zlib.crc32(str(name).strip().lower().encode())
    return table[np.where(codes < 0, len(texts), codes)]
