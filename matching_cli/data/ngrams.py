"""Character n-grams of many words at once, as 64-bit keys, in numpy.

The n-grams are scikit-learn's `char_wb` ones (each white-space separated part padded with a space
on both sides, every window of n characters inside it for each n asked, a part shorter than n
giving none of that n, so a one-letter part is one 3-gram), but each is a polynomial hash of its
code points rather than a string: computing them for a million distinct words is a few vectorised
passes, where building the strings in Python took longer than the rest of `prepare`. Two
different n-grams share a key with probability about 2^-64 per pair: never, in practice.
"""

from __future__ import annotations

import re

import numpy as np

# Trigrams, record linkage's classic string similarity (pg_trgm, Magellan's 3-gram Jaccard). 3 to 5
# characters cost 2.5x the entries: at the real size 189M instead of 76M, 11.6 s instead of 5.1 s
# of `prepare` and 4.9 s instead of 3.4 s of every million pairs' features, for the same quality
# (test AP over four seeds: WDC 0.871 with trigrams, 0.874 with 3-5; the 20k demo 0.932 both).
# A text model records its sizes: those saved before kept 3-5 (`TextModel.ngrams`).
NGRAMS = (3, 3)
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so every power is odd: no code point is lost


def ngram_keys(texts: list[str], sizes: tuple[int, int] = NGRAMS) -> tuple[np.ndarray, np.ndarray]:
    """(index into `texts`, key) of every n-gram of `sizes` (3 and the largest) characters of every
    text; a text may hold several words. scikit-learn counts a part shorter than its smallest n
    once, as it is: from 3 on, that is the 3-gram of a one-letter part, which this gives too."""
    if sizes[0] != 3 or sizes[1] < 3:
        raise ValueError(f"n-gram sizes {sizes}: from 3 characters to 3 or more")
    codes, owner = _code_points(texts)
    # A window holding a separator (code 0 between parts, 1 between texts) crosses parts.
    separators_before = np.concatenate([[0], np.cumsum(codes <= 1)])  # in codes[:i]
    owners, keys = [], []
    key = np.zeros(len(codes), np.uint64)
    with np.errstate(over="ignore"):  # the hash wraps around 2^64 on purpose
        for n in range(1, sizes[1] + 1):
            windows = max(len(codes) - n + 1, 0)
            shifted = np.zeros(len(codes), np.uint64)
            shifted[:windows] = codes[n - 1 : n - 1 + windows]
            key = key * _BASE + shifted  # now key[i] hashes codes[i : i + n] (Horner)
            if n < sizes[0]:
                continue
            starts = np.arange(windows)
            starts = starts[separators_before[starts + n] == separators_before[starts]]
            owners.append(owner[starts])
            keys.append(key[starts] ^ np.uint64(n))
    return np.concatenate(owners), np.concatenate(keys)


# What `str.split()` would do more than split at single spaces: a space at a text's start or end,
# two in a row, other white space. Normalised names have none of it.
_UNEVEN_SPACE = re.compile(r"(?:^|\x01) | (?:$|\x01)|  |[^\S ]")


def _code_points(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The texts' parts (split at white space), each padded with a space, in one buffer of uint64
    code points with a 0 between the parts of a text and a 1 between texts; and at each position
    the index of its text.

    The texts are joined and their spaces replaced in a few string operations, not split one by
    one in Python: `ngram_keys` of the full data's 681k distinct name words took 1.5 s this way,
    3.9 s before (the same keys in the same order). A text with white space other than single
    spaces between words is split one by one; the code points 0 and 1, which no name has, are
    dropped from the texts."""
    joined = "\x01".join(texts)
    if "\x00" in joined or joined.count("\x01") > max(len(texts) - 1, 0):
        texts = [text.replace("\x00", "").replace("\x01", "") for text in texts]
        joined = "\x01".join(texts)
    if _UNEVEN_SPACE.search(joined):
        joined = "\x01".join(" ".join(text.split()) for text in texts)
    padded = " " + joined.replace(" ", " \x00 ").replace("\x01", " \x01 ") + " "
    codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    return codes, np.cumsum(codes == 1)
