"""Best validation PR-AUC of the default model per batch size and learning rate, run by hand.

    python benchmarks/fit_quality.py --prepared prepared --batches 4096,16384 --lrs 0.003,0.006

Each pair (batch, lr) trains `--epochs` epochs with no early stopping, in its own process with one
torch thread, all at once: quality does not depend on the device or on timing, so a CPU answers
whether a GPU's larger batch reaches the same validation PR-AUC. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stages
from run import _ints


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--prepared", type=Path, required=True, help="a folder `matching prepare` wrote")
    p.add_argument("--batches", required=True, help="batch sizes, e.g. 4096,16384")
    p.add_argument("--lrs", required=True, help="one learning rate per batch size")
    p.add_argument("--epochs", type=int, default=20)
    args = p.parse_args()
    batches = _ints(args.batches)
    lrs = [float(x) for x in args.lrs.split(",")]
    if len(batches) != len(lrs):
        p.error("give one learning rate per batch size")
    with ProcessPoolExecutor(len(batches), mp_context=mp.get_context("spawn")) as pool:
        futures = [
            pool.submit(stages.fit_project, str(args.prepared), "cpu", [b], [lr], args.epochs, 1)
            for b, lr in zip(batches, lrs, strict=True)
        ]
        results = [f.result() for f in futures]
    print("| batch | learning rate | best val PR-AUC | at epoch | loop s (1 thread) |")
    print("|---:|---:|---:|---:|---:|")
    for batch, result in zip(batches, results, strict=True):
        r = result[str(batch)]
        print(
            f"| {batch} | {r['lr']:g} | {r['best_val_ap']:.4f} | {r['best_epoch']} "
            f"| {r['loop_seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
