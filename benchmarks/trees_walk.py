"""The tree walker's batch: 4,096 rows at a time (before) against `BATCH_WALKS` (row, tree) walks.

    python benchmarks/trees_walk.py [--rows 100000] [--trees 200,500] [--rounds 3]

Fits scikit-learn's boosting on synthetic pair-like data (27 columns, a few missing) to exactly
each number of trees, exports it, and times `TreeEnsemble.raw_score` both ways in alternating
rounds of this one process. Prints the CPU seconds of each and the ratio; the scores must be
equal. Run by hand, not by pytest.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier

from matching_cli.model.trees import BATCH_WALKS, export

BEFORE_ROWS = 4096  # the walker's batch until 2026-12-07


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
    print(f"{args.rows:,} rows; BATCH_WALKS {BATCH_WALKS:,}; CPU seconds, median of {args.rounds}")
    for n_trees in map(int, args.trees.split(",")):
        model = HistGradientBoostingClassifier(
            max_iter=n_trees, early_stopping=False, random_state=0
        ).fit(x_fit, y_fit)
        ensemble = export(model)
        times: dict[str, list[float]] = {"before": [], "now": []}
        scores = {}
        for _ in range(args.rounds):
            for name, rows in (("before", BEFORE_ROWS), ("now", None)):
                clock = time.process_time()
                scores[name] = ensemble.raw_score(x, rows)
                times[name].append(time.process_time() - clock)
        assert np.array_equal(scores["before"], scores["now"])
        before, now = (float(np.median(times[k])) for k in ("before", "now"))
        print(
            f"{n_trees} trees: 4096 rows {before:.2f} s, "
            f"{BATCH_WALKS // n_trees} rows ({BATCH_WALKS:,} walks) {now:.2f} s: "
            f"{before / now:.2f}x"
        )


if __name__ == "__main__":
    main()
