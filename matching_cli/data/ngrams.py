"""Character n-grams of many words at once, as 64-bit keys, in numpy.

The n-grams are scikit-learn's `char_wb` ones (each white-space separated part padded with a space
on both sides, every window of 3 to 5 characters inside it, a part shorter than n giving none of
that n, so a one-letter part is one 3-gram), but each is a polynomial hash of its code points
rather than a string: computing them for a million distinct words is a few vectorised passes, where
building the strings in Python took longer than the rest of `prepare`. Two different n-grams share
a key with probability about 2^-64 per pair: never, in practice.
"""

from __future__ import annotations

import numpy as np

NGRAMS = (3, 5)
_BASE = np.uint64(0x9E3779B97F4A7C15)  # odd, so every power is odd: no code point is lost


def ngram_keys(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(index into `texts`, key) of every n-gram of every text; a text may hold several words."""
    split = [text.split() for text in texts]
    parts = [f" {part} " for words in split for part in words]
    if not parts:
        return np.zeros(0, np.int64), np.zeros(0, np.uint64)
    owner = np.repeat(np.arange(len(texts)), [len(words) for words in split])
    # One buffer of code points, a 0 between parts: a window holding a 0 crosses parts.
    codes = np.frombuffer("\0".join(parts).encode("utf-32-le"), dtype=np.uint32)
    codes = codes.astype(np.uint64)
    zeros_before = np.concatenate([[0], np.cumsum(codes == 0)])  # in codes[:i]
    owners, keys = [], []
    key = np.zeros(len(codes), np.uint64)
    with np.errstate(over="ignore"):  # the hash wraps around 2^64 on purpose
        for n in range(1, NGRAMS[1] + 1):
            windows = max(len(codes) - n + 1, 0)
            shifted = np.zeros(len(codes), np.uint64)
            shifted[:windows] = codes[n - 1 : n - 1 + windows]
            key = key * _BASE + shifted  # now key[i] hashes codes[i : i + n] (Horner)
            if n < NGRAMS[0]:
                continue
            starts = np.arange(windows)
            starts = starts[zeros_before[starts + n] == zeros_before[starts]]
            owners.append(owner[zeros_before[starts]])
            keys.append(key[starts] ^ np.uint64(n))
    return np.concatenate(owners), np.concatenate(keys)


def term_key(term: str) -> np.uint64:
    """The key `ngram_keys` gives the n-gram `term` (a window of a padded part, e.g. " ab")."""
    key = np.uint64(0)
    with np.errstate(over="ignore"):
        for code in np.frombuffer(term.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64):
            key = key * _BASE + code
    return key ^ np.uint64(len(term))
