"""Follow-up measurements for the targets run.py reports missed, on data that run.py kept.

    python benchmarks/run.py --workdir /tmp/bench --keep ...   # data/, prepared/, pairs.parquet
    python benchmarks/fixes.py --workdir /tmp/bench --threads 1,2

1. Original load against `matching prepare`, alternating in fresh processes, so that the ratio
   is of the same minutes (prepare is a long single operation: run.py times it once).
2. Evaluation pairs/s per batch size (`score_pairs` on the validation split).
3. Predict (pairs file -> CSV) per evaluation batch size, alternating in one process.
4. The training compute limit at batch 4096 with and without dropout: what drawing the random
   mask costs on a CPU.

Batch sizes are tried by monkeypatching `score_pairs` inside this benchmark's own processes.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stages
from run import run_stage

BATCHES = (1024, 4096, 16384, 65536)


def _with_batch(module, batch: int):  # type: ignore[no-untyped-def]
    """Make `module.score_pairs` use `batch`; returns the function to put back."""
    original = module.score_pairs
    module.score_pairs = functools.partial(original, batch_size=batch)
    return original


def eval_batches(prepared_dir: str, threads: list[int | None], repeats: int) -> dict:
    from matching_cli.data.prepare import load_prepared
    from matching_cli.model.train import to_device

    prepared = load_prepared(stages.store(prepared_dir))
    data = to_device(prepared, torch.device("cpu"))
    val = data.splits["val"]
    dims = [b.dim for b in prepared.items.blocks]
    out: dict = {}
    for _ in range(repeats):
        for t in threads:
            label = str(stages.set_threads(t))
            for f in ("concat", "symmetric"):
                model = stages.new_model(f, torch.device("cpu"), dims)
                for batch in BATCHES:
                    original = _with_batch(stages, batch)
                    try:
                        rate = stages.project_eval(model, data.items, val)
                    finally:
                        stages.score_pairs = original
                    found = out.setdefault(label, {}).setdefault(f, {})
                    found.setdefault(str(batch), []).append(rate)
    return out


def predict_batches(
    prepared_dir: str, pairs_path: str, out_path: str, threads: list[int | None], repeats: int
) -> dict:
    import matching_cli.predict as predict
    from matching_cli.data.prepare import load_prepared

    items = load_prepared(stages.store(prepared_dir)).items
    model = stages.new_model("symmetric", torch.device("cpu"), [b.dim for b in items.blocks])
    out: dict = {}
    for _ in range(repeats):
        for t in threads:
            label = str(stages.set_threads(t))
            for batch in (4096, 16384, 65536):
                original = predict.predict_proba
                predict.predict_proba = functools.partial(original, batch_size=batch)
                try:
                    started = time.perf_counter()
                    summary = predict.predict_file(
                        model, items, torch.device("cpu"), Path(pairs_path), Path(out_path)
                    )
                    rate = summary.written / (time.perf_counter() - started)
                finally:
                    predict.predict_proba = original
                out.setdefault(label, {}).setdefault(str(batch), []).append(rate)
    Path(out_path).unlink(missing_ok=True)
    return out


def dropout_share(threads: list[int | None], repeats: int, seconds: float) -> dict:
    from matching_cli.model.network import ModelConfig, PairClassifier

    out: dict = {}
    for _ in range(repeats):
        for t in threads:
            label = str(stages.set_threads(t))
            for f in ("concat", "symmetric"):
                for dropout in (0.1, 0.0):
                    model = PairClassifier(
                        ModelConfig(block_dims=(64, 128), pair_features=f, dropout=dropout)
                    )
                    rate = stages.train_limit(model, 4096, torch.device("cpu"), seconds)
                    out.setdefault(label, {}).setdefault(f"{f}, dropout {dropout}", []).append(rate)
    return out


def _rates(by_key: dict) -> str:
    return "  ".join(f"{k}: {statistics.median(v) / 1e3:.1f}k" for k, v in by_key.items())


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", type=Path, required=True, help="a folder kept by run.py --keep")
    p.add_argument("--threads", default="", help="e.g. 1,2 (default: torch's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prepare-rounds", type=int, default=2, help="rounds of load and prepare")
    p.add_argument("--skip", default="", help="sections to skip, e.g. 1,3")
    args = p.parse_args()
    threads = [int(x) for x in args.threads.split(",") if x] or [None]
    skip = {int(x) for x in args.skip.split(",") if x}
    data, prepared = str(args.workdir / "data"), str(args.workdir / "prepared")

    if 1 not in skip:
        print("1. original load and prepare, alternating, one fresh process each", flush=True)
        scratch = str(args.workdir / "prepared_fixes")
        for i in range(args.prepare_rounds):
            for name, fn, fn_args in (
                ("original load", stages.load_original, (data,)),
                ("prepare", stages.prepare_project, (data, scratch)),
            ):
                r = run_stage(name, fn, *fn_args)
                print(f"   [{i + 1}] {name:14s} {r['seconds']:6.1f} s  peak {r['peak_mb']:,.0f} MB")
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    if 2 not in skip:
        print("2. score_pairs pairs/s by evaluation batch (CPU, median of repeats)", flush=True)
        for label, by_model in run_stage(
            "eval batches", eval_batches, prepared, threads, args.repeats
        ).items():
            for f, by_batch in by_model.items():
                print(f"   [{label} thr] {f:9s} {_rates(by_batch)}")
    pairs = args.workdir / "pairs.parquet"
    if 3 not in skip and pairs.is_file():
        print(
            f"3. predict {pairs.name} -> CSV (symmetric), pairs/s by evaluation batch", flush=True
        )
        csv = str(args.workdir / "fixes.csv")
        for label, by_batch in run_stage(
            "predict batches", predict_batches, prepared, str(pairs), csv, threads, args.repeats
        ).items():
            print(f"   [{label} thr] {_rates(by_batch)}")
    if 4 not in skip:
        print("4. training compute limit at batch 4096, with and without dropout", flush=True)
        for label, rates in run_stage("dropout", dropout_share, threads, args.repeats, 3.0).items():
            print(f"   [{label} thr] {_rates(rates)}")


if __name__ == "__main__":
    main()
