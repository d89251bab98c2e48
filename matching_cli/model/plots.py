"""The figures every run carries: loss curves, precision-recall curve, metric bars, confusion matrix."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.metrics import precision_recall_curve

from matching_cli.model.metrics import confusion, has_both_classes


def loss_curves(history: list[dict[str, float]]) -> Figure:
    """Per epoch of the MLP, or per number of trees (a history of `trees`, not `epoch`)."""
    fig, (loss_ax, auc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    step = "epoch" if "epoch" in history[0] else "trees"
    steps = [h[step] for h in history]
    loss_ax.plot(steps, [h["train_loss"] for h in history], marker="o", label="train")
    loss_ax.plot(steps, [h["val_loss"] for h in history], marker="o", label="validation")
    loss_ax.set(xlabel=step, ylabel="BCE loss", title="Loss")
    loss_ax.legend()
    auc_ax.plot(steps, [h["val_pr_auc"] for h in history], marker="o", label="PR-AUC")
    auc_ax.plot(steps, [h["val_ap"] for h in history], marker="o", label="average precision")
    title = "Validation (best epoch: highest AP)" if step == "epoch" else "Validation"
    auc_ax.set(xlabel=step, ylabel="area", title=title)
    auc_ax.legend()
    fig.tight_layout()
    return fig


def pr_curve(target: np.ndarray, score: np.ndarray, threshold: float) -> Figure:
    precision, recall, thresholds = precision_recall_curve(target, score)
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot(recall, precision)
    at = min(int(np.searchsorted(thresholds, threshold)), len(thresholds) - 1)
    ax.scatter(
        [recall[at]], [precision[at]], color="tab:red", zorder=3, label=f"threshold {threshold:.3f}"
    )
    ax.set(
        xlabel="recall", ylabel="precision", title="Precision-recall", xlim=(0, 1), ylim=(0, 1.02)
    )
    ax.legend(loc="lower left")
    fig.tight_layout()
    return fig


def metric_bars(metrics: dict[str, float]) -> Figure:
    fig, ax = plt.subplots(figsize=(8, 4))
    names = list(metrics)
    bars = ax.bar(names, [metrics[n] for n in names], color="tab:blue")
    ax.bar_label(bars, fmt="%.3f")
    ax.set(ylim=(0, 1.1), title="Test metrics")
    ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def confusion_figure(target: np.ndarray, score: np.ndarray, threshold: float) -> Figure:
    matrix = confusion(target, score, threshold)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(
            j,
            i,
            f"{value:,}",
            ha="center",
            va="center",
            color="white" if value > matrix.max() / 2 else "black",
        )
    ax.set(
        xticks=[0, 1],
        yticks=[0, 1],
        xticklabels=["different", "same"],
        yticklabels=["different", "same"],
        xlabel="predicted",
        ylabel="true",
        title=f"Confusion at {threshold:.3f}",
    )
    fig.tight_layout()
    return fig


def run_figures(
    history: list[dict[str, float]] | None,
    target: np.ndarray,
    score: np.ndarray,
    threshold: float,
    metrics: dict[str, float],
) -> dict[str, Figure]:
    """File name -> figure, for one training or evaluation run."""
    figures = {
        "metrics.png": metric_bars(metrics),
        "confusion_matrix.png": confusion_figure(target, score, threshold),
    }
    if has_both_classes(target):  # a precision-recall curve needs matches and non-matches
        figures["pr_curve.png"] = pr_curve(target, score, threshold)
    if history:
        figures["loss_curves.png"] = loss_curves(history)
    return figures
