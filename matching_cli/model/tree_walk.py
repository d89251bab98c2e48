"""Walking the exported trees (`trees.TreeEnsemble`) over rows of inputs, two ways.

scikit-learn's compiled walk (`_predict_from_raw_data`, private to it) where the installed version
has it as expected and scores probe rows as numpy does: 1.8-2.1x less CPU than numpy's lockstep
walk (`benchmarks/trees_walk.py`), which scores where the compiled one is missing.
The compiled walk runs on as many threads as scikit-learn's own predictions here, on one in a
forked process: a process forked after its parent ran an OpenMP team hangs in one of its own (GNU
OpenMP). Fitting the trees starts a team, and `predict` and `match` score in forked workers, one a
core; `train` and `evaluate` score here.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING

import numpy as np

from matching_cli.workers import available_cores

if TYPE_CHECKING:
    from matching_cli.model.trees import TreeEnsemble

log = logging.getLogger(__name__)
_forked = False  # set in a forked process (below): its compiled walks keep to one thread


def _in_forked_process() -> None:
    global _forked
    _forked = True


os.register_at_fork(after_in_child=_in_forked_process)


def _walk_threads() -> int:
    """One in a forked process; elsewhere the count scikit-learn takes for its own predictions
    (OMP_NUM_THREADS and a container's CPU quota heeded), or every core where it has none."""
    if _forked:
        return 1
    try:
        from sklearn.utils._openmp_helpers import _openmp_effective_n_threads
    except ImportError:
        return available_cores()
    return _openmp_effective_n_threads()


# (row, tree) walks taken a step at once by numpy. The walk's arrays (8 bytes a walk) then stay
# in the CPU's caches: 2^18 walks scored 1.4-1.5x faster than 4096 rows did (206 and 473 trees:
# 4096 rows are 0.8M and 1.9M walks); 2^16-2^18 were alike, 2^19 as slow as 4096 rows.
BATCH_WALKS = 1 << 18
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
    "is_categorical",
}


@cache
def compiled_walk() -> tuple[Callable, np.dtype] | None:
    """scikit-learn's compiled walk of one tree over rows of raw values, and its node record;
    None where the installed version has not got them as this module expects (both are private
    to scikit-learn: a new version may change them, which the probe in `compiled_tables` and
    `tests/test_trees.py` would tell)."""
    try:
        from sklearn.ensemble._hist_gradient_boosting._predictor import _predict_from_raw_data
        from sklearn.ensemble._hist_gradient_boosting.common import PREDICTOR_RECORD_DTYPE
    except ImportError:
        return None
    if not set(PREDICTOR_RECORD_DTYPE.names or ()) >= _WALKED:
        return None
    return _predict_from_raw_data, PREDICTOR_RECORD_DTYPE


def compiled_tables(trees: TreeEnsemble) -> list[np.ndarray] | None:
    """Each tree's nodes as scikit-learn's compiled walk reads them (children numbered within
    the tree); None where this scikit-learn has no such walk, or where it does not give what
    numpy's walk gives on probe rows (values near the thresholds, some missing)."""
    compiled = compiled_walk()
    if compiled is None:
        return None
    _, record = compiled
    ends = np.append(trees.roots[1:], len(trees.feature))[: len(trees.roots)]
    tables = []
    for root, end in zip(trees.roots, ends, strict=True):
        nodes, leaf = slice(root, end), trees.is_leaf[root:end]
        table = np.zeros(end - root, record)  # is_categorical 0: every split is numeric
        table["value"] = trees.value[nodes]
        table["feature_idx"] = trees.feature[nodes]
        table["num_threshold"] = trees.threshold[nodes]
        table["missing_go_to_left"] = trees.missing_left[nodes]
        table["is_leaf"] = leaf
        table["left"] = np.where(leaf, 0, trees.left[nodes] - root)
        table["right"] = np.where(leaf, 0, trees.right[nodes] - root)
        tables.append(table)
    rng = np.random.default_rng(0)
    shape = (PROBE_ROWS, trees.n_features)
    probe = rng.choice(trees.threshold, shape) + rng.normal(0, 1e-3, shape)
    probe[rng.random(shape) < 0.1] = np.nan
    try:
        compiled_scores = compiled_stages(trees, tables, probe, np.array([len(tables)]))[0]
    except (TypeError, ValueError):  # called otherwise in this version
        compiled_scores = np.full(PROBE_ROWS, np.nan)
    if not np.allclose(compiled_scores, trees.numpy_raw_score(probe), rtol=0, atol=1e-9):
        log.warning(
            "scikit-learn's compiled tree walk scores probe rows otherwise than numpy's "
            "walk: the trees are walked by numpy (about twice the CPU time)"
        )
        return None
    return tables


def compiled_stages(
    trees: TreeEnsemble, tables: list[np.ndarray], x: np.ndarray, stages: np.ndarray
) -> np.ndarray:
    """(len(stages), n): the log-odds of the first stages[i] trees, by scikit-learn's compiled
    walk, a tree over all rows at a time."""
    walk, _ = compiled_walk()
    out = np.empty((len(stages), len(x)), dtype=np.float64)
    summed, leaf = np.full(len(x), trees.baseline), np.empty(len(x))
    stage_of = {int(n): k for k, n in enumerate(stages)}
    if 0 in stage_of:
        out[stage_of[0]] = summed
    no_categories = np.zeros(trees.n_features, np.uint32)  # the map of categorical features
    threads = _walk_threads()
    for n, table in enumerate(tables, start=1):
        walk(table, x, _NO_CATEGORIES, _NO_CATEGORIES, no_categories, threads, leaf)
        summed += leaf
        if n in stage_of:
            out[stage_of[n]] = summed
    return out


def numpy_stages(
    trees: TreeEnsemble, x: np.ndarray, stages: np.ndarray, batch_rows: int | None = None
) -> np.ndarray:
    """`compiled_stages` by numpy: all trees walked in lockstep, `batch_rows` rows at a time
    (BATCH_WALKS walks by default)."""
    out = np.empty((len(stages), len(x)), dtype=np.float64)
    batch_rows = batch_rows or max(1, BATCH_WALKS // len(trees.roots))
    last = len(stages) == 1 and stages[0] == len(trees.roots)  # all trees: a sum, no running one
    for start in range(0, len(x), batch_rows):
        rows = x[start : start + batch_rows]
        leaves = _leaf_values(trees, rows)
        summed = leaves.sum(axis=1)[None] if last else np.cumsum(leaves, axis=1)[:, stages - 1].T
        out[:, start : start + len(rows)] = trees.baseline + summed
    return out


def _leaf_values(trees: TreeEnsemble, rows: np.ndarray) -> np.ndarray:
    """(len(rows), trees): the value of the leaf each row reaches in each tree. Each step moves
    only the walks not yet on a leaf: most trees are far shallower than the deepest, and walking
    every (row, tree) to the deepest depth took 3x as long."""
    n_trees = len(trees.roots)
    flat = rows.ravel()
    node = np.tile(trees.roots, len(rows))  # walk k: row k // n_trees, tree k % n_trees
    walking = np.flatnonzero(~trees.is_leaf[node])
    while len(walking):
        at = node[walking]
        value = flat[walking // n_trees * trees.n_features + trees.feature[at]]
        go_left = np.where(np.isnan(value), trees.missing_left[at], value <= trees.threshold[at])
        node[walking] = np.where(go_left, trees.left[at], trees.right[at])
        walking = walking[~trees.is_leaf[node[walking]]]
    return trees.value[node].reshape(len(rows), n_trees)
