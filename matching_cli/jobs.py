"""The jobs behind `train`, `evaluate` and `predict`: data, device, model, loop and tracking, wired once."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from matching_cli import tracking
from matching_cli.choices import OnMissing, RunStatus, StopReason
from matching_cli.data.prepare import PairSet, Prepared, ensure_prepared
from matching_cli.data.tables import read_pairs
from matching_cli.errors import DataError, ModelError
from matching_cli.model.checkpoint import CheckpointCallback, load_checkpoint, read_settings
from matching_cli.model.metrics import all_metrics, best_f1_threshold, pr_auc
from matching_cli.model.network import ModelConfig, PairClassifier
from matching_cli.model.plots import run_figures
from matching_cli.model.saved import SavedModel, check_blocks, load_model, save_model
from matching_cli.model.train import (
    DevicePairs,
    ProgressCallback,
    StopFlag,
    fit,
    items_to_device,
    make_optimizer,
    pairs_to_device,
    resolve_device,
    score_pairs,
    to_device,
)
from matching_cli.predict import PredictSummary, predict_file
from matching_cli.progress import NullReporter, Reporter
from matching_cli.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_id: str
    metrics: dict[str, float]
    status: RunStatus = RunStatus.finished


def train_job(
    settings: Settings,
    reporter: Reporter | None = None,
    run_name: str | None = None,
    resume: str | None = None,
    report_dir: Path | None = None,
) -> RunResult:
    """Train and test a model, tracked as an MLflow run; `resume` continues a stopped run."""
    reporter = reporter or NullReporter()
    if resume is not None:
        settings = _resumed_settings(settings, resume)
    device = resolve_device(settings.train.device)
    settings = settings.model_copy(update={"train": settings.train.for_device(device.type)})
    prepared = ensure_prepared(settings.data, reporter)
    torch.manual_seed(settings.train.seed)
    config = ModelConfig.build(settings.model, [b.dim for b in prepared.items.blocks])
    model = PairClassifier(config).to(device)
    optimizer = make_optimizer(model, settings.train)
    state = None
    if resume is not None:
        state = load_checkpoint(_checkpoint_dir(settings, resume), model, optimizer)
        log.info("Resuming run %s after epoch %d", resume, state.epoch)
    data = to_device(prepared, device)
    log.info(
        "Training on %s: %s train / %s validation pairs",
        device,
        f"{len(data.splits['train']):,}",
        f"{len(data.splits['val']):,}",
    )
    tracking.configure(settings.mlflow)
    tags = tracking.git_tags() | {
        "data_fingerprint": prepared.fingerprint,
        "device": str(device),
        "torch_version": torch.__version__,
    }
    stop = StopFlag()
    snapshot = settings.model_dump(mode="json")
    with tracking.run("train", run_name, tags, run_id=resume) as run_id, stop.catching():
        if resume is None:
            tracking.log_settings(settings)
        callbacks = [
            tracking.MlflowCallback(),
            ProgressCallback(reporter),
            CheckpointCallback(_checkpoint_dir(settings, run_id), model, optimizer, snapshot),
        ]
        state = fit(model, data, settings.train, callbacks, stop, state, optimizer)
        if state.best_weights is None:
            raise ModelError("training stopped before the first epoch ended: no model to save")
        val = data.splits["val"]
        threshold = best_f1_threshold(
            val.target.cpu().numpy(), _probabilities(model, data.items, val)
        )
        saved = SavedModel(model, threshold, prepared.items.blocks, settings, prepared.fingerprint)
        folder = settings.train.models_dir / run_id
        save_model(folder, saved)
        history = [s.as_dict() for s in state.history]
        metrics = _test_and_log(
            saved,
            data.items,
            data.splits["test"],
            prepared.splits["test"],
            history,
            prefix="",
            report_dir=report_dir,
        )
        example = torch.cat([data.items[val.left[:4]], data.items[val.right[:4]]], dim=1)
        tracking.log_saved_model(folder, saved, example.cpu().numpy())
        train = data.splits["train"]
        # Beside the test score, the training score shows how much a model memorises listings.
        train_pr_auc = pr_auc(train.target.cpu().numpy(), _probabilities(model, data.items, train))
        tracking.log_metrics(
            {"best_epoch": state.best_epoch, "threshold": threshold, "train_pr_auc": train_pr_auc}
        )
        if report_dir is not None:
            _write_report(report_dir, run_id, metrics, history)
        if state.stopped == StopReason.interrupted:
            log.warning(
                "Interrupted: the best model so far (epoch %d) is saved in %s; "
                "`matching train --resume %s` continues",
                state.best_epoch,
                folder,
                run_id,
            )
            tracking.end_killed()
            return RunResult(run_id, metrics, RunStatus.killed)
    log.info("Model saved in %s", folder)
    return RunResult(run_id, metrics)


def _checkpoint_dir(settings: Settings, run_id: str) -> Path:
    return settings.train.models_dir / run_id / "checkpoint"


def _resumed_settings(settings: Settings, run_id: str) -> Settings:
    """The stopped run's own settings: resuming with others would not reach the same result."""
    snapshot = Settings.from_snapshot(read_settings(_checkpoint_dir(settings, run_id)))
    # Where things live may differ today; what was trained may not.
    return snapshot.model_copy(update={"mlflow": settings.mlflow})


