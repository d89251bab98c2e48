"""A gradient-boosted head stored as plain arrays: fitted by scikit-learn, saved with no pickle.

scikit-learn's `HistGradientBoostingClassifier` is fitted as usual; `export` copies each tree's
node table (feature, raw threshold, children, leaf value, where a missing value goes) into flat
arrays, so the head saves to safetensors + JSON with no pickle, and `TreeEnsemble.predict_proba`
reproduces scikit-learn's probabilities (to float rounding); `tree_walk` walks them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import load_file, save

from matching_cli.model import tree_walk

if TYPE_CHECKING:  # scikit-learn is imported when fitting or walking the trees
    from sklearn.ensemble import HistGradientBoostingClassifier

WEIGHTS_FILE = "trees.safetensors"
META_FILE = "trees.json"
ARRAYS = ("feature", "threshold", "left", "right", "value", "is_leaf", "missing_left", "roots")


@dataclass(frozen=True)
class TreeSettings:
    """Defaults chosen to suit any catalogue size: early stopping on a held-out tenth picks the
    number of trees, so small catalogues get few and large ones many."""

    max_iter: int = 500
    learning_rate: float = 0.05
    max_leaf_nodes: int = 31
    min_samples_leaf: int = 20
    l2_regularization: float = 1.0
    early_stopping: bool = True
    validation_fraction: float = 0.1
    n_iter_no_change: int = 30
    seed: int = 0


def fit(x: np.ndarray, y: np.ndarray, settings: TreeSettings = TreeSettings()) -> TreeEnsemble:
    """Fit scikit-learn's histogram boosting on (x, y) and export it to arrays."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        max_iter=settings.max_iter,
        learning_rate=settings.learning_rate,
        max_leaf_nodes=settings.max_leaf_nodes,
        min_samples_leaf=settings.min_samples_leaf,
        l2_regularization=settings.l2_regularization,
        early_stopping=settings.early_stopping and len(y) >= 200,
        validation_fraction=settings.validation_fraction,
        n_iter_no_change=settings.n_iter_no_change,
        scoring="loss",  # AP here would predict the whole validation set every iteration
        random_state=settings.seed,
    )
    # A column with no value at all (every vector of an embedding block zero, so every cosine
    # missing) stopped scikit-learn 1.9's binning ("window shape cannot be larger than input
    # array shape"). It says nothing: fitted as a constant, it is never split on.
    empty = np.isnan(x).all(axis=0)
    model.fit(np.where(empty, 0.0, x) if empty.any() else x, y)
    return export(model)


@dataclass
class TreeEnsemble:
    """All trees' nodes in one table; tree t starts at node roots[t]; children are global indices."""

    feature: np.ndarray  # int64, the column a split reads
    threshold: np.ndarray  # float64, go left when x <= threshold
    left: np.ndarray  # int64
    right: np.ndarray  # int64
    value: np.ndarray  # float64, the leaf's raw score (0 on split nodes)
    is_leaf: np.ndarray  # bool
    missing_left: np.ndarray  # bool, where NaN goes
    roots: np.ndarray  # int64
    baseline: float
    n_features: int
    max_depth: int

    def raw_score(self, x: np.ndarray) -> np.ndarray:
        """The log-odds: baseline + the sum of one leaf per tree (scikit-learn's
        `decision_function`), by scikit-learn's compiled walk where there is one (`tree_walk`)."""
        return self.staged_raw_scores(x, np.array([len(self.roots)]))[0]

    def staged_raw_scores(self, x: np.ndarray, stages: np.ndarray) -> np.ndarray:
        """(len(stages), n): the log-odds of the first stages[i] trees alone, as `raw_score` gives
        them for all trees (scikit-learn's `staged_decision_function`, at these stages)."""
        x, stages = self._checked(x), np.asarray(stages)
        if self._compiled_tables is None:
            return tree_walk.numpy_stages(self, x, stages)
        return tree_walk.compiled_stages(self, self._compiled_tables, x, stages)

    def numpy_raw_score(self, x: np.ndarray, batch_rows: int | None = None) -> np.ndarray:
        """`raw_score` by numpy's walk, whatever scikit-learn has (the fallback, and the check)."""
        return self.numpy_staged_raw_scores(x, np.array([len(self.roots)]), batch_rows)[0]

    def numpy_staged_raw_scores(
        self, x: np.ndarray, stages: np.ndarray, batch_rows: int | None = None
    ) -> np.ndarray:
        return tree_walk.numpy_stages(self, self._checked(x), np.asarray(stages), batch_rows)

    @cached_property
    def _compiled_tables(self) -> list[np.ndarray] | None:
        return tree_walk.compiled_tables(self)

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (n, {self.n_features}) features, got {x.shape}")
        return x

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of a match, shape (n,) (scikit-learn's `predict_proba(x)[:, 1]`)."""
        return 1.0 / (1.0 + np.exp(-self.raw_score(x)))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {name: np.ascontiguousarray(getattr(self, name)) for name in ARRAYS}
        (folder / WEIGHTS_FILE).write_bytes(save(arrays))  # save_file writes it owner-only
        meta = {
            "baseline": self.baseline,
            "n_features": self.n_features,
            "max_depth": self.max_depth,
            "n_trees": len(self.roots),
        }
        (folder / META_FILE).write_text(json.dumps(meta, indent=2))

    @classmethod
    def load(cls, folder: Path) -> TreeEnsemble:
        arrays = load_file(folder / WEIGHTS_FILE)
        meta = json.loads((folder / META_FILE).read_text())
        return cls(
            **arrays,
            baseline=float(meta["baseline"]),
            n_features=int(meta["n_features"]),
            max_depth=int(meta["max_depth"]),
        )


def export(model: HistGradientBoostingClassifier) -> TreeEnsemble:
    """Copy a fitted binary classifier's trees out of scikit-learn's predictor objects."""
    if len(model.classes_) != 2:
        raise ValueError("only binary classifiers are exported")
    if getattr(model, "is_categorical_", None) is not None and np.any(model.is_categorical_):
        raise ValueError("categorical splits are not exported; pass numeric features only")
    tables = [predictors[0].nodes for predictors in model._predictors]
    sizes = np.array([len(table) for table in tables], dtype=np.int64)
    roots = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    nodes = np.concatenate(tables)
    shift = np.repeat(roots, sizes)
    is_leaf = nodes["is_leaf"].astype(bool)
    # Leaves keep left = right = 0 in scikit-learn; point them at themselves so a walk stays put.
    own = np.arange(len(nodes), dtype=np.int64)
    left = np.where(is_leaf, own, nodes["left"].astype(np.int64) + shift)
    right = np.where(is_leaf, own, nodes["right"].astype(np.int64) + shift)
    return TreeEnsemble(
        feature=np.where(is_leaf, 0, nodes["feature_idx"]).astype(np.int64),
        threshold=nodes["num_threshold"].astype(np.float64),
        left=left,
        right=right,
        value=np.where(is_leaf, nodes["value"], 0.0).astype(np.float64),
        is_leaf=is_leaf,
        missing_left=nodes["missing_go_to_left"].astype(bool),
        roots=roots,
        baseline=float(np.ravel(model._baseline_prediction)[0]),
        n_features=int(model.n_features_in_),
        max_depth=int(nodes["depth"].max()),
    )
