"""A saved model describes itself: safetensors weights plus a JSON of config, threshold and settings.

Nothing here unpickles: loading reads JSON and safetensors only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save

from matching_cli.choices import Head
from matching_cli.data.tables import Block
from matching_cli.errors import ModelError
from matching_cli.model.network import ModelConfig, PairClassifier
from matching_cli.model.tree_head import TreeClassifier
from matching_cli.settings import Settings

# Either head scores a pair the same way (`scoring.predict_proba`); `model.json` says which it is.
Classifier = PairClassifier | TreeClassifier

FORMAT = 1
WEIGHTS = "weights.safetensors"
META = "model.json"


@dataclass
class SavedModel:
    classifier: Classifier
    threshold: float
    blocks: list[Block]  # the embedding blocks it expects, in item-matrix order
    settings: Settings  # every setting the model was trained with
    data_fingerprint: str
    # The lowest threshold with validation precision >= [match] group_precision: what `match`
    # groups by. None (a model saved before it, or a target no threshold reached): `threshold`.
    group_threshold: float | None = None

    @property
    def grouping_threshold(self) -> float:
        return self.threshold if self.group_threshold is None else self.group_threshold


def check_blocks(expected: list[Block], found: list[Block]) -> None:
    """A model reads the item matrix by position: the data's blocks must be its own, name and width."""
    if [(b.name, b.dim) for b in expected] != [(b.name, b.dim) for b in found]:
        raise ModelError(
            f"the model expects embedding blocks {_shown(expected)}, the data has {_shown(found)}; "
            "use the data it was trained on or train again"
        )


def _shown(blocks: list[Block]) -> str:
    return ", ".join(f"{b.name} ({b.dim})" for b in blocks)


def save_model(folder: Path, saved: SavedModel) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu().contiguous() for k, v in saved.classifier.state_dict().items()}
    # save(), not save_file(): safetensors creates its files owner-only (0600), and a teammate
    # could not load a model in a shared folder or MLflow store.
    (folder / WEIGHTS).write_bytes(save(weights))
    meta = {
        "format": FORMAT,
        "model": saved.classifier.config.to_dict(),
        "threshold": saved.threshold,
        "group_threshold": saved.group_threshold,
        "blocks": [asdict(b) for b in saved.blocks],
        "settings": saved.settings.model_dump(mode="json"),
        "data_fingerprint": saved.data_fingerprint,
    }
    (folder / META).write_text(json.dumps(meta, indent=2, ensure_ascii=False))


def load_model(folder: Path, device: torch.device | str = "cpu") -> SavedModel:
    meta_path, weights_path = folder / META, folder / WEIGHTS
    for path in (meta_path, weights_path):
        if not path.is_file():
            raise ModelError(f"{path}: missing; the model's artifacts are incomplete, train again")
    try:
        meta = json.loads(meta_path.read_text())
        if isinstance(meta, dict) and "format" in meta and meta["format"] != FORMAT:
            raise ModelError(f"{meta_path}: model format {meta['format']}, expected {FORMAT}")
        config = ModelConfig.from_dict(meta["model"])
        blocks = [Block(**b) for b in meta["blocks"]]
        settings = Settings.from_snapshot(meta["settings"])
        threshold = float(meta["threshold"])
        group = meta.get("group_threshold")
        group = None if group is None else float(group)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, ValidationError) as e:
        raise ModelError(f"{meta_path}: not a model description of this tool ({e})") from e
    if meta.get("format") != FORMAT:
        raise ModelError(f"{meta_path}: model format {meta.get('format')}, expected {FORMAT}")
    try:
        weights = load_file(weights_path, device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(
            f"{weights_path}: not a safetensors file ({e}); refusing to load it"
        ) from e
    classifier = _classifier(config, weights, device)
    if classifier is None:
        raise ModelError(f"{weights_path}: weights do not fit the model in {META}")
    classifier.eval()
    if [b.dim for b in blocks] != list(config.block_dims):
        raise ModelError(f"{meta_path}: its blocks and its model disagree on the widths")
    return SavedModel(
        classifier, threshold, blocks, settings, meta.get("data_fingerprint", ""), group
    )


def _classifier(
    config: ModelConfig, weights: dict[str, torch.Tensor], device: torch.device | str
) -> Classifier | None:
    """The head `config` names with `weights` in it; None when they do not fit it."""
    try:
        if config.head == Head.trees:
            return TreeClassifier.from_weights(config, weights).to(device)
        classifier = PairClassifier(config).to(device)
        classifier.load_state_dict(weights)
        return classifier
    except (RuntimeError, KeyError, ValueError, IndexError):
        return None
