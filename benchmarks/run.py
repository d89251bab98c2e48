"""Benchmark the original project's data path against `matching`'s, on the same generated data.

    python benchmarks/run.py --pairs 100000 --device cpu --threads 1,2

Each stage runs in a fresh process (its peak memory is its own); the comparison of training and
evaluation runs both paths interleaved in one process. Prints one table; see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare
import report
import stages

REAL_PAIRS = 1_168_516


def _ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--pairs",
        type=int,
        default=REAL_PAIRS,
        help="labelled pairs to generate (default: the real size)",
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N (default: cpu)")
    p.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="repeats of the cheap measurements; medians are shown",
    )
    p.add_argument(
        "--threads", default="", help="torch threads, e.g. 1,2 (default: torch's default)"
    )
    p.add_argument(
        "--orig-batches",
        type=int,
        default=200,
        help="batches timed of the original training (extrapolated)",
    )
    p.add_argument(
        "--orig-eval-pairs",
        type=int,
        default=50_000,
        help="pairs scored by the original evaluation",
    )
    p.add_argument(
        "--batches",
        default=None,
        help="extra project batch sizes (default: 16384,65536 on cuda, none on cpu)",
    )
    p.add_argument(
        "--big-pairs", type=int, default=10_000_000, help="pairs of the big predict file (0: skip)"
    )
    p.add_argument(
        "--fit-epochs",
        type=int,
        default=None,
        help="epochs of a full `fit` per --fit-batches (default: 20 on cuda, 0 on cpu)",
    )
    p.add_argument(
        "--fit-batches",
        default=None,
        help="batch sizes for --fit-epochs (default: the project's, plus --batches)",
    )
    p.add_argument(
        "--fit-lrs", default=None, help="learning rates for --fit-batches (default: the project's)"
    )
    p.add_argument(
        "--limit-seconds", type=float, default=3.0, help="seconds per compute-limit measurement"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the generated data")
    p.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="where data goes, and is kept (default: a new folder in /tmp, deleted at the end)",
    )
    p.add_argument("--keep", action="store_true", help="keep the working folder")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this file")
    p.add_argument(
        "--json", type=Path, default=None, help="write the raw measurements to this file"
    )
    return p.parse_args(argv)


def run_stage(name: str, fn, *args):  # type: ignore[no-untyped-def]
    """`fn(*args)` in a fresh process, so that its peak memory is its own."""
    started = time.perf_counter()
    print(f"[{time.strftime('%H:%M:%S')}] {name} ...", file=sys.stderr, flush=True)
    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as pool:
        result = pool.submit(fn, *args).result()
    print(
        f"[{time.strftime('%H:%M:%S')}] {name}: {time.perf_counter() - started:.0f} s",
        file=sys.stderr,
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    cuda = args.device.startswith("cuda")
    threads: list[int | None] = _ints(args.threads) or [None]
    extra = _ints(args.batches) if args.batches is not None else ([16384, 65536] if cuda else [])
    default_batch = stages.TrainSettings().for_device(args.device.split(":")[0]).batch_size
    configs = [("concat", 256), ("concat", default_batch), ("symmetric", default_batch)]
    configs += [(f, b) for b in extra for f in ("concat", "symmetric")]
    fit_epochs = args.fit_epochs if args.fit_epochs is not None else (20 if cuda else 0)
    fit_batches = _ints(args.fit_batches) if args.fit_batches else [default_batch, *extra]
    fit_lrs = (
        [float(x) for x in args.fit_lrs.split(",")] if args.fit_lrs else [None] * len(fit_batches)
    )

    work = args.workdir or Path(tempfile.mkdtemp(prefix="matching-bench-", dir="/tmp"))
    data, prepared = work / "data", work / "prepared"
    data.mkdir(parents=True, exist_ok=True)
    results: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "configs": configs}

    def stage(key: str, name: str, fn, *inputs) -> None:  # type: ignore[no-untyped-def]
        """A stage run, its result kept, and the JSON written at once: a run cut short (a time
        limit on a lent GPU machine) leaves the stages it finished."""
        results[key] = run_stage(name, fn, *inputs)
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))

    try:
        stage("generate", "generate", stages.generate_data, str(data), args.pairs, args.seed)
        stage(
            "pair_files",
            "pair files",
            stages.write_pair_files,
            str(data),
            str(work),
            args.big_pairs,
            args.seed,
        )
        stage("baseline", "baseline", stages.baseline, args.device)
        stage(
            "prepare_embeddings",
            "prepare (embeddings only)",
            stages.prepare_project,
            str(data),
            str(work / "prepared-embeddings"),
            False,
        )
        stage("prepare", "prepare", stages.prepare_project, str(data), str(prepared))
        stage(
            "compare",
            "compare",
            compare.compare,
            str(data),
            str(prepared),
            args.device,
            threads,
            args.repeats,
            args.orig_batches,
            args.orig_eval_pairs,
            configs,
            args.limit_seconds,
        )
        pairs_file, csv = str(work / "pairs.parquet"), str(work / "scores.csv")
        stage(
            "predict_original",
            "predict (original)",
            stages.predict_original,
            str(data),
            pairs_file,
            csv,
            args.device,
            threads[-1],
        )
        stage(
            "predict",
            "predict",
            stages.predict_project,
            str(prepared),
            pairs_file,
            csv,
            args.device,
            threads[-1],
            ["concat", "symmetric"],
        )
        if args.big_pairs:
            stage(
                "predict_big",
                "predict (big file)",
                stages.predict_project,
                str(prepared),
                str(work / "pairs_big.parquet"),
                csv,
                args.device,
                threads[-1],
                ["symmetric"],
            )
        if fit_epochs:
            stage(
                "fit",
                "fit",
                stages.fit_project,
                str(prepared),
                args.device,
                fit_batches,
                fit_lrs,
                fit_epochs,
                threads[-1],
            )
    finally:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2))
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    table = report.render(results, args.device)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")


if __name__ == "__main__":
    main()
