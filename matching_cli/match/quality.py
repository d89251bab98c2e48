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


def _touching(n: np.ndarray, m: np.ndarray) -> np.ndarray:
    """Pairs among `n` listings that hold at least one of the `m` query listings among them."""
    return _pairs(n) - _pairs(n - m)


def true_pair_recall(
    candidate_left: np.ndarray,
    candidate_right: np.ndarray,
    product: np.ndarray,
    is_query: np.ndarray,
) -> float:
    """Share of the same-product pairs (product >= 0; -1 unknown) with at least one query listing
    that are among the candidates."""
    known = product >= 0
    truth, query = product[known], is_query[known]
    actual = _touching(np.bincount(truth), np.bincount(truth, weights=query)).sum()
    a, b = product[candidate_left], product[candidate_right]
    touching = is_query[candidate_left] | is_query[candidate_right]
    found = ((a == b) & (a >= 0) & touching).sum()
    return float(found / actual) if actual else float("nan")


def cluster_quality(
    labels: np.ndarray, product: np.ndarray, is_query: np.ndarray | None = None
) -> dict[str, float]:
    """Groups against true products, over the listings whose product is known (product >= 0), as
    the query listings see them (`is_query`; None: every listing): pairwise precision, recall and
    F1 over the pairs that hold a query listing, and B-cubed averaged over the query listings,
    against the groups and products of the whole catalogue (`match --listings` counted only pairs
    of two queries, so a new listing's matches in the catalogue went unmeasured); the adjusted Rand
    index where every listing is a query. None where no true pair holds a query (nothing to find:
    B-cubed and ARI said 1.0 and the pair F1 0 of 50 listings of 50 products)."""
    known = product >= 0
    query = np.ones(len(labels), bool) if is_query is None else is_query
    group, truth, weight = labels[known], product[known], query[known].astype(np.float64)
    actual = _touching(np.bincount(truth), np.bincount(truth, weights=weight)).sum()
    if not actual:
        return {}
    cells, cell_of = np.unique(np.stack([group, truth]), axis=1, return_inverse=True)
    cell_group, cell_truth = cells
    n_cell = np.bincount(cell_of)
    m_cell = np.bincount(cell_of, weights=weight)
    group_size = np.bincount(group)[cell_group]
    truth_size = np.bincount(truth)[cell_truth]
    counts = (
        float(_touching(n_cell, m_cell).sum()),
        float(_touching(np.bincount(group), np.bincount(group, weights=weight)).sum()),
        float(actual),
    )
    metrics = _prefixed("cluster_pair_", precision_recall_f1(*counts))
    precision = float((m_cell * n_cell / group_size).sum() / weight.sum())
    recall = float((m_cell * n_cell / truth_size).sum() / weight.sum())
    metrics |= {
        "bcubed_precision": precision,
        "bcubed_recall": recall,
        "bcubed_f1": f1(precision, recall),
    }
    if weight.all():
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
    (`product`, -1 unknown) when known, over the pairs that hold at least one query listing: with
    `match --listings`, what the new listings found in the catalogue."""
    n = len(prepared.items.ids)
    is_query = np.zeros(n, bool)
    is_query[queries] = True
    metrics = {"reduction_ratio": reduction_ratio(len(candidates), len(queries), n)}
    labelled = list(prepared.splits.values())
    left, right, target = (
        np.concatenate([getattr(p, a) for p in labelled]) for a in ("left", "right", "target")
    )
    positive = (target == 1) & (is_query[left] | is_query[right])
    if positive.any():
        metrics["blocking_recall"] = blocking_recall(
            candidates.keys(n), left[positive], right[positive], n
        )
    test = prepared.splits["test"]  # held out from training: an honest measure of the matches
    touching = is_query[test.left] | is_query[test.right]
    if touching.any():
        metrics |= labelled_pair_quality(
            labels, test.left[touching], test.right[touching], test.target[touching]
        )
    if product is not None:
        metrics["blocking_true_pair_recall"] = true_pair_recall(
            candidates.left, candidates.right, product, is_query
        )
        metrics |= cluster_quality(labels, product, is_query)
    return metrics
