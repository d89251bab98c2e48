"""The comparison stage: both paths' training and evaluation speed, measured in the same minutes.

A shared machine's speed changes from minute to minute, so measurements taken one after the other
give ratios that mean little. Here, on the CPU, the project's epoch runs with a callback that after
its batches also runs a step of the compute limit and, now and then, a batch of the original path;
each is timed apart and its time taken off the epoch's. Evaluation alternates the three in rounds.
On a GPU the loop must not be synchronised every batch, so there they run one after the other.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import original
import torch
from stages import (
    clock,
    eval_batch,
    eval_step,
    limit_step,
    new_model,
    peak,
    project_epoch,
    project_eval,
    set_threads,
    store,
    train_limit,
)
from torch.utils.data import DataLoader

from matching_cli.data.prepare import load_prepared
from matching_cli.model.train import Callback, make_optimizer, resolve_device, to_device
from matching_cli.settings import TrainSettings

WARMUP = 3  # steps of each side measurement left out of its timing


class Alongside(Callback):
    """After project batches: one compute-limit step every `limit_every`, `orig_per_call` original
    batches every `orig_every`."""

    def __init__(
        self,
        limit,
        original_steps,
        limit_every: int,
        orig_every: int,
        orig_per_call: int,
        batch: int,
        device: torch.device,
    ):  # type: ignore[no-untyped-def]
        self.limit, self.original_steps, self.device = limit, original_steps, device
        self.limit_every, self.orig_every, self.batch = limit_every, orig_every, batch
        self.orig_per_call = orig_per_call
        self.seconds = 0.0  # all time spent here, taken off the epoch
        self.calls = {"limit": 0, "original": 0}
        self.timed = {"limit": [0.0, 0], "original": [0.0, 0]}  # seconds, pairs (after warm-up)
        self.batches = 0

    def _run(self, name: str, fn) -> None:  # type: ignore[no-untyped-def]
        started = clock(self.device)
        pairs = fn()
        seconds = clock(self.device) - started
        self.seconds += seconds
        self.calls[name] += 1
        if self.calls[name] > WARMUP:
            self.timed[name][0] += seconds
            self.timed[name][1] += pairs

    def on_batch_end(self, pairs: int, loss: torch.Tensor) -> None:
        self.batches += 1
        if self.limit_every and self.batches % self.limit_every == 0:
            i = self.calls["limit"]
            self._run("limit", lambda: (self.limit(i), self.batch)[1])
        if self.orig_every and self.batches % self.orig_every == 0:
            self._run(
                "original",
                lambda: sum(next(self.original_steps) for _ in range(self.orig_per_call)),
            )

    def rate(self, name: str) -> float | None:
        seconds, pairs = self.timed[name]
        return pairs / seconds if pairs else None


def _original_steps(data: original.OriginalData, device: torch.device):  # type: ignore[no-untyped-def]
    model = original.make_model(device)
    return original.training_steps(
        model, make_optimizer(model, TrainSettings().for_device("cpu")), data, device
    )


def _log(message: str) -> None:
    """Progress on stderr: the stage runs for many minutes at the real size."""
    print(
        f"[{time.strftime('%H:%M:%S')}]   {message} [{torch.get_num_threads()} thr]",
        file=sys.stderr,
        flush=True,
    )


def _loader_rate(data: original.OriginalData, batches: int) -> float:
    """Pairs/s of the original DataLoader alone, no model: the ceiling its Python sets."""
    loader = DataLoader(
        original.PairDataset(data.train, data.text, data.image), original.BATCH_SIZE, shuffle=True
    )
    started, pairs = time.perf_counter(), 0
    for i, (_, target) in enumerate(loader):
        if i == batches:
            break
        pairs += len(target)
    return pairs / (time.perf_counter() - started)


def _train(
    r: dict,
    key: str,
    data,
    device_data,
    dims,
    orig_batches: int,
    seed: int,
    limit_seconds: float,
    interleave: bool,
) -> None:  # type: ignore[no-untyped-def]
    f, batch = key.split("@")
    batch, device = int(batch), device_data.items.device
    train = device_data.splits["train"]
    n_batches = -(-len(train) // batch)
    side = None
    if interleave:
        wanted = orig_batches + WARMUP
        side = Alongside(
            limit_step(new_model(f, device, dims), batch, device),
            _original_steps(data, device),
            limit_every=1 if n_batches < 60 else 2,
            orig_every=max(1, n_batches // wanted),
            orig_per_call=-(-wanted // n_batches),
            batch=batch,
            device=device,
        )
    rate = project_epoch(new_model(f, device, dims), device_data.items, train, batch, seed, side)
    r["train"].setdefault(key, []).append(rate)
    # Alongside an epoch too short to leave batches after the warm-up, measure one after the other.
    limit = side.rate("limit") if side else None
    if limit is None:
        limit = train_limit(new_model(f, device, dims), batch, device, limit_seconds)
    orig = side.rate("original") if side else None
    if orig is None:
        steps = _original_steps(data, device)
        for _ in range(WARMUP):
            next(steps)
        started = clock(device)
        orig = sum(next(steps) for _ in range(orig_batches)) / (clock(device) - started)
    else:
        timed = side.timed["original"][1] // original.BATCH_SIZE
        r["orig_batches"].setdefault(key, []).append(timed)
    r["limit"].setdefault(key, []).append(limit)
    r["orig_train"].setdefault(key, []).append(orig)
    _log(
        f"train {key}: matching {rate:,.0f}, limit {r['limit'][key][-1]:,.0f}, "
        f"original {r['orig_train'][key][-1]:,.0f} pairs/s"
    )


def _evaluate(r: dict, data, device_data, dims, orig_eval_pairs: int, rounds: int) -> None:  # type: ignore[no-untyped-def]
    device, val = device_data.items.device, device_data.splits["val"]
    orig_model = original.make_model(device)
    orig_val = data.val.iloc[:orig_eval_pairs]
    chunk = -(-len(orig_val) // rounds)
    for f in ("concat", "symmetric"):
        model = new_model(f, device, dims)
        limit = eval_step(model, device)
        limit(0)  # warm-up
        project_eval(model, device_data.items, val)
        totals = {"eval": [0.0, 0], "eval_limit": [0.0, 0], "orig_eval": [0.0, 0]}
        for i in range(rounds):
            pairs = len(val)
            totals["eval"][0] += pairs / project_eval(model, device_data.items, val)
            totals["eval"][1] += pairs
            batch = eval_batch(device)
            started, steps = clock(device), max(1, len(val) // batch)
            for s in range(steps):
                limit(s)
            totals["eval_limit"][0] += clock(device) - started
            totals["eval_limit"][1] += steps * batch
            if f == "concat":
                part = original.PairDataset(
                    orig_val.iloc[i * chunk : (i + 1) * chunk], data.text, data.image
                )
                started = clock(device)
                original.score(orig_model, part, device)
                totals["orig_eval"][0] += clock(device) - started
                totals["orig_eval"][1] += len(part)
        _log(f"eval {f}: matching {totals['eval'][1] / totals['eval'][0]:,.0f} pairs/s")
        for name, (seconds, pairs) in totals.items():
            if pairs:
                target = r[name] if name == "orig_eval" else r[name].setdefault(f, [])
                target.append(pairs / seconds)


def compare(
    data_dir: str,
    prepared_dir: str,
    device_name: str,
    threads: list[int | None],
    repeats: int,
    orig_batches: int,
    orig_eval_pairs: int,
    configs: list[tuple[str, int]],
    limit_seconds: float,
) -> dict:
    device = resolve_device(device_name)
    set_threads(threads[-1])
    interleave = device.type == "cpu"

    # The original loads first, so the peak read here is its load alone (plus the imports).
    started = time.perf_counter()
    data = original.load(Path(data_dir))
    out: dict = {"original_load": {"seconds": time.perf_counter() - started, **peak()}}
    started = clock(device)
    prepared = load_prepared(store(prepared_dir))
    device_data = to_device(prepared, device)
    out["project_load_seconds"] = clock(device) - started
    dims = [b.dim for b in prepared.items.blocks]
    out["sizes"] = {
        "original_train": len(data.train),
        "original_val": len(data.val),
        "original_eval_pairs": min(orig_eval_pairs, len(data.val)),
        "project_train": len(device_data.splits["train"]),
        "project_val": len(device_data.splits["val"]),
        "interleaved": interleave,
        "eval_batch": eval_batch(device),
    }

    results: dict = {}
    for repeat in range(repeats):
        for t in threads:
            label = str(set_threads(t))
            r = results.setdefault(
                label,
                {
                    "orig_loader": [],
                    "orig_train": {},
                    "orig_batches": {},
                    "orig_eval": [],
                    "train": {},
                    "limit": {},
                    "eval": {},
                    "eval_limit": {},
                },
            )
            r["orig_loader"].append(_loader_rate(data, max(20, orig_batches // 4)))
            for f, batch in configs:
                _train(
                    r,
                    f"{f}@{batch}",
                    data,
                    device_data,
                    dims,
                    orig_batches,
                    repeat,
                    limit_seconds,
                    interleave,
                )
            _evaluate(r, data, device_data, dims, orig_eval_pairs, rounds=4)
    out["threads"] = results
    return out | {"final": peak()}
