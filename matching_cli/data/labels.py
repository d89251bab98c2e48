"""Labelled pairs that contradict themselves: what `prepare` (and `evaluate --pairs`) leaves out."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from matching_cli.errors import DataError

log = logging.getLogger(__name__)

CONTRADICTION_LIMIT = 0.05  # more pairs than this labelled both ways: the labels are not usable


def clean_labels(
    left: np.ndarray, right: np.ndarray, target: np.ndarray, path: Path
) -> tuple[np.ndarray, dict[str, int]]:
    """Which labelled pairs to keep: a listing paired with itself says nothing, a pair listed twice
    (in either order) counts once, and a pair labelled both 1 and 0 is left out entirely.

    Returns the mask and the count of pairs left out for each reason (logged as a warning)."""
    a, b = np.minimum(left, right), np.maximum(left, right)
    order = np.lexsort((b, a))
    a, b, t = a[order], b[order], target[order]
    starts = np.ones(len(a), bool)
    starts[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    group = np.cumsum(starts) - 1
    positives = np.bincount(group, weights=t)
    sizes = np.bincount(group)
    mixed = (positives > 0) & (positives < sizes)
    self_pair = a == b
    contradicting = mixed[group] & ~self_pair
    repeated = ~starts & ~mixed[group] & ~self_pair
    keep = np.empty(len(a), bool)
    keep[order] = ~(self_pair | contradicting | repeated)
    dropped = {
        "self_pairs": int(self_pair.sum()),
        "repeated": int(repeated.sum()),
        "contradicting": int(contradicting.sum()),
    }
    distinct = int((starts & ~self_pair).sum())
    if int((mixed & (a[starts] != b[starts])).sum()) > CONTRADICTION_LIMIT * max(distinct, 1):
        raise DataError(
            f"{path}: {int((mixed & (a[starts] != b[starts])).sum()):,} of {distinct:,} distinct "
            f"pairs are labelled both 1 and 0 (over {CONTRADICTION_LIMIT:.0%}): the 'target' column "
            "cannot be trusted; fix the labels"
        )
    if any(dropped.values()):
        log.warning(
            "%s: left out %s",
            path,
            ", ".join(f"{n:,} {_LABEL_PROBLEMS[k]}" for k, n in dropped.items() if n),
        )
    return keep, {k: n for k, n in dropped.items() if n}


_LABEL_PROBLEMS = {
    "self_pairs": "pairs of a listing with itself",
    "repeated": "repeats of a pair already listed (either order, same label)",
    "contradicting": "pairs labelled both 1 and 0 (all their copies)",
}
