"""Candidate fixes for the misses, measured by monkeypatching `matching_cli` in this process only.

    python benchmarks/run.py --workdir /tmp/bench --keep ...   # data, prepared/, pair files
    python benchmarks/fixes.py --workdir /tmp/bench --threads 1,2

1. Prepare: `data._vectors` sums vectors with `np.add.at` whenever a row is null (the main picture
   column always has some), where a plain scatter does when no row holds two vectors; and
   `_fill_block` decodes row groups one after the other on one core, where two threads can.
   Alternates with the original load, so that the ratio is of the same minutes.
2. Evaluation batch: `score_pairs` uses EVAL_BATCH = 65536 everywhere; on a CPU such a batch leaves
   the caches (each activation is 64 MB) and runs slower than a small one. Pairs/s per batch size.
3. Predict with a small evaluation batch, and with the item matrix read block by block into the
   one array predict needs (no memory-mapped pages resident beside the copy): pairs/s, peak memory.
4. Dropout on the CPU: the share of a training step spent drawing its random mask.
"""

from __future__ import annotations

import argparse
import functools
import shutil
import statistics
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import stages
from run import run_stage

BATCHES = (1024, 4096, 16384, 65536)


def eval_batches(prepared_dir: str, threads: list[int | None], repeats: int) -> dict:
    from matching_cli.prepare import load_prepared
    from matching_cli.train import to_device

    prepared = load_prepared(Path(prepared_dir))
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
                    patched = functools.partial(stages.score_pairs, batch_size=batch)
                    stages.score_pairs, original = patched, stages.score_pairs
                    try:
                        rate = stages.project_eval(model, data.items, val)
                    finally:
                        stages.score_pairs = original
                    out.setdefault(label, {}).setdefault(f, {}).setdefault(str(batch), []).append(
                        rate
                    )
    return out


def _read_blockwise(matrix: np.ndarray, out: np.ndarray, rows: int = 65_536) -> None:
    """Copy `matrix` into `out`; a memory map is read with plain reads, so no mapped page stays resident."""
    if not isinstance(matrix, np.memmap):
        out[...] = matrix
        return
    with open(matrix.filename, "rb") as f:
        f.seek(matrix.offset)
        for start in range(0, len(matrix), rows):
            f.readinto(memoryview(out[start : start + rows]).cast("B"))


class _NumpyReadingBlockwise:
    """numpy, except that predict's `vstack([items, zero_row])` reads the items block by block."""

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(np, name)

    @staticmethod
    def vstack(arrays):  # type: ignore[no-untyped-def]
        matrix, zero = arrays
        out = np.empty((len(matrix) + len(zero), matrix.shape[1]), np.float32)
        _read_blockwise(matrix, out[: len(matrix)])
        out[len(matrix) :] = zero
        return out


def predict_variant(
    prepared_dir: str,
    pairs_path: str,
    out_path: str,
    threads: int | None,
    eval_batch: int | None,
    blockwise: bool,
) -> dict:
    import matching_cli.predict as predict

    if eval_batch:
        predict.score_pairs = functools.partial(predict.score_pairs, batch_size=eval_batch)
    if blockwise:
        predict.np = _NumpyReadingBlockwise()
    return stages.predict_project(prepared_dir, pairs_path, out_path, "cpu", threads, ["symmetric"])


class _AddAtOrScatter:
    """`np.add.at` as `data._vectors` calls it, a plain scatter when no row receives two vectors."""

    @staticmethod
    def at(out, owner, values):  # type: ignore[no-untyped-def]
        if len(owner) < 2 or (np.diff(owner) > 0).all():
            out[owner] = values  # `out` is zeros: adding once is assigning
        else:
            np.add.at(out, owner, values)


class _NumpyScatter:
    add = _AddAtOrScatter()

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(np, name)


class _RowGroupsInParallel:
    """A ParquetFile whose `iter_batches` decodes two row groups at once, each in its own thread."""

    def __init__(self, path: Path):
        import pyarrow.parquet as pq

        self.path, self.pf = path, pq.ParquetFile(path)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.pf, name)

    def iter_batches(self, batch_size: int, columns: list[str]):  # type: ignore[no-untyped-def]
        from concurrent.futures import ThreadPoolExecutor

        import pyarrow.parquet as pq

        def read(group: int):  # type: ignore[no-untyped-def]
            return pq.ParquetFile(self.path).read_row_group(
                group, columns=columns, use_threads=False
            )

        groups = list(range(self.pf.num_row_groups))
        with ThreadPoolExecutor(2) as pool:
            pending = [pool.submit(read, g) for g in groups[:2]]
            following = iter(groups[2:])
            while pending:
                table = pending.pop(0).result()
                for g in following:
                    pending.append(pool.submit(read, g))
                    break
                yield from table.to_batches(max_chunksize=batch_size)


