"""Epoch checkpoints, so that `matching train --resume RUN_ID` continues where a run stopped.

A checkpoint is a safetensors file (model, best-so-far and optimizer tensors) and a JSON file (loop
state, optimizer hyper-parameters, the settings snapshot); written atomically, never pickled.
`save_checkpoint` writes one, `Checkpoint.read` reads one: nothing else opens these files.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from matching_cli.choices import Head
from matching_cli.errors import ModelError
from matching_cli.files import atomic_dir
from matching_cli.model.saved import META as MODEL_META
from matching_cli.model.train import Callback, EpochStats, FitState
from matching_cli.settings import Settings

TENSORS = "state.safetensors"
META = "checkpoint.json"


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: FitState,
    settings: Settings,
) -> None:
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors |= {f"best.{k}": v for k, v in (state.best_weights or {}).items()}
    optim = optimizer.state_dict()
    for index, entries in optim["state"].items():
        tensors |= {f"optim.{index}.{name}": value for name, value in entries.items()}
    meta = {
        "epoch": state.epoch,
        "history": [s.as_dict() for s in state.history],
        "best_epoch": state.best_epoch,
        "best_ap": state.best_ap,
        "param_groups": optim["param_groups"],
        "settings": settings.model_dump(mode="json"),
    }
    with atomic_dir(folder) as staging:
        # save_file would write it owner-only (0600), unlike every other file here.
        contiguous = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        (staging / TENSORS).write_bytes(save(contiguous))
        (staging / META).write_text(json.dumps(meta, indent=2))


@dataclass
class Checkpoint:
    """A stopped run as written: its settings snapshot, read before anything is built, and the
    tensors and loop state, restored into the model and optimizer built from those settings."""

    folder: Path
    meta: dict[str, Any]

    @property
    def settings(self) -> Settings:
        return Settings.from_snapshot(self.meta["settings"])

    @classmethod
    def read(cls, folder: Path) -> Checkpoint:
        if not (folder / META).is_file() or not (folder / TENSORS).is_file():
            if _fitted_trees(folder.parent):
                raise ModelError(
                    f"run {folder.parent.name} fitted gradient-boosted trees (head = trees) in "
                    "one call: there are no epochs to continue; train a new run"
                )
            raise ModelError(
                f"{folder}: no checkpoint to resume from (it is written after each finished epoch)"
            )
        try:
            meta = json.loads((folder / META).read_text())
            Settings.from_snapshot(meta["settings"])
            if not isinstance(meta["epoch"], int):
                raise TypeError("epoch is not a number")
        except (OSError, ValueError, KeyError, TypeError) as e:  # pydantic's error is a ValueError
            reason = str(e).splitlines()[0]
            raise ModelError(
                f"{folder / META}: damaged ({type(e).__name__}: {reason}); the run cannot be "
                "resumed: train a new run (its saved model, if any, still serves)"
            ) from None
        return cls(folder, meta)

    def restore(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> FitState:
        """Load model and optimizer in place; return the loop state to continue from."""
        device = next(model.parameters()).device
        try:
            tensors = load_file(self.folder / TENSORS, device=str(device))
        except (OSError, SafetensorError) as e:
            raise ModelError(
                f"{self.folder / TENSORS}: damaged ({e}); the run cannot be resumed: train a new run"
            ) from None

        def part(prefix: str) -> dict[str, torch.Tensor]:
            return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

        try:
            model.load_state_dict(part("model."))
            optim_state: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in part("optim.").items():
                index, name = key.split(".", 1)
                # AdamW keeps its step count on the CPU unless it runs capturable/fused.
                step = name == "step"
                optim_state.setdefault(int(index), {})[name] = value.cpu() if step else value
            optimizer.load_state_dict(
                {"state": optim_state, "param_groups": self.meta["param_groups"]}
            )
            return FitState(
                epoch=self.meta["epoch"],
                history=[EpochStats(**s) for s in self.meta["history"]],
                best_epoch=self.meta["best_epoch"],
                # Checkpoints written before selection by AP held the epoch's PR-AUC.
                best_ap=self.meta.get("best_ap", self.meta.get("best_pr_auc", -1.0)),
                best_weights=part("best.") or None,
            )
        except (RuntimeError, ValueError, KeyError, TypeError, IndexError) as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ModelError(
                f"{self.folder}: damaged or of another model ({reason}); the run cannot be "
                "resumed: train a new run"
            ) from None


def checkpoint_dir(models_dir: Path, run_id: str) -> Path:
    return models_dir / run_id / "checkpoint"


def _fitted_trees(model_folder: Path) -> bool:
    """Whether the model saved in `model_folder` is the trees head (its model.json says so)."""
    try:
        return json.loads((model_folder / MODEL_META).read_text())["model"]["head"] == Head.trees
    except (OSError, ValueError, KeyError, TypeError):
        return False


class CheckpointCallback(Callback):
    def __init__(
        self,
        folder: Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: Settings,
    ):
        self.folder, self.model, self.optimizer, self.settings = folder, model, optimizer, settings

    def on_epoch_end(self, stats: EpochStats, state: FitState) -> None:
        save_checkpoint(self.folder, self.model, self.optimizer, state, self.settings)
