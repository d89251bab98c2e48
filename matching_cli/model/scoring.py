"""Scoring pairs with a model: logits in batches, and the one rule for a match probability.

The probability of a pair is the model's output for the pair in the order given, everywhere: the
threshold chosen on validation, `evaluate`, `predict`, `match` and the served model (`serving.py`). A
`symmetric` model scores both orders alike; a `concat` model was trained and its threshold tuned on
the files' order alone, so averaging in the reverse order would score a quantity it was never
tuned on.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from matching_cli.workers import available_cores

EVAL_BATCH = 65_536  # on a GPU: large batches keep the card busy
# On a CPU a batch this size keeps its activations in cache: measured about twice as fast as 65,536.
CPU_EVAL_BATCH = 4_096


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
    batch_size = batch_size or (CPU_EVAL_BATCH if items.device.type == "cpu" else EVAL_BATCH)
    out = []
    for start in range(0, len(left), batch_size):
        part = slice(start, start + batch_size)
        with autocast(items.device):
            out.append(
                model(
                    items[left[part]],
                    items[right[part]],
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


@contextmanager
def threads_beside(workers: int, device: torch.device) -> Iterator[None]:
    """torch's CPU threads kept to the cores that `workers` feature processes leave free
    (`workers.ahead`): on two cores the forward pass on two threads beside a busy
    worker took 1.3x as long as on one."""
    before = torch.get_num_threads()
    if workers and device.type == "cpu":
        torch.set_num_threads(max(1, min(before, available_cores() - workers)))
    try:
        yield
    finally:
        torch.set_num_threads(before)
