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
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from matching_cli.choices import DeviceKind, StopReason, check_device
from matching_cli.data.prepare import PairSet, Prepared
from matching_cli.data.tables import read_rows, shared_rows
from matching_cli.errors import DeviceError
from matching_cli.model.callbacks import Callback, EpochStats, FitState
from matching_cli.model.metrics import average_precision, pr_auc
from matching_cli.model.scoring import autocast, score_pairs
from matching_cli.settings import TrainSettings

if TYPE_CHECKING:  # the loop itself stays free of rich
    from matching_cli.progress import Reporter, Task

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


def items_to_device(matrix: np.ndarray, device: torch.device) -> torch.Tensor:
    """The item matrix as a tensor on the device: on a CPU, where it is mapped, the map itself
    (`shared_rows`: shared with the scoring processes and the page cache, not copied; reading
    the real size's 1.8 GB took 5 s of every `train` and `evaluate`), elsewhere read and moved
    there."""
    if device.type == "cpu":
        return torch.from_numpy(shared_rows(matrix))
    return torch.from_numpy(read_rows(matrix)).to(device)


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


class Shard:
    """This process's share of training: all of it, when it trains alone.

    `matching_cli.scale.distributed.ProcessShard` is the share of one of several processes: a slice
    of every batch, gradients averaged by DistributedDataParallel, figures agreed between them."""

    rank, processes = 0, 1
    device: torch.device | None = None  # a process of several: the device it was given

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as the training step calls it."""
        return model

    def take(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's rows of a batch of pair indices."""
        return batch

    def total(self, value: torch.Tensor) -> torch.Tensor:
        """The sum of `value` over the processes."""
        return value

    def from_main(self, *values: float) -> tuple[float, ...]:
        """The first process's values, so that every process decides alike."""
        return values

    def stop_flag(self) -> StopFlag:
        """A flag that stops every process after the same batch."""
        return StopFlag()


def train_one_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    items: torch.Tensor,
    pairs: DevicePairs,
    batch_size: int,
    generator: torch.Generator,
    callbacks: list[Callback],
    stop: StopFlag,
    shard: Shard | None = None,
) -> float:
    """One pass over `pairs` in batches of `batch_size` (over all processes): the mean loss."""
    shard = shard or Shard()
    model.train()
    loss_fn = nn.BCEWithLogitsLoss(reduction="sum")
    order = torch.randperm(len(pairs), generator=generator, device="cpu").to(items.device)
    total, seen = torch.zeros((), device=items.device), torch.zeros((), device=items.device)
    for start in range(0, len(pairs), batch_size):
        batch = order[start : start + batch_size]
        index = shard.take(batch)
        features = None if pairs.features is None else pairs.features[index]
        with autocast(items.device):
            logits = model(items[pairs.left[index]], items[pairs.right[index]], features)
        summed = loss_fn(logits.float(), pairs.target[index])
        # The mean over the whole batch (sum / n is how torch takes a mean): DDP averages the
        # processes' gradients, so each scales its share's sum by their number.
        loss = summed / len(batch) * shard.processes
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += summed.detach()
        seen += len(index)
        for callback in callbacks:
            callback.on_batch_end(len(index), loss.detach())
        if stop:
            break
    return float(shard.total(total)) / max(float(shard.total(seen)), 1.0)


def validate(
    model: nn.Module, items: torch.Tensor, pairs: DevicePairs
) -> tuple[float, float, float]:
    """Loss, trapezoid PR-AUC and average precision on the validation pairs."""
    logits = score_pairs(model, items, pairs.left, pairs.right, pairs.features)
    if not bool(torch.isfinite(logits).all()):  # diverged: the metrics cannot rank NaN
        return float("nan"), float("nan"), float("nan")
    return logit_metrics(logits, pairs.target)


