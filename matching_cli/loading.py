"""What every command that uses a trained model starts with: settings, device, model and data.

One rule combines what a model (or a stopped run) was trained with and today's settings: the
trained sections decide what shapes the result, today's decide where things live and run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from matching_cli import tracking
from matching_cli.choices import Head
from matching_cli.data.feature_store import (
    TEXT_MODEL,
    PairFeaturizer,
    listings_for_model,
    load_text_model,
)
from matching_cli.data.features import TextModel
from matching_cli.data.prepare import Prepared, prepared_for, store_dir
from matching_cli.model.saved import SavedModel, check_blocks, load_model
from matching_cli.model.train import resolve_device
from matching_cli.progress import Reporter
from matching_cli.settings import Settings

log = logging.getLogger(__name__)
# The sections a model was trained with, and in them the keys that only say where things live and
# run; every other section (MLflow, downloads) is today's.
TRAINED_SECTIONS = {
    "data": ("dir", "prepared_dir"),
    "model": (),
    "features": (),
    "train": ("device", "models_dir"),
}


def trained_settings(trained: Settings, today: Settings) -> Settings:
    """The trained settings where they shape the result, today's where things live and run."""
    update = {}
    for section, locations in TRAINED_SECTIONS.items():
        current = getattr(today, section)
        update[section] = getattr(trained, section).model_copy(
            update={key: getattr(current, key) for key in locations}
        )
    return today.model_copy(update=update)


@dataclass
class ModelRun:
    """A training run's model, ready to score: on its device, with the data it expects."""

    run_id: str
    saved: SavedModel
    settings: Settings  # `trained_settings` of the model and today's
    device: torch.device  # today's `train.device`: what `match` searches neighbours on
    prepared: Prepared
    text_model: TextModel | None = None  # what the model's text features were made with

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.saved.classifier.config.feature_names

    @property
    def scoring_device(self) -> torch.device:
        return scoring_device(self.saved.classifier.config.head, self.device)

    @property
    def own_text_features(self) -> bool:
        """Whether the listings' text features must be made with the model's own text model:
        it reads field features and was trained on other data than the store's."""
        return (
            bool(self.feature_names)
            and self.text_model is not None
            and self.prepared.fingerprint != self.saved.data_fingerprint
        )

    def featurizer(self) -> PairFeaturizer | None:
        """What computes the model's field features for new pairs (None: it reads none), with the
        text model it was trained with."""
        if not self.feature_names:
            return None
        if self.own_text_features:
            assert self.text_model is not None
            listings = listings_for_model(
                self.prepared.store, self.settings.data.dir, self.text_model
            )
        else:
            listings = self.prepared.listings()
        return PairFeaturizer(listings, self.feature_names)


def scoring_device(head: Head, device: torch.device) -> torch.device:
    """Where a model scores pairs: the MLP on `device`; the trees on the CPU, whatever `device`,
    since their walk is CPU code (`tree_walk`): on the CPU `predict` and `match` walk them in forked
    processes, one a core, where on a GPU the walk would run in this process alone."""
    return device if head == Head.mlp else torch.device("cpu")


def load_model_run(settings: Settings, run_id: str | None, reporter: Reporter) -> ModelRun:
    """The given training run (or the experiment's latest finished one); MLflow is configured."""
    device = resolve_device(settings.train.device)
    found = tracking.find_training_run(run_id, settings.mlflow.experiment)
    with tracking.downloaded_model(found.info.run_id) as folder:
        saved = load_model(folder, device)
        text_model = _text_model(folder / tracking.TEXT_MODEL_ARTIFACTS)
    if scoring_device(saved.classifier.config.head, device) != device:
        log.info("The model is gradient-boosted trees: it scores on the CPU, not on %s", device)
    merged = trained_settings(saved.settings, settings)
    prepared = prepared_for(merged.data, saved.data_fingerprint, reporter)
    check_blocks(saved.blocks, prepared.items.blocks)
    if prepared.fingerprint != saved.data_fingerprint:
        log.warning(
            "The data differs from what this model was trained on (fingerprint %s, now %s)",
            saved.data_fingerprint,
            prepared.fingerprint,
        )
    if text_model is None:  # a run logged before its text model was: its store's, if kept
        text_model = _text_model(
            store_dir(merged.data.prepared_dir, saved.data_fingerprint) / TEXT_MODEL
        )
    return ModelRun(found.info.run_id, saved, merged, device, prepared, text_model)


def _text_model(folder: Path) -> TextModel | None:
    return load_text_model(folder) if (folder / "terms.json").is_file() else None
