"""What the training loop tells its callbacks (progress, MLflow, checkpoints), and the state a
checkpoint holds. Free of torch at import time, so that `tracking` (and `matching promote`) need
not load it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from matching_cli.choices import StopReason

if TYPE_CHECKING:
    import torch


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_pr_auc: float
    seconds: float
    pairs_per_s: float
    # Average precision: what picks the best epoch (older checkpoints lack it).
    val_ap: float = float("nan")

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
