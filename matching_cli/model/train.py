"""The training loop. Data stays on the device as tensors; a batch is gathered by index.

Side effects (progress, MLflow, checkpoints) are callbacks; this module imports neither rich nor mlflow.
"""

from __future__ import annotations

import copy
import logging
import math
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from matching_cli.choices import DeviceKind, StopReason, check_device
from matching_cli.data.prepare import PairSet, Prepared
from matching_cli.data.tables import read_rows
from matching_cli.errors import DeviceError
from matching_cli.model.metrics import average_precision, pr_auc
from matching_cli.model.scoring import autocast, score_pairs
from matching_cli.settings import TrainSettings

if TYPE_CHECKING:  # the loop itself stays free of rich
    from matching_cli.progress import Reporter

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; an explicit device that is absent is an error."""
    mps = getattr(torch.backends, "mps", None)
    mps_ok = bool(mps and mps.is_available())
    try:
        check_device(name)
    except ValueError as e:
        raise DeviceError(f"--device {e}") from None
    if name == DeviceKind.auto:
        return torch.device("cuda" if torch.cuda.is_available() else "mps" if mps_ok else "cpu")
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"--device {name}: CUDA is not available here (torch {torch.__version__}); "
                "use --device cpu or auto"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(
                f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) here"
            )
    elif device.type == "mps" and not mps_ok:
        raise DeviceError(f"--device {name}: MPS is not available here; use --device cpu or auto")
    return device


@dataclass
class DevicePairs:
    left: torch.Tensor
    right: torch.Tensor
    target: torch.Tensor
    features: torch.Tensor | None = None  # (n, f) field features, for a model that reads them

    def __len__(self) -> int:
        return len(self.left)


@dataclass
class DeviceData:
    items: torch.Tensor
    splits: dict[str, DevicePairs]


def items_to_device(matrix: np.ndarray, device: torch.device, zero_rows: int = 0) -> torch.Tensor:
    """The item matrix as a tensor on the device, with `zero_rows` zero rows appended."""
    return torch.from_numpy(read_rows(matrix, zero_rows=zero_rows)).to(device)


def to_device(
    prepared: Prepared, device: torch.device, columns: np.ndarray | None = None
) -> DeviceData:
    """Items and splits on the device; `columns` picks the pair-feature columns a model reads."""
    items = items_to_device(prepared.items.matrix, device)
    splits = {name: pairs_to_device(p, device, columns) for name, p in prepared.splits.items()}
    return DeviceData(items, splits)


def pairs_to_device(
    pairs: PairSet, device: torch.device, columns: np.ndarray | None = None
) -> DevicePairs:
    features = None
    if columns is not None and len(columns):
        features = torch.from_numpy(np.ascontiguousarray(pairs.features[:, columns])).to(device)
    return DevicePairs(
        torch.from_numpy(pairs.left.astype(np.int64)).to(device),
        torch.from_numpy(pairs.right.astype(np.int64)).to(device),
        torch.from_numpy(pairs.target.astype(np.float32)).to(device),
        features,
    )


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_pr_auc: float
    seconds: float
    pairs_per_s: float
    val_ap: float = float(
        "nan"
    )  # average precision: what picks the best epoch (older checkpoints lack it)

    def as_dict(self) -> dict[str, float]:
        return self.__dict__.copy()


class Callback:
    """Hooks the loop calls; override what you need."""

    def on_train_start(self, epochs: int, batches_per_epoch: int) -> None: ...
    def on_batch_end(self, pairs: int, loss: torch.Tensor) -> None:
        """`loss` stays on the device: reading it forces a sync, so do that sparingly."""

    def on_epoch_end(self, stats: EpochStats, state: FitState) -> None: ...


@dataclass
class FitState:
    """Everything needed to continue training: what a checkpoint holds."""

    epoch: int = 0  # epochs completed
    history: list[EpochStats] = field(default_factory=list)
    best_epoch: int = 0
    best_ap: float = -1.0  # validation average precision of the best epoch
    best_weights: dict[str, torch.Tensor] | None = None
    stopped: StopReason | None = None


class StopFlag:
    """Set from a signal handler; the loop stops after the current batch."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    @contextmanager
    def catching(self) -> Iterator[StopFlag]:
        def handle(signum: int, frame: object) -> None:
            log.warning("Got %s: stopping after this batch", signal.Signals(signum).name)
            self.signal = signum

        try:
            previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
        except ValueError:  # not the main thread: nothing to catch
            yield self
            return
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    items: torch.Tensor,
    pairs: DevicePairs,
    batch_size: int,
    generator: torch.Generator,
    callbacks: list[Callback],
    stop: StopFlag,
) -> float:
    model.train()
    loss_fn = nn.BCEWithLogitsLoss()
    order = torch.randperm(len(pairs), generator=generator, device="cpu").to(items.device)
    total, seen = torch.zeros((), device=items.device), 0
    for start in range(0, len(pairs), batch_size):
        index = order[start : start + batch_size]
        features = None if pairs.features is None else pairs.features[index]
        with autocast(items.device):
            logits = model(items[pairs.left[index]], items[pairs.right[index]], features)
        loss = loss_fn(logits.float(), pairs.target[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += loss.detach() * len(index)
        seen += len(index)
        for callback in callbacks:
            callback.on_batch_end(len(index), loss.detach())
        if stop:
            break
    return float(total) / max(seen, 1)


def validate(
    model: nn.Module, items: torch.Tensor, pairs: DevicePairs
) -> tuple[float, float, float]:
    """Loss, trapezoid PR-AUC and average precision on the validation pairs."""
    logits = score_pairs(model, items, pairs.left, pairs.right, pairs.features)
    if not bool(torch.isfinite(logits).all()):  # diverged: the metrics cannot rank NaN
        return float("nan"), float("nan"), float("nan")
    loss = float(nn.functional.binary_cross_entropy_with_logits(logits, pairs.target))
    target, score = pairs.target.cpu().numpy(), torch.sigmoid(logits).cpu().numpy()
    return loss, pr_auc(target, score), average_precision(target, score)


def fit(
    model: nn.Module,
    data: DeviceData,
    settings: TrainSettings,
    callbacks: list[Callback],
    stop: StopFlag,
    state: FitState | None = None,
    optimizer: torch.optim.Optimizer | None = None,
) -> FitState:
    """Train with early stopping on validation average precision; the best weights are loaded at
    the end. (Not the trapezoid PR-AUC: a constant score gets (1 + positive share) / 2 from it.)"""
    state = state or FitState()
    optimizer = optimizer or make_optimizer(model, settings)
    train, val = data.splits["train"], data.splits["val"]
    batches = -(-len(train) // settings.batch_size)
    for callback in callbacks:
        callback.on_train_start(settings.epochs, batches)
    while state.epoch < settings.epochs and not stop and not state.stopped:
        epoch = state.epoch + 1
        # Seeding per epoch makes a resumed run draw the same batches and dropout as an unbroken one.
        torch.manual_seed(settings.seed * 100_003 + epoch)
        generator = torch.Generator().manual_seed(settings.seed * 100_003 + epoch)
        started = time.perf_counter()
        train_loss = train_one_epoch(
            model, optimizer, data.items, train, settings.batch_size, generator, callbacks, stop
        )
        seconds = time.perf_counter() - started
        if stop:  # the epoch is incomplete: it neither counts nor checkpoints
            break
        val_loss, val_auc, val_ap = (
            validate(model, data.items, val) if math.isfinite(train_loss) else (train_loss,) * 3
        )
        if not math.isfinite(val_loss):
            log.warning(
                "epoch %d: the loss diverged (train %s, validation %s) at learning rate %g: "
                "stopping",
                epoch,
                train_loss,
                val_loss,
                settings.lr,
            )
            state.stopped = StopReason.diverged
            break
        stats = EpochStats(
            epoch, train_loss, val_loss, val_auc, seconds, len(train) / seconds, val_ap
        )
        state.epoch, state.history = epoch, [*state.history, stats]
        if val_ap > state.best_ap:
            state.best_epoch, state.best_ap = epoch, val_ap
            state.best_weights = copy.deepcopy(model.state_dict())
        elif epoch - state.best_epoch >= settings.patience:
            state.stopped = StopReason.early_stopping
        log.info(
            "epoch %d/%d  train_loss %.4f  val_loss %.4f  val_ap %.4f  %.1fs  %s pairs/s",
            epoch,
            settings.epochs,
            train_loss,
            val_loss,
            val_ap,
            seconds,
            f"{stats.pairs_per_s:,.0f}",
        )
        for callback in callbacks:
            callback.on_epoch_end(stats, state)
    if stop:
        state.stopped = StopReason.interrupted
    if state.best_weights is not None:
        model.load_state_dict(state.best_weights)
    return state


def make_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)


class ProgressCallback(Callback):
    """Epoch and batch bars through a Reporter; the loss is read a few times a second at most."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self._last_read = 0.0

    def on_train_start(self, epochs: int, batches_per_epoch: int) -> None:
        self.epochs = self.reporter.task("epochs", total=epochs)
        self.batches_total = batches_per_epoch
        self.batches = self.reporter.task("batches", total=batches_per_epoch)

    def on_batch_end(self, pairs: int, loss: torch.Tensor) -> None:
        self.batches.advance(1)
        now = time.perf_counter()
        if now - self._last_read > 0.25:
            self._last_read = now
            self.batches.update(description=f"batches  loss {float(loss):.4f}")

    def on_epoch_end(self, stats: EpochStats, state: FitState) -> None:
        self.epochs.advance(1)
        self.epochs.update(
            description=f"epochs  val AP {stats.val_ap:.4f}  {stats.pairs_per_s:,.0f} pairs/s"
        )
        self.batches.close()
        self.batches = self.reporter.task("batches", total=self.batches_total)