def _fill_block_fixed(items, b, path, table_ids, reporter) -> None:  # type: ignore[no-untyped-def]
    """`data._fill_block` with the fixes: two row groups decoded at once, duplicates found with a
    bincount, rows scattered into a column view (numpy's mixed fancy+slice assignment is slower)."""
    import matching_cli.data as data

    block = items.blocks[b]
    rows = np.searchsorted(items.ids, table_ids)
    duplicated = np.flatnonzero(np.bincount(rows, minlength=len(items.ids)) > 1)
    columns = items.matrix[:, block.offset : block.offset + block.dim]
    start = 0
    for batch in _RowGroupsInParallel(path).iter_batches(data.BATCH_ROWS, [block.name]):
        vectors, present = data._vectors(batch.column(0), path, block.name, block.dim)
        target = rows[start : start + len(vectors)]
        if len(duplicated):
            data._check_duplicates(items, b, target, vectors, present, duplicated, path)
        data.normalise(vectors)
        columns[target] = vectors
        items.missing[target, b] = ~present
        start += len(vectors)


def prepare_variant(data_dir: str, prepared_dir: str, variant: str) -> dict:
    import matching_cli.data as data

    if variant in ("scatter", "all"):
        data.np = _NumpyScatter()
    if variant == "all":
        data._fill_block = _fill_block_fixed
    return stages.prepare_project(data_dir, prepared_dir)


def dropout_share(threads: list[int | None], repeats: int, seconds: float) -> dict:
    from matching_cli.model import ModelConfig, PairClassifier

    out: dict = {}
    for _ in range(repeats):
        for t in threads:
            label = str(stages.set_threads(t))
            for f in ("concat", "symmetric"):
                for dropout in (0.1, 0.0):
                    model = PairClassifier(ModelConfig((64, 128), pair_features=f, dropout=dropout))
                    rate = stages.train_limit(model, 4096, torch.device("cpu"), seconds)
                    out.setdefault(label, {}).setdefault(f"{f}, dropout {dropout}", []).append(rate)
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--workdir", type=Path, required=True, help="a folder kept by run.py --keep")
    p.add_argument("--threads", default="", help="e.g. 1,2 (default: torch's default)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prepare-rounds", type=int, default=2, help="rounds of load/prepare (0: skip)")
    p.add_argument("--skip", default="", help="sections to skip, e.g. 1,3")
    p.add_argument(
        "--eval-batch", type=int, default=4096, help="the CPU evaluation batch to try in predict"
    )
    args = p.parse_args()
    threads = [int(x) for x in args.threads.split(",") if x] or [None]
    prepared, csv = str(args.workdir / "prepared"), str(args.workdir / "fix.csv")
    med = statistics.median
    skip = {int(x) for x in args.skip.split(",") if x}

    print("1. original load and prepare, alternating, one fresh process each")
    for round_ in range(0 if 1 in skip else args.prepare_rounds):
        r = run_stage("original load", stages.load_original, str(args.workdir / "data"))
        print(
            f"   [{round_ + 1}] {'original load':34s} {r['seconds']:6.1f} s  peak {r['peak_mb']:,.0f} MB"
        )
        for variant in ("as is", "scatter", "all"):
            r = run_stage(
                f"prepare {variant}",
                prepare_variant,
                str(args.workdir / "data"),
                str(args.workdir / "prepared_fix"),
                variant,
            )
            name = {
                "as is": "prepare as is",
                "scatter": "prepare, add.at -> scatter",
                "all": "prepare, all fixes",
            }[variant]
            print(
                f"   [{round_ + 1}] {name:34s} {r['seconds']:6.1f} s  peak {r['peak_mb']:,.0f} MB"
            )
    shutil.rmtree(args.workdir / "prepared_fix", ignore_errors=True)

    print("2. score_pairs pairs/s by evaluation batch (CPU, median of repeats)")
    found = (
        {}
        if 2 in skip
        else run_stage("eval batches", eval_batches, prepared, threads, args.repeats)
    )
    for label, by_model in found.items():
        for f, by_batch in by_model.items():
            print(
                f"   [{label} thr] {f:9s} "
                + "  ".join(f"{b}: {med(v) / 1e3:.1f}k" for b, v in by_batch.items())
            )

    print("3. predict (symmetric) -> CSV, one fresh process each")
    for pairs in ("pairs.parquet", "pairs_big.parquet"):
        if 3 in skip or not (args.workdir / pairs).is_file():
            continue
        for name, batch, blockwise in (
            ("as is", None, False),
            (f"eval batch {args.eval_batch}", args.eval_batch, False),
            (f"eval batch {args.eval_batch} + blockwise items", args.eval_batch, True),
        ):
            r = run_stage(
                f"predict {name}",
                predict_variant,
                prepared,
                str(args.workdir / pairs),
                csv,
                threads[-1],
                batch,
                blockwise,
            )
            s = r["symmetric"]
            print(
                f"   {pairs:18s} {name:38s} {s['pairs']:>11,} pairs  {s['seconds']:6.1f} s  "
                f"{s['pairs_per_s'] / 1e3:7.1f}k pairs/s  peak {r['peak_mb']:,.0f} MB"
            )

    print("4. training compute limit at batch 4096 with and without dropout (CPU)")
    found = {} if 4 in skip else run_stage("dropout", dropout_share, threads, args.repeats, 3.0)
    for label, rates in found.items():
        print(
            f"   [{label} thr] " + "  ".join(f"{k}: {med(v) / 1e3:.1f}k" for k, v in rates.items())
        )


if __name__ == "__main__":
    main()
