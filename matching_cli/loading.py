"""What every command that uses a trained model starts with: settings, device, model and data.

One rule combines what a model (or a stopped run) was trained with and today's settings: the
trained sections decide what shapes the result, today's decide where things live and run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from matching_cli import tracking
from matching_cli.data.feature_store import PairFeaturizer
from matching_cli.data.prepare import Prepared, prepared_for
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
    device: torch.device
    prepared: Prepared

    @property
    def feature_names(self) -> tuple[str, ...]:
        return self.saved.classifier.config.feature_names

    def featurizer(self) -> PairFeaturizer | None:
        """What computes the model's field features for new pairs (None: it reads none)."""
        if not self.feature_names:
            return None
        return PairFeaturizer(self.prepared.listings(), self.feature_names)


def load_model_run(settings: Settings, run_id: str | None, reporter: Reporter) -> ModelRun:
    """The given training run (or the experiment's latest finished one); MLflow is configured."""
    device = resolve_device(settings.train.device)
    found = tracking.find_training_run(run_id, settings.mlflow.experiment)
    with tracking.downloaded_model(found.info.run_id) as folder:
        saved = load_model(folder, device)
    merged = trained_settings(saved.settings, settings)
    prepared = prepared_for(merged.data, saved.data_fingerprint, reporter)
    check_blocks(saved.blocks, prepared.items.blocks)
    if prepared.fingerprint != saved.data_fingerprint:
        log.warning(
            "The data differs from what this model was trained on (fingerprint %s, now %s)",
            saved.data_fingerprint,
            prepared.fingerprint,
        )
    return ModelRun(found.info.run_id, saved, merged, device, prepared)
