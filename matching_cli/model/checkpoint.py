"""Epoch checkpoints, so that `matching train --resume RUN_ID` continues where a run stopped.

A checkpoint is a safetensors file (model, best-so-far and optimizer tensors) and a JSON file (loop
state, optimizer hyper-parameters, the settings snapshot); written atomically, never pickled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from matching_cli.errors import ModelError
from matching_cli.files import atomic_dir
from matching_cli.model.train import Callback, EpochStats, FitState

TENSORS = "state.safetensors"
META = "checkpoint.json"


def save_checkpoint(
    folder: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    state: FitState,
    settings: dict[str, Any],
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
        "best_pr_auc": state.best_pr_auc,
        "param_groups": optim["param_groups"],
        "settings": settings,
    }
    with atomic_dir(folder) as staging:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, staging / TENSORS)
        (staging / META).write_text(json.dumps(meta, indent=2))


def read_settings(folder: Path) -> dict[str, Any]:
    if not (folder / META).is_file() or not (folder / TENSORS).is_file():
        raise ModelError(
            f"{folder}: no checkpoint to resume from (it is written after each finished epoch)"
        )
    return json.loads((folder / META).read_text())["settings"]


def load_checkpoint(
    folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> FitState:
    """Load model and optimizer in place; return the loop state to continue from."""
    meta = json.loads((folder / META).read_text())
    device = next(model.parameters()).device
    tensors = load_file(folder / TENSORS, device=str(device))

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    optim_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in part("optim.").items():
        index, name = key.split(".", 1)
        # AdamW keeps its step count on the CPU unless it runs capturable/fused.
        optim_state.setdefault(int(index), {})[name] = value.cpu() if name == "step" else value
    optimizer.load_state_dict({"state": optim_state, "param_groups": meta["param_groups"]})
    best = part("best.")
    return FitState(
        epoch=meta["epoch"],
        history=[EpochStats(**s) for s in meta["history"]],
        best_epoch=meta["best_epoch"],
        best_pr_auc=meta["best_pr_auc"],
        best_weights=best or None,
    )


class CheckpointCallback(Callback):
    def __init__(
        self,
        folder: Path,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        settings: dict[str, Any],
    ):
        self.folder, self.model, self.optimizer, self.settings = folder, model, optimizer, settings

    def on_epoch_end(self, stats: EpochStats, state: FitState) -> None:
        save_checkpoint(self.folder, self.model, self.optimizer, state, self.settings)