def _probabilities(model: torch.nn.Module, items: torch.Tensor, pairs: DevicePairs) -> np.ndarray:
    return torch.sigmoid(score_pairs(model, items, pairs.left, pairs.right)).cpu().numpy()


def _test_and_log(
    saved: SavedModel,
    items: torch.Tensor,
    pairs: DevicePairs,
    host_pairs: PairSet,
    history: list[dict] | None,
    prefix: str,
    figures_folder: str = "plots",
    report_dir: Path | None = None,
) -> dict[str, float]:
    scores = _probabilities(saved.classifier, items, pairs)
    target = host_pairs.target
    metrics = all_metrics(target, scores, saved.threshold, host_pairs.category)
    tracking.log_metrics(metrics, prefix=prefix)
    figures = run_figures(history, target, scores, saved.threshold, metrics)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        for name, figure in figures.items():
            figure.savefig(report_dir / name, dpi=100)
    tracking.log_figures(figures, figures_folder)
    return metrics


def _write_report(
    report_dir: Path, run_id: str, metrics: dict[str, float], history: list[dict] | None
) -> None:
    """metrics.json (and history.csv) for `dvc metrics show` and `dvc plots show`."""
    (report_dir / "metrics.json").write_text(json.dumps({"run_id": run_id, **metrics}, indent=2))
    if history:
        columns = list(history[0])
        lines = [",".join(columns)] + [",".join(str(h[c]) for c in columns) for h in history]
        (report_dir / "history.csv").write_text("\n".join(lines) + "\n")


def load_run(
    settings: Settings, run_id: str | None, device: torch.device
) -> tuple[str, SavedModel]:
    tracking.configure(settings.mlflow)
    found = tracking.find_training_run(run_id, settings.mlflow.experiment)
    with tracking.downloaded_model(found.info.run_id) as folder:
        return found.info.run_id, load_model(folder, device)


def model_data(settings: Settings, saved: SavedModel, reporter: Reporter) -> Prepared:
    """The prepared data as the model was trained on it (its data settings, today's folders)."""
    data = saved.settings.data.model_copy(
        update={"dir": settings.data.dir, "prepared_dir": settings.data.prepared_dir}
    )
    prepared = ensure_prepared(data, reporter)
    check_blocks(saved.blocks, prepared.items.blocks)
    if prepared.fingerprint != saved.data_fingerprint:
        log.warning(
            "The data differs from what this model was trained on (fingerprint %s, now %s)",
            saved.data_fingerprint,
            prepared.fingerprint,
        )
    return prepared


def evaluate_job(
    settings: Settings,
    run_id: str | None,
    pairs_path: Path | None = None,
    reporter: Reporter | None = None,
    report_dir: Path | None = None,
) -> RunResult:
    reporter = reporter or NullReporter()
    device = resolve_device(settings.train.device)
    run_id, saved = load_run(settings, run_id, device)
    prepared = model_data(settings, saved, reporter)
    items = items_to_device(prepared.items.matrix, device)
    if pairs_path is None:
        host_pairs, prefix, folder = prepared.splits["test"], "eval_", "evaluation"
    else:
        pairs = read_pairs(pairs_path, prepared.items, labelled=True)
        host_pairs = PairSet(
            pairs.left, pairs.right, pairs.target, prepared.item_category[pairs.left]
        )
        prefix, folder = f"eval_{pairs_path.stem}_", f"evaluation/{pairs_path.stem}"
    if len(host_pairs) == 0:
        raise DataError("no pairs to evaluate")
    with tracking.run("evaluate", run_id=run_id, keep_status=True):
        metrics = _test_and_log(
            saved,
            items,
            pairs_to_device(host_pairs, device),
            host_pairs,
            None,
            prefix=prefix,
            figures_folder=folder,
            report_dir=report_dir,
        )
    if report_dir is not None:
        _write_report(report_dir, run_id, metrics, None)
    return RunResult(run_id, metrics)


def predict_job(
    settings: Settings,
    run_id: str | None,
    pairs_path: Path,
    out_path: Path,
    submission: bool,
    on_missing: OnMissing,
    reporter: Reporter | None = None,
) -> PredictSummary:
    reporter = reporter or NullReporter()
    device = resolve_device(settings.train.device)
    _, saved = load_run(settings, run_id, device)
    prepared = model_data(settings, saved, reporter)
    return predict_file(
        saved.classifier,
        prepared.items,
        device,
        pairs_path,
        out_path,
        submission=submission,
        on_missing=on_missing,
        reporter=reporter,
    )
