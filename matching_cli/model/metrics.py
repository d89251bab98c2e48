"""Metrics: pure functions over numpy arrays of labels (0/1) and scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    auc,
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
)


def pr_auc(target: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve, as the original project and the competition compute it."""
    if target.sum() == 0:
        return 0.0
    precision, recall, _ = precision_recall_curve(target, score)
    return float(auc(recall, precision))


def average_precision(target: np.ndarray, score: np.ndarray) -> float:
    """Average precision: 0 without both classes (there is nothing to rank)."""
    if not 0 < target.sum() < len(target):
        return 0.0
    return float(average_precision_score(target, score))


def category_pr_auc(target: np.ndarray, score: np.ndarray, category: np.ndarray) -> float | None:
    """The competition metric: mean PR-AUC over level-2 categories (one without positives scores 0).

    Pairs of unknown category (-1) are left out; None when no category is known."""
    known = category >= 0
    if not known.any():
        return None
    values = [
        pr_auc(target[category == c], score[category == c]) for c in np.unique(category[known])
    ]
    return float(np.mean(values))


def best_f1_threshold(target: np.ndarray, score: np.ndarray) -> float:
    """The score threshold with the best F1; scores >= threshold are matches. Without a match
    among the pairs there is no F1 to make best: 0.5."""
    if not target.any():
        return 0.5
    precision, recall, thresholds = precision_recall_curve(target, score)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-12)
    return float(thresholds[int(np.argmax(f1[:-1]))])


def f1(precision: float, recall: float) -> float:
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def precision_recall_f1(tp: float, predicted: float, actual: float) -> dict[str, float]:
    """From counts: true positives, predicted positives, actual positives (0 where undefined)."""
    precision = tp / predicted if predicted else 0.0
    recall = tp / actual if actual else 0.0
    return {"precision": precision, "recall": recall, "f1": f1(precision, recall)}


def classification(target: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    predicted = score >= threshold
    actual = target == 1
    counts = float(np.sum(predicted & actual)), float(predicted.sum()), float(actual.sum())
    return {"accuracy": float(np.mean(predicted == actual))} | precision_recall_f1(*counts)


def all_metrics(
    target: np.ndarray, score: np.ndarray, threshold: float, category: np.ndarray | None = None
) -> dict[str, float]:
    """Metrics at the threshold; the ranking metrics (PR-AUC, average precision, ROC-AUC) only
    with both classes: without them there is nothing to rank, and a number would mislead."""
    metrics = classification(target, score, threshold)
    if not has_both_classes(target):
        return metrics
    metrics |= {
        "pr_auc": pr_auc(target, score),
        "average_precision": average_precision(target, score),
        "roc_auc": float(roc_auc_score(target, score)),
    }
    if category is not None:
        competition = category_pr_auc(target, score, category)
        if competition is not None:
            metrics["category_pr_auc"] = competition
    return metrics


def has_both_classes(target: np.ndarray) -> bool:
    return bool(0 < target.sum() < len(target))


def confusion(target: np.ndarray, score: np.ndarray, threshold: float) -> np.ndarray:
    return confusion_matrix(target.astype(int), (score >= threshold).astype(int), labels=[0, 1])


def precision_threshold(target: np.ndarray, score: np.ndarray, precision: float) -> float | None:
    """The lowest score threshold at which the pairs scored at or above it are at least `precision`
    matches (None when no threshold reaches it); scores >= threshold are matches."""
    if not target.any():
        return None
    found, _, thresholds = precision_recall_curve(target, score)
    reached = np.flatnonzero(found[:-1] >= precision)
    return float(thresholds[reached[0]]) if len(reached) else None
