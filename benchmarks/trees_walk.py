"""The trees' walk: numpy in lockstep, 4,096 rows at a time (before 2026-12-07) and `BATCH_WALKS`
(row, tree) walks at a time (the fallback now), against scikit-learn's compiled walk on one thread
(what scores now, `TreeEnsemble.raw_score`).

    python benchmarks/trees_walk.py [--rows 100000] [--trees 200,500] [--rounds 3]

Fits scikit-learn's boosting on synthetic pair-like data (27 columns, a few missing) to exactly
each number of trees, exports it, and times each walk in alternating rounds of this one process.
Prints the CPU seconds of each and the ratios to the first; the scores must agree (1e-9). Run by
hand, not by pytest.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from matching_cli.model.tree_walk import BATCH_WALKS
from matching_cli.model.trees import export

BEFORE_ROWS = 4096  # the numpy walker's batch until 2026-12-07


def synthetic(rows: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 27))
    y = (x[:, 0] + 0.5 * x[:, 1] * x[:, 2] + rng.normal(size=rows) > 0).astype(int)
    x[rng.random(x.shape) < 0.002] = np.nan
    return x, y


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=100_000)
    p.add_argument("--trees", default="200,500")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    x_fit, y_fit = synthetic(20_000, 0)
    x, _ = synthetic(args.rows, 1)
    print(f"{args.rows:,} rows; CPU seconds, median of {args.rounds}")
    for n_trees in map(int, args.trees.split(",")):
        model = HistGradientBoostingClassifier(
            max_iter=n_trees, early_stopping=False, random_state=0
        ).fit(x_fit, y_fit)
        ensemble = export(model)
        walks = {
            "numpy, 4096 rows": partial(ensemble.numpy_raw_score, x, BEFORE_ROWS),
            f"numpy, {BATCH_WALKS:,} walks": partial(ensemble.numpy_raw_score, x),
            "compiled": partial(ensemble.raw_score, x),
        }
        times: dict[str, list[float]] = {name: [] for name in walks}
        scores = {}
        for _ in range(args.rounds):
            for name, walk in walks.items():
                clock = time.process_time()
                scores[name] = walk()
                times[name].append(time.process_time() - clock)
        first = next(iter(walks))
        for name in walks:
            assert np.allclose(scores[name], scores[first], rtol=0, atol=1e-9), name
        base = float(np.median(times[first]))
        shown = ", ".join(
            f"{name} {np.median(t):.2f} s ({base / np.median(t):.2f}x)" for name, t in times.items()
        )
        print(f"{n_trees} trees: {shown}")


if __name__ == "__main__":
    main()