def logit_metrics(logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float, float]:
    """Loss, trapezoid PR-AUC and average precision of match logits against 0/1 targets (the
    MLP's validation each epoch, the trees' at each stage of their history)."""
    loss = float(nn.functional.binary_cross_entropy_with_logits(logits, target))
    target, score = target.cpu().numpy(), torch.sigmoid(logits).cpu().numpy()
    return loss, pr_auc(target, score), average_precision(target, score)


def fit(
    model: nn.Module,
    data: DeviceData,
    settings: TrainSettings,
    callbacks: list[Callback],
    stop: StopFlag,
    state: FitState | None = None,
    optimizer: torch.optim.Optimizer | None = None,
    shard: Shard | None = None,
) -> FitState:
    """Train with early stopping on validation average precision; the best weights are loaded at
    the end. (Not the trapezoid PR-AUC: a constant score gets (1 + positive share) / 2 from it.)

    `settings.batch_size` is each process's: a batch is that many pairs from every process."""
    state = state or FitState()
    shard = shard or Shard()
    optimizer = optimizer or make_optimizer(model, settings)
    trained = shard.wrap(model)
    train, val = data.splits["train"], data.splits["val"]
    batch_size = settings.batch_size * shard.processes
    batches = -(-len(train) // batch_size)
    for callback in callbacks:
        callback.on_train_start(settings.epochs, batches)
    while state.epoch < settings.epochs and not stop and not state.stopped:
        epoch = state.epoch + 1
        # Seeding per epoch makes a resumed run draw the same batches and dropout as an unbroken one;
        # every process draws the same batches, and dropout of its own.
        epoch_seed = settings.seed * 100_003 + epoch
        torch.manual_seed(epoch_seed * shard.processes + shard.rank)
        generator = torch.Generator().manual_seed(epoch_seed)
        started = time.perf_counter()
        train_loss = train_one_epoch(
            trained, optimizer, data.items, train, batch_size, generator, callbacks, stop, shard
        )
        seconds = time.perf_counter() - started
        if stop:  # the epoch is incomplete: it neither counts nor checkpoints
            break
        val_loss, val_auc, val_ap = shard.from_main(
            *(validate(model, data.items, val) if math.isfinite(train_loss) else (train_loss,) * 3)
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
    """Epoch and batch bars through a Reporter; the loss is read a few times a second at most.

    After the last epoch the batch bar goes away rather than restart at 0 (the job then shows
    its own stage, testing and saving)."""

    def __init__(self, reporter: Reporter, epochs_done: int = 0) -> None:
        self.reporter = reporter
        self.epochs_done = epochs_done  # a resumed run's finished epochs
        self._last_read = 0.0

    def on_train_start(self, epochs: int, batches_per_epoch: int) -> None:
        self.epochs = self.reporter.task("epochs", total=epochs, unit="epochs")
        self.epochs.advance(self.epochs_done)
        self.total_epochs, self.batches_total = epochs, batches_per_epoch
        self.batches = self._batch_task(self.epochs_done + 1)

    def _batch_task(self, epoch: int) -> Task:
        self._batches_name = f"epoch {epoch}/{self.total_epochs} batches"
        return self.reporter.task(self._batches_name, total=self.batches_total, unit="batches")

    def on_batch_end(self, pairs: int, loss: torch.Tensor) -> None:
        self.batches.advance(1)
        now = time.perf_counter()
        if now - self._last_read > 0.25:
            self._last_read = now
            self.batches.update(description=f"{self._batches_name}  loss {float(loss):.4f}")

    def on_epoch_end(self, stats: EpochStats, state: FitState) -> None:
        self.epochs.advance(1)
        self.epochs.update(
            description=f"epochs  val AP {stats.val_ap:.4f}  {stats.pairs_per_s:,.0f} pairs/s"
        )
        self.batches.close()
        if state.epoch < self.total_epochs and not state.stopped:
            self.batches = self._batch_task(state.epoch + 1)
        else:
            self.epochs.close()
