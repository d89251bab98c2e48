"""Text normalisation and tokens of listing names and descriptions, Russian and Latin alike.

The goal is that two spellings of the same product read the same: "Ноутбук ASUS X515EA 8 ГБ" and
"asus x515ea, 8gb" share the tokens "asus", "x515ea" and "8gb". Model codes typed with Cyrillic
look-alike letters ("Х515ЕА") are mapped to Latin, while ordinary Russian words keep their letters.
"""

from __future__ import annotations

import html
import re
import unicodedata

_TAG = re.compile(r"<[^>]*>")
_SPACE = re.compile(r"\s+")
# Cyrillic letters that look like Latin ones (lower case; text is lower-cased first).
LOOKALIKES = str.maketrans("авсенікмортух", "abcehikmoptyx")
LOOKALIKE_SET = frozenset("авсенікмортух")
_CYRILLIC = re.compile(r"[а-яё]")
_LATIN_OR_DIGIT = re.compile(r"[a-z0-9]")
# Units written after a number; the left side is every spelling, the right the one kept.
UNITS = {
    "gb": "gb", "гб": "gb", "gbyte": "gb", "гигабайт": "gb",
    "tb": "tb", "тб": "tb", "mb": "mb", "мб": "mb",
    "ghz": "ghz", "ггц": "ghz", "mhz": "mhz", "мгц": "mhz", "hz": "hz", "гц": "hz",
    "mah": "mah", "мач": "mah", "mm": "mm", "мм": "mm", "cm": "cm", "см": "cm",
    "m": "m", "м": "m", "kg": "kg", "кг": "kg", "g": "g", "г": "g", "гр": "g",
    "ml": "ml", "мл": "ml", "l": "l", "л": "l", "w": "w", "вт": "w", "v": "v", "в": "v",
    "in": "in", "inch": "in", "дюйм": "in", "дюймов": "in", "дюйма": "in", '"': "in",
    "шт": "pcs", "pcs": "pcs", "mp": "mp", "мп": "mp", "rpm": "rpm", "кгц": "khz", "khz": "khz",
}  # fmt: skip
_UNIT = re.compile(
    r"(\d+(?:\.\d+)?)\s*("
    + "|".join(sorted(map(re.escape, UNITS), key=len, reverse=True))
    + r")(?![a-zа-я0-9])"
)
_DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d)")
_WORD = r"(?:\d+\.\d+|[^\W_])+"
_TOKEN = re.compile(_WORD + r"(?:[-_]" + _WORD + ")*")
_JOINER = re.compile(r"[-_]")
# Only atoms that mix Cyrillic with Latin/digits, or are made of look-alikes alone, need a look:
# matching just those keeps the Python callback off ordinary Russian and Latin words.
_MIXED_ATOM = re.compile(
    r"[^\W_]*(?:[а-я][^\W_]*[a-z0-9]|[a-z0-9][^\W_]*[а-я])[^\W_]*"
    r"|(?<![^\W_])[авсенікмортух]+(?![^\W_])"
)


def _latin_lookalikes(token: str) -> str:
    """Map Cyrillic look-alikes to Latin in a code-like token, keep a Russian word as it is.

    A token is code-like when it mixes in Latin letters or digits, or is made only of look-alike
    letters (then both spellings of "АВС" meet; a Russian word of only such letters is mapped the
    same way on both sides of a pair, so nothing is lost).
    """
    if not _CYRILLIC.search(token):
        return token
    if _LATIN_OR_DIGIT.search(token) or set(token) <= LOOKALIKE_SET:
        return token.translate(LOOKALIKES)
    return token


def normalise(text: str | None) -> str:
    """HTML stripped, NFKC, lower case, ё -> е, units glued to numbers, codes in Latin letters."""
    if not isinstance(text, str) or not text:  # None, and pandas' NaN for a missing value
        return ""
    text = _TAG.sub(" ", html.unescape(text))
    text = unicodedata.normalize("NFKC", text).lower().replace("ё", "е")
    text = _DECIMAL_COMMA.sub(".", text)
    text = _UNIT.sub(lambda m: m.group(1) + UNITS[m.group(2)], text)
    text = _MIXED_ATOM.sub(lambda m: _latin_lookalikes(m.group()), text)
    return _SPACE.sub(" ", text).strip()


def tokens(normalised: str) -> list[str]:
    """Word tokens of a `normalise`d text; "2.5gb" and "x515ea" stay whole.

    A hyphenated code gives the joined form and its parts ("x515ea-bq" -> "x515eabq", "x515ea",
    "bq"), as shops write the same code with and without the hyphen or its suffix.
    """
    words = []
    for compound in _TOKEN.findall(normalised):
        parts = _JOINER.split(compound)
        words.append("".join(parts))
        if len(parts) > 1:
            words.extend(parts)
    return words
