"""Benchmark stages. run.py runs each in a fresh process, so the peak memory a stage reports is its own.

Every stage returns a plain dict of numbers. Timings synchronise the device before reading the clock.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

import torch

from matching_cli.data.prepare import load_prepared
from matching_cli.model.network import ModelConfig, PairClassifier
from matching_cli.model.scoring import EVAL_BATCH, score_pairs
from matching_cli.model.train import (
    Callback,
    DevicePairs,
    StopFlag,
    make_optimizer,
    resolve_device,
    to_device,
    train_one_epoch,
)
from matching_cli.settings import TrainSettings

try:  # the batch evaluation uses on a CPU (older versions used EVAL_BATCH everywhere)
    from matching_cli.model.scoring import CPU_EVAL_BATCH
except ImportError:  # pragma: no cover
    CPU_EVAL_BATCH = EVAL_BATCH


def eval_batch(device: torch.device) -> int:
    """The batch `score_pairs` uses by default on this device."""
    return CPU_EVAL_BATCH if device.type == "cpu" else EVAL_BATCH


try:  # the loop's own mixed-precision policy, so that the compute limit runs what an epoch runs
    from matching_cli.model.scoring import autocast as _autocast
except ImportError:  # pragma: no cover

    def _autocast(device: torch.device):  # type: ignore[no-untyped-def]
        return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


def store(prepared_dir: str) -> Path:
    """The store `prepare` wrote last under `prepared_dir` (`prepared/<fingerprint>/`); older
    versions wrote it in `prepared_dir` itself."""
    folder = Path(prepared_dir)
    if (folder / "manifest.json").is_file():
        return folder
    return max(folder.glob("*/manifest.json"), key=lambda p: p.stat().st_mtime).parent


def peak() -> dict[str, float]:
    """Peak resident memory of this process so far (and of the GPU, when one is used), in MB."""
    out = {"peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return out


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(device: torch.device) -> float:
    sync(device)
    return time.perf_counter()


def set_threads(threads: int | None) -> int:
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def new_model(features: str, device: torch.device, block_dims=(64, 128)) -> PairClassifier:
    settings = TrainSettings()
    torch.manual_seed(settings.seed)
    config = ModelConfig(
        block_dims=tuple(block_dims), hidden_size=256, num_layers=3, pair_features=features
    )
    return PairClassifier(config).to(device)


# --- stages ----------------------------------------------------------------------------------


def generate_data(out_dir: str, n_pairs: int, seed: int) -> dict:
    from matching_cli.data.synthetic import generate

    started = time.perf_counter()
    summary = generate(Path(out_dir), n_pairs, seed)
    return {
        "seconds": time.perf_counter() - started,
        "pairs": summary.pairs,
        "listings": summary.listings,
        "test_pairs": summary.test_pairs,
    }


def baseline(device_name: str) -> dict:
    """Memory of a process that has imported everything and touched the device: the floor of every stage."""
    import original  # noqa: F401
    import pandas  # noqa: F401

    import matching_cli.predict  # noqa: F401

    device = resolve_device(device_name)
    torch.zeros(1, device=device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return {"device_name": name, "default_threads": torch.get_num_threads(), **peak()}


def load_original(data_dir: str) -> dict:
    import original

    started = time.perf_counter()
    original.load(Path(data_dir))
    return {"seconds": time.perf_counter() - started, **peak()}


def prepare_project(data_dir: str, prepared_dir: str, listing_features: bool = True) -> dict:
    """`prepare` with its defaults, or without the features stage (embeddings only), from the raw
    files (no other store's arrays shared). The peak memory adds the features stage's second
    process (its own peak, measured apart)."""
    from matching_cli.data.prepare import prepare
    from matching_cli.settings import DataSettings

    started = time.perf_counter()
    settings = DataSettings(
        dir=Path(data_dir), prepared_dir=Path(prepared_dir), listing_features=listing_features
    )
    _, report = prepare(settings, share=False)
    return {
        "seconds": time.perf_counter() - started,
        "split": report.method,
        **report.sizes,
        **peak(),
        "worker_peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


def _read_through(path: Path, block: int = 8 * 2**20) -> None:
    """Read a file into the page cache without keeping it in this process's memory."""
    buffer = bytearray(block)
    with path.open("rb") as f:
        while f.readinto(buffer):
            pass


def predict_project(
    prepared_dir: str,
    pairs_path: str,
    out_path: str,
    device_name: str,
    threads: int | None,
    features: list[str],
) -> dict:
    from matching_cli.predict import predict_file

    device = resolve_device(device_name)
    set_threads(threads)
    items = load_prepared(store(prepared_dir)).items
    # predict_file reads the item table itself; with the file in the page cache, as after
    # `matching prepare`, every model's timing starts alike (the original's load is timed apart).
    _read_through(store(prepared_dir) / "items.npy")
    out = {}
    for name in features:
        model = new_model(name, device, [b.dim for b in items.blocks])
        started = clock(device)
        summary = predict_file(model, items, device, Path(pairs_path), Path(out_path))
        seconds = clock(device) - started
        out[name] = {
            "seconds": seconds,
            "pairs": summary.written,
            "pairs_per_s": summary.written / seconds,
        }
        Path(out_path).unlink()
    return out | peak()


def predict_original(
    data_dir: str, pairs_path: str, out_path: str, device_name: str, threads: int | None
) -> dict:
    import original

    device = resolve_device(device_name)
    set_threads(threads)
    started = time.perf_counter()
    text, image = original.load_embeddings(Path(data_dir))
    load_seconds = time.perf_counter() - started
    model = original.make_model(device)
    started = clock(device)
    n = original.predict(model, text, image, Path(pairs_path), Path(out_path), device)
    seconds = clock(device) - started
    Path(out_path).unlink()
    return {
        "load_seconds": load_seconds,
        "seconds": seconds,
        "pairs": n,
        "pairs_per_s": n / seconds,
        **peak(),
    }


def fit_project(
    prepared_dir: str,
    device_name: str,
    batches: list[int],
    lrs: list[float | None],
    epochs: int,
    threads: int | None,
) -> dict:
    """`fit` as `matching train` runs it, per batch size: seconds in the training loop, best val PR-AUC."""
    from matching_cli.model.train import fit

    device = resolve_device(device_name)
    set_threads(threads)
    prepared = load_prepared(store(prepared_dir))
    data = to_device(prepared, device)
    out = {}
    for batch, lr in zip(batches, lrs, strict=True):
        update = {"epochs": epochs, "batch_size": batch, "patience": epochs + 1}
        settings = (
            TrainSettings()
            .for_device(device.type)
            .model_copy(update=update | ({"lr": lr} if lr else {}))
        )
        model = new_model("symmetric", device, [b.dim for b in prepared.items.blocks])
        started = clock(device)
        state = fit(model, data, settings, [], StopFlag())
        out[str(batch)] = {
            "lr": settings.lr,
            "epochs": state.epoch,
            "wall_seconds": clock(device) - started,
            "loop_seconds": sum(s.seconds for s in state.history),
            "best_val_ap": state.best_ap,
            "best_epoch": state.best_epoch,
        }
    return out | peak()


# --- building blocks of the comparison stage (compare.py) -------------------------------------


def project_epoch(
    model: torch.nn.Module,
    items: torch.Tensor,
    pairs: DevicePairs,
    batch: int,
    seed: int,
    side: Callback | None = None,
) -> float:
    """Training pairs/s over one whole epoch of the project's loop.

    `side` is called after each batch to run other measurements in the same minutes; the time it
    reports (`side.seconds`) is taken off the epoch's."""
    optimizer = make_optimizer(model, TrainSettings().for_device("cpu"))
    generator = torch.Generator().manual_seed(seed)
    started = clock(items.device)
    train_one_epoch(
        model, optimizer, items, pairs, batch, generator, [side] if side else [], StopFlag()
    )
    seconds = clock(items.device) - started - (side.seconds if side else 0.0)
    return len(pairs) / seconds


def project_eval(model: torch.nn.Module, items: torch.Tensor, pairs: DevicePairs) -> float:
    """Evaluation pairs/s: logits for every pair, probabilities back on the host."""
    started = clock(items.device)
    torch.sigmoid(score_pairs(model, items, pairs.left, pairs.right)).cpu().numpy()
    return len(pairs) / (clock(items.device) - started)


def _random_batches(batch: int, dim: int, device: torch.device, n: int = 4) -> list:
    g = torch.Generator().manual_seed(0)
    return [
        (
            torch.randn(batch, dim, generator=g).to(device),
            torch.randn(batch, dim, generator=g).to(device),
            (torch.rand(batch, generator=g) < 0.5).float().to(device),
        )
        for _ in range(n)
    ]


def _rate(step, batch: int, device: torch.device, seconds: float) -> float:
    """Pairs/s of `step(i)`, run long enough to take about `seconds` after a short warm-up."""
    started = clock(device)
    for i in range(3):
        step(i)
    per_step = max((clock(device) - started) / 3, 1e-6)
    n = max(5, int(seconds / per_step))
    started = clock(device)
    for i in range(n):
        step(i)
    return n * batch / (clock(device) - started)


def limit_step(model: torch.nn.Module, batch: int, device: torch.device):  # type: ignore[no-untyped-def]
    """One training step of the loop's body on random batches already on the device: no gather, no data path."""
    batches = _random_batches(batch, model.config.item_dim, device)
    optimizer = make_optimizer(model, TrainSettings().for_device("cpu"))
    loss_fn = torch.nn.BCEWithLogitsLoss()
    total = torch.zeros((), device=device)

    def step(i: int) -> None:
        nonlocal total
        model.train()
        a, b, target = batches[i % len(batches)]
        with _autocast(device):
            logits = model(a, b)
        loss = loss_fn(logits.float(), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * batch

    return step


def train_limit(model: torch.nn.Module, batch: int, device: torch.device, seconds: float) -> float:
    """Pairs/s of forward + backward + AdamW step on random batches already on the device."""
    return _rate(limit_step(model, batch, device), batch, device, seconds)


def eval_step(model: torch.nn.Module, device: torch.device, batch: int | None = None):  # type: ignore[no-untyped-def]
    """One forward pass in inference mode on random batches already on the device."""
    batch = batch or eval_batch(device)
    batches = _random_batches(batch, model.config.item_dim, device, n=2)

    @torch.inference_mode()
    def step(i: int) -> None:
        model.eval()
        a, b, _ = batches[i % len(batches)]
        with _autocast(device):
            model(a, b).float()

    return step


def eval_limit(
    model: torch.nn.Module, device: torch.device, seconds: float, batch: int | None = None
) -> float:
    batch = batch or eval_batch(device)
    return _rate(eval_step(model, device, batch), batch, device, seconds)


def write_pair_files(data_dir: str, out_dir: str, big_pairs: int, seed: int) -> dict:
    """The labelled pairs without their target (what a user scores), and `big_pairs` drawn from them."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(Path(data_dir) / "train.parquet", columns=["variantid1", "variantid2"])
    pq.write_table(table, Path(out_dir) / "pairs.parquet")
    out = {"pairs": table.num_rows}
    if big_pairs:
        rng = np.random.default_rng(seed)
        with pq.ParquetWriter(Path(out_dir) / "pairs_big.parquet", table.schema) as writer:
            for start in range(0, big_pairs, 1_000_000):
                take = rng.integers(0, table.num_rows, min(1_000_000, big_pairs - start))
                writer.write_table(table.take(pa.array(take)))
        out["big_pairs"] = big_pairs
    return out
