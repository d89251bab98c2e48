"""Scoring pairs with a model: logits in batches, and the one rule for a match probability.

The probability of a pair is the model's output for the pair in the order given, everywhere: the
threshold chosen on validation, `evaluate`, `predict`, `match` and the served model (`serving.py`). A
`symmetric` model scores both orders alike; a `concat` model was trained and its threshold tuned on
the files' order alone, so averaging in the reverse order would score a quantity it was never
tuned on.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Generator, Iterable
from functools import partial
from itertools import chain, islice
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from matching_cli.workers import ahead, available_cores, can_fork, one_per_core

EVAL_BATCH = 65_536  # on a GPU: large batches keep the card busy
# On a CPU a batch this size keeps its activations in cache: measured about twice as fast as 65,536.
CPU_EVAL_BATCH = 4_096
# Processes scoring chunks on a CPU: each holds a chunk's temporaries, about 0.7 GB at the real
# size; with more cores than this each gets more threads.
MOST_SCORING_WORKERS = 8
# Pairs in a chunk of `scored_chunks`: this many, or fewer (down to LEAST_CHUNK_PAIRS) where
# there are too few pairs to give each core CHUNKS_PER_CORE chunks.
MOST_CHUNK_PAIRS = 1 << 20
LEAST_CHUNK_PAIRS = 1 << 16
CHUNKS_PER_CORE = 4


def autocast(device: torch.device):  # type: ignore[no-untyped-def]
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def score_pairs(
    model: nn.Module,
    items: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    features: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Logits for the pairs (rows of `items`, with their field features), in order."""
    model.eval()
    # index_select, not items[rows]: on a CPU it copies whole rows. In a forward pass at the real
    # size on one thread the gather took 1.9 s a million pairs this way, 2.8 s by indexing.
    batch_size = batch_size or (CPU_EVAL_BATCH if items.device.type == "cpu" else EVAL_BATCH)
    out = []
    for start in range(0, len(left), batch_size):
        part = slice(start, start + batch_size)
        with autocast(items.device):
            out.append(
                model(
                    items.index_select(0, left[part]),
                    items.index_select(0, right[part]),
                    None if features is None else features[part],
                ).float()
            )
    return torch.cat(out) if out else torch.zeros(0, device=items.device)


def predict_proba(
    model: nn.Module,
    items: torch.Tensor,
    left: torch.Tensor,
    right: torch.Tensor,
    features: torch.Tensor | None = None,
    batch_size: int | None = None,
) -> torch.Tensor:
    """Match probabilities of the pairs, on the items' device: the only way this project gets one."""
    return torch.sigmoid(score_pairs(model, items, left, right, features, batch_size))


T = TypeVar("T")
Featurizer = Callable[[np.ndarray, np.ndarray], np.ndarray]


def scored_chunks(
    model: nn.Module,
    items: torch.Tensor,
    chunks: Iterable[T],
    pairs_of: Callable[[T], tuple[np.ndarray, np.ndarray] | None],
    featurizer: Featurizer | None = None,
    missing_row: int | None = None,
    forward_here: bool | None = None,
) -> Generator[tuple[T, np.ndarray | None], None, None]:
    """Each chunk, in order, with the match probabilities of its pairs (`pairs_of(chunk)`: item
    rows; None: a chunk not to score), the field features from `featurizer`. With `missing_row`
    a row of -1 (a listing in no table) is scored as that row of `items` (the caller discards
    those scores).

    Chunks go to forked processes where there are cores for them (`scoring_workers`): on a CPU
    each scores whole chunks on its share of the cores while this process reads and writes; on
    a GPU they compute the field features of the next chunks while this process runs the forward
    pass (`forward_here`, by default on a GPU only). A single chunk is scored here."""
    probabilities = partial(_probabilities, model, items, featurizer, missing_row)
    chunks = iter(chunks)
    first = list(islice(chunks, 2))
    chunks = chain(first, chunks)
    if forward_here is None:
        forward_here = items.device.type != "cpu"
    workers = scoring_workers(forward_here, featurizer is not None) if len(first) > 1 else 0
    if not forward_here:
        start = partial(torch.set_num_threads, max(1, available_cores() // max(workers, 1)))
        yield from ahead(probabilities, chunks, pairs_of, workers, start=start)
        return
    for chunk, features in ahead(featurizer, chunks, pairs_of, workers):
        pairs = pairs_of(chunk)
        yield chunk, None if pairs is None else probabilities(*pairs, features)


def _probabilities(
    model: nn.Module,
    items: torch.Tensor,
    featurizer: Featurizer | None,
    missing_row: int | None,
    left: np.ndarray,
    right: np.ndarray,
    features: np.ndarray | None = None,
) -> np.ndarray:
    if featurizer is not None and features is None:
        features = featurizer(left, right)
    if missing_row is not None:
        left, right = (np.where(side < 0, missing_row, side) for side in (left, right))
    device = items.device
    scores = predict_proba(
        model,
        items,
        torch.from_numpy(left).to(device),
        torch.from_numpy(right).to(device),
        None if features is None else torch.from_numpy(features).to(device),
    )
    return scores.cpu().numpy()


def chunk_pairs(total: int | None) -> int:
    """Pairs a chunk for `scored_chunks` of `total` pairs (None: not known): at most
    MOST_CHUNK_PAIRS, and few enough that every core gets CHUNKS_PER_CORE chunks where the pairs
    allow. A single chunk is scored in this process alone: `match` on the 50k-pair demo catalogue
    (749k candidates in one chunk of 2^20) scored them in 14.2-14.7 s, in 5.2-5.4 s as six to
    eight chunks on two cores."""
    if total is None:
        return MOST_CHUNK_PAIRS
    even = -(-total // (CHUNKS_PER_CORE * available_cores()))
    return min(MOST_CHUNK_PAIRS, max(LEAST_CHUNK_PAIRS, even))


def scoring_workers(forward_here: bool, features: bool) -> int:
    """Forked processes for `scored_chunks`. On a CPU, on Linux (torch in forked processes is not
    tried elsewhere), one a core up to MOST_SCORING_WORKERS, each scoring whole chunks. At the
    real size on two cores, 10M pairs (embedding features only) took 53-57 s this way, against
    74-76 s in one process on two threads (the code before the field features); measured before
    `ahead` gave each chunk to whichever worker was free: 87-91 s this way against 113-127 s with
    the field features in one worker beside a one-thread forward pass here, and 121 s with this
    process scoring chunks too (it also reads and writes them). With the forward pass
    here (a GPU), for the field features only, all cores but two. None on one core or where
    processes cannot be forked."""
    if not forward_here:
        return min(one_per_core(), MOST_SCORING_WORKERS) if sys.platform.startswith("linux") else 0
    if not can_fork():
        return 0
    return max(1, available_cores() - 2) if features else 0
