"""Quality of `matching match`: pure functions over arrays of item-matrix rows and group labels.

Blocking is judged by recall (share of the true matching pairs among the candidates) and reduction
ratio (share of all comparisons it spared); the final groups by pairwise precision, recall and F1 on
labelled pairs and, against each listing's true product, over all same-group pairs, by B-cubed and
by the adjusted Rand index.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import adjusted_rand_score

from matching_cli.data.prepare import Prepared
from matching_cli.match.blocking import Candidates, pair_keys
from matching_cli.model.metrics import f1, precision_recall_f1


def _pairs(n: np.ndarray | float) -> np.ndarray | float:
    return n * (n - 1) / 2


def reduction_ratio(n_candidates: int, n_queries: int, n_items: int) -> float:
    """1 - candidates / every pair that holds at least one query listing."""
    total = _pairs(n_items) - _pairs(n_items - n_queries)
    return float(1 - n_candidates / total) if total else 0.0


def blocking_recall(
    candidate_keys: np.ndarray, left: np.ndarray, right: np.ndarray, n_items: int
) -> float:
    """Share of the pairs (left, right) found among the candidates (`candidate_keys` sorted)."""
    if len(left) == 0:
        return float("nan")
    keys = pair_keys(left, right, n_items)
    pos = np.minimum(np.searchsorted(candidate_keys, keys), max(len(candidate_keys) - 1, 0))
    found = candidate_keys[pos] == keys if len(candidate_keys) else np.zeros(len(keys), bool)
    return float(found.mean())


def labelled_pair_quality(
    labels: np.ndarray, left: np.ndarray, right: np.ndarray, target: np.ndarray
) -> dict[str, float]:
    """A labelled pair is matched when both listings end in one group."""
    predicted = labels[left] == labels[right]
    actual = target == 1
    counts = float((predicted & actual).sum()), float(predicted.sum()), float(actual.sum())
    return _prefixed("pairs_", precision_recall_f1(*counts))


def true_pair_recall(
    candidate_left: np.ndarray, candidate_right: np.ndarray, product: np.ndarray
) -> float:
    """Share of all same-product pairs (product >= 0; -1 unknown) that are among the candidates."""
    known = product >= 0
    actual = _pairs(np.bincount(product[known])).sum()
    a, b = product[candidate_left], product[candidate_right]
    found = ((a == b) & (a >= 0)).sum()
    return float(found / actual) if actual else float("nan")


def cluster_quality(labels: np.ndarray, product: np.ndarray) -> dict[str, float]:
    """Groups against true products, over the listings whose product is known (product >= 0);
    none where no two of them are of one product (no true pair to find: B-cubed and ARI said 1.0
    and the pair F1 0 of `match --listings` with 50 listings of 50 products)."""
    known = product >= 0
    group, truth = labels[known], product[known]
    if len(group) < 2 or np.bincount(truth).max() < 2:
        return {}
    cells = np.unique(np.stack([group, truth]), axis=1, return_counts=True)
    (cell_group, cell_truth), n_cell = cells
    group_size = np.bincount(group)[cell_group]
    truth_size = np.bincount(truth)[cell_truth]
    counts = (
        float(_pairs(n_cell).sum()),
        float(_pairs(np.bincount(group)).sum()),
        float(_pairs(np.bincount(truth)).sum()),
    )
    metrics = _prefixed("cluster_pair_", precision_recall_f1(*counts))
    precision = float((n_cell**2 / group_size).sum() / len(group))
    recall = float((n_cell**2 / truth_size).sum() / len(group))
    metrics |= {
        "bcubed_precision": precision,
        "bcubed_recall": recall,
        "bcubed_f1": f1(precision, recall),
    }
    metrics["adjusted_rand"] = float(adjusted_rand_score(truth, group))
    return metrics


def _prefixed(prefix: str, metrics: dict[str, float]) -> dict[str, float]:
    return {prefix + name: value for name, value in metrics.items()}


def measure_quality(
    prepared: Prepared,
    queries: np.ndarray,
    candidates: Candidates,
    labels: np.ndarray,
    product: np.ndarray | None = None,
) -> dict[str, float]:
    """Blocking and match quality on the labelled pairs, and against the true product of each row
    (`product`, -1 unknown) when known, counting only pairs whose listings are both queries."""
    n = len(prepared.items.ids)
    is_query = np.zeros(n, bool)
    is_query[queries] = True
    metrics = {"reduction_ratio": reduction_ratio(len(candidates), len(queries), n)}
    labelled = list(prepared.splits.values())
    left, right, target = (
        np.concatenate([getattr(p, a) for p in labelled]) for a in ("left", "right", "target")
    )
    positive = (target == 1) & is_query[left] & is_query[right]
    if positive.any():
        metrics["blocking_recall"] = blocking_recall(
            candidates.keys(n), left[positive], right[positive], n
        )
    test = prepared.splits["test"]  # held out from training: an honest measure of the matches
    inside = is_query[test.left] & is_query[test.right]
    if inside.any():
        metrics |= labelled_pair_quality(
            labels, test.left[inside], test.right[inside], test.target[inside]
        )
    if product is not None:
        product = np.where(is_query, product, -1)
        metrics["blocking_true_pair_recall"] = true_pair_recall(
            candidates.left, candidates.right, product
        )
        metrics |= cluster_quality(labels, product)
    return metrics
