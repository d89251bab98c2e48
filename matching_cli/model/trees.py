"""A gradient-boosted head stored as plain arrays: fitted by scikit-learn, saved with no pickle.

scikit-learn's `HistGradientBoostingClassifier` is fitted as usual; `export` copies each tree's
node table (feature, raw threshold, children, leaf value, where a missing value goes) into flat
arrays, so the head saves to safetensors + JSON with no pickle, and `TreeEnsemble.predict_proba`
reproduces scikit-learn's probabilities (to float rounding).

Scoring walks each tree with scikit-learn's compiled walk where the installed scikit-learn has it
as this module expects (a private function, checked on probe rows before use), on one thread:
1.8-2.1x less CPU than numpy's lockstep walk (`benchmarks/trees_walk.py`), which is kept for a
scikit-learn without it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from safetensors.numpy import load_file, save_file

if TYPE_CHECKING:  # scikit-learn is imported when fitting or walking the trees
    from sklearn.ensemble import HistGradientBoostingClassifier

WEIGHTS_FILE = "trees.safetensors"
META_FILE = "trees.json"
ARRAYS = ("feature", "threshold", "left", "right", "value", "is_leaf", "missing_left", "roots")
log = logging.getLogger(__name__)


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
    model.fit(x, y)
    return export(model)


# (row, tree) walks taken a step at once. The walk's arrays (8 bytes a walk) then stay in the
# CPU's caches: 2^18 walks scored 1.4-1.5x faster than 4096 rows did (206 and 473 trees: 4096
# rows are 0.8M and 1.9M walks); 2^16-2^18 were alike, 2^19 as slow as 4096 rows.
BATCH_WALKS = 1 << 18


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
        `decision_function`), by the compiled walk where there is one."""
        x = self._checked(x)
        if self._compiled_tables is None:
            return self.numpy_raw_score(x)
        return self._compiled_stages(self._compiled_tables, x, np.array([len(self.roots)]))[0]

    def numpy_raw_score(self, x: np.ndarray, batch_rows: int | None = None) -> np.ndarray:
        """`raw_score` with all trees walked in lockstep by numpy, whatever scikit-learn has.

        Each step moves only the walks not yet on a leaf: most trees are far shallower than the
        deepest, and walking every (row, tree) to the deepest depth took 3x as long."""
        x = self._checked(x)
        out = np.empty(len(x), dtype=np.float64)
        batch_rows = batch_rows or self._batch_rows()
        for start in range(0, len(x), batch_rows):
            rows = x[start : start + batch_rows]
            out[start : start + len(rows)] = self.baseline + self._leaf_values(rows).sum(axis=1)
        return out

    def staged_raw_scores(self, x: np.ndarray, stages: np.ndarray) -> np.ndarray:
        """(len(stages), n): the log-odds of the first stages[i] trees alone, as `raw_score` gives
        them for all trees (scikit-learn's `staged_decision_function`, at these stages)."""
        x = self._checked(x)
        if self._compiled_tables is None:
            return self.numpy_staged_raw_scores(x, stages)
        return self._compiled_stages(self._compiled_tables, x, stages)

    def numpy_staged_raw_scores(
        self, x: np.ndarray, stages: np.ndarray, batch_rows: int | None = None
    ) -> np.ndarray:
        """`staged_raw_scores` walked by numpy in lockstep, as `numpy_raw_score`."""
        x = self._checked(x)
        out = np.empty((len(stages), len(x)), dtype=np.float64)
        batch_rows = batch_rows or self._batch_rows()
        for start in range(0, len(x), batch_rows):
            rows = x[start : start + batch_rows]
            summed = np.cumsum(self._leaf_values(rows), axis=1)[:, np.asarray(stages) - 1]
            out[:, start : start + len(rows)] = self.baseline + summed.T
        return out

    @cached_property
    def _compiled_tables(self) -> list[np.ndarray] | None:
        """Each tree's nodes as scikit-learn's compiled walk reads them (children numbered within
        the tree); None where this scikit-learn has no such walk, or where it does not give what
        numpy's walk gives on probe rows (values near the thresholds, some missing)."""
        compiled = _compiled_walk()
        if compiled is None:
            return None
        _, record = compiled
        ends = np.append(self.roots[1:], len(self.feature))[: len(self.roots)]
        tables = []
        for root, end in zip(self.roots, ends, strict=True):
            nodes, leaf = slice(root, end), self.is_leaf[root:end]
            table = np.zeros(end - root, record)
            table["value"] = self.value[nodes]
            table["feature_idx"] = self.feature[nodes]
            table["num_threshold"] = self.threshold[nodes]
            table["missing_go_to_left"] = self.missing_left[nodes]
            table["is_leaf"] = leaf
            table["left"] = np.where(leaf, 0, self.left[nodes] - root)
            table["right"] = np.where(leaf, 0, self.right[nodes] - root)
            tables.append(table)
        rng = np.random.default_rng(0)
        probe = rng.choice(self.threshold, (PROBE_ROWS, self.n_features)) + rng.normal(
            0, 1e-3, (PROBE_ROWS, self.n_features)
        )
        probe[rng.random(probe.shape) < 0.1] = np.nan
        try:
            compiled_scores = self._compiled_stages(tables, probe, np.array([len(tables)]))[0]
        except (TypeError, ValueError):  # called otherwise in this version
            compiled_scores = np.full(PROBE_ROWS, np.nan)
        if not np.allclose(compiled_scores, self.numpy_raw_score(probe), rtol=0, atol=1e-9):
            log.warning(
                "scikit-learn's compiled tree walk scores probe rows otherwise than numpy's "
                "walk: the trees are walked by numpy (about twice the CPU time)"
            )
            return None
        return tables

    def _compiled_stages(
        self, tables: list[np.ndarray], x: np.ndarray, stages: np.ndarray
    ) -> np.ndarray:
        """`staged_raw_scores` by scikit-learn's compiled walk, a tree over all rows at a time."""
        walk, _ = _compiled_walk()
        out = np.empty((len(stages), len(x)), dtype=np.float64)
        summed, leaf = np.full(len(x), self.baseline), np.empty(len(x))
        stage_of = {int(trees): k for k, trees in enumerate(stages)}
        if 0 in stage_of:
            out[stage_of[0]] = summed
        for trees, table in enumerate(tables, start=1):
            # One thread: in a forked scoring worker an OpenMP team hangs (GNU OpenMP after a
            # fork, once the parent has had one: fitting the trees starts one).
            walk(table, x, _NO_CATEGORIES, _NO_CATEGORIES, self._feature_map, 1, leaf)
            summed += leaf
            if trees in stage_of:
                out[stage_of[trees]] = summed
        return out

    @cached_property
    def _feature_map(self) -> np.ndarray:
        return np.zeros(self.n_features, np.uint32)  # no categorical feature to map

    def _batch_rows(self) -> int:
        """Rows walked at once: BATCH_WALKS (row, tree) walks, whatever the number of trees."""
        return max(1, BATCH_WALKS // len(self.roots))

    def _checked(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"expected (n, {self.n_features}) features, got {x.shape}")
        return x

    def _leaf_values(self, rows: np.ndarray) -> np.ndarray:
        """(len(rows), trees): the value of the leaf each row reaches in each tree."""
        trees = len(self.roots)
        flat = rows.ravel()
        node = np.tile(self.roots, len(rows))  # walk k: row k // trees, tree k % trees
        walking = np.flatnonzero(~self.is_leaf[node])
        while len(walking):
            at = node[walking]
            value = flat[walking // trees * self.n_features + self.feature[at]]
            go_left = np.where(np.isnan(value), self.missing_left[at], value <= self.threshold[at])
            node[walking] = np.where(go_left, self.left[at], self.right[at])
            walking = walking[~self.is_leaf[node[walking]]]
        return self.value[node].reshape(len(rows), trees)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Probability of a match, shape (n,) (scikit-learn's `predict_proba(x)[:, 1]`)."""
        return 1.0 / (1.0 + np.exp(-self.raw_score(x)))

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        save_file(
            {name: np.ascontiguousarray(getattr(self, name)) for name in ARRAYS},
            folder / WEIGHTS_FILE,
        )
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


PROBE_ROWS = 256  # rows scored both ways before the compiled walk is trusted
_NO_CATEGORIES = np.zeros((0, 8), np.uint32)  # bitsets of categorical splits: there are none
# The fields of scikit-learn's node record that its walk reads.
_WALKED = {
    "value",
    "feature_idx",
    "num_threshold",
    "missing_go_to_left",
    "left",
    "right",
    "is_leaf",
}


@cache
def _compiled_walk() -> tuple[Callable, np.dtype] | None:
    """scikit-learn's compiled walk of one tree over rows of raw values, and its node record;
    None where the installed version has not got them as this module expects (both are private
    to scikit-learn: a new version may change them, which the probe in `_compiled_tables` and
    `tests/test_trees.py` would tell)."""
    try:
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    except ImportError:
        return None
    if not _WALKED | {"is_categorical"} <= set(PREDICTOR_RECORD_DTYPE.names or ()):
        return None
    return _predict_from_raw_data, PREDICTOR_RECORD_DTYPE


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
