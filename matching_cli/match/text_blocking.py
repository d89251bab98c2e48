"""Candidates from the text: listings whose names share a rare digit-bearing token (a model code).

Embeddings blur the token that tells one product from another ("a52" vs "a53"), so two listings of
one product can sit far apart in embedding space. A token with digits that few names hold is close
to a product's identity: every pair of listings sharing one is a candidate. A token in more than
`cap` names ("2024", "128gb") says little and would pair too many, so it is skipped; each listing
proposes at most `per_listing` partners (those sharing the most rare tokens), which bounds the cost.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from matching_cli.data.tables import normalise
from matching_cli.match.blocking import Candidates, pair_keys
from matching_cli.settings import MatchSettings

_QUERY_CHUNK = 100_000  # query rows whose shared-token counts are held at once


@dataclass(frozen=True)
class TextBlocking:
    cap: int = 20  # a token in more names than this proposes nothing
    per_listing: int = 10

    @classmethod
    def of(cls, settings: MatchSettings) -> TextBlocking:
        return cls(settings.text_token_cap, settings.text_per_listing)


def shared_token_pairs(
    tokens: sp.csr_matrix,
    queries: np.ndarray,
    params: TextBlocking = TextBlocking(),
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Unordered pairs of rows (left < right, unique) where a query row shares a token held by
    2..cap rows (binary `tokens`, one row per listing); of the same group when `groups` is given."""
    df = np.bincount(tokens.indices, minlength=tokens.shape[1])
    rare = np.flatnonzero((df >= 2) & (df <= params.cap))
    # A new matrix of the rare columns only: `tokens` (the featurizer's own) is left as it is.
    kept = sp.csr_matrix(tokens[:, rare], dtype=np.float32)
    by_token = kept.T.tocsr()
    lefts, rights = [], []
    for start in range(0, len(queries), _QUERY_CHUNK):
        rows = queries[start : start + _QUERY_CHUNK]
        shared = (kept[rows] @ by_token).tocoo()  # (query, listing) -> rare tokens shared
        proposer, partner, count = rows[shared.row], shared.col, shared.data
        other = proposer != partner
        if groups is not None:
            other &= groups[proposer] == groups[partner]
        proposer, partner, count = proposer[other], partner[other], count[other]
        # Each proposer keeps its `per_listing` partners sharing the most tokens.
        order = np.lexsort((partner, -count, proposer))
        proposer, partner = proposer[order], partner[order]
        first = np.searchsorted(proposer, proposer, side="left")
        top = np.arange(len(proposer)) - first < params.per_listing
        lefts.append(np.minimum(proposer[top], partner[top]))
        rights.append(np.maximum(proposer[top], partner[top]))
    if not lefts:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    n = tokens.shape[0]
    keys = np.unique(pair_keys(np.concatenate(lefts), np.concatenate(rights), n))
    return keys // n, keys % n


def with_text_candidates(
    candidates: Candidates, matrix: np.ndarray, left: np.ndarray, right: np.ndarray
) -> Candidates:
    """`candidates` plus the pairs (left, right) they lack, with their embedding cosines, in the
    same (left, right) order; `methods` counts the pairs the text added under "text"."""
    n = len(matrix)
    known = candidates.keys(n)
    keys = pair_keys(left, right, n)
    new = keys[~np.isin(keys, known)]
    a, b = new // n, new % n
    similarity = np.empty(len(new), np.float32)
    for start in range(0, len(new), 1 << 16):
        part = slice(start, start + (1 << 16))
        x = np.asarray(matrix[a[part]], np.float32)
        y = np.asarray(matrix[b[part]], np.float32)
        normalise(x)
        normalise(y)
        similarity[part] = np.einsum("ij,ij->i", x, y)
    all_keys = np.concatenate([known, new])
    order = np.argsort(all_keys, kind="stable")
    return Candidates(
        (all_keys // n)[order],
        (all_keys % n)[order],
        np.concatenate([candidates.similarity, similarity])[order],
        candidates.methods | {"text": len(new)},
    )
