"""The jobs behind `train`, `evaluate` and `predict`: data, device, model, loop and tracking, wired once."""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from matching_cli import tracking
from matching_cli.choices import Engine, Head, OnMissing, RunStatus, StopReason
from matching_cli.data.feature_store import TEXT_MODEL, columns_for
from matching_cli.data.pairs import feature_names
from matching_cli.data.prepare import PairSet, Prepared, ensure_prepared
from matching_cli.data.readers import check_columns, check_input_file, is_csv, open_parquet
from matching_cli.data.tables import read_pairs
from matching_cli.errors import DataError, ModelError, OutputError
from matching_cli.files import check_output, check_report_dir, is_stdout, json_text
from matching_cli.loading import load_model_run, trained_settings
from matching_cli.mistakes import mistakes_table
from matching_cli.model.checkpoint import Checkpoint, CheckpointCallback, checkpoint_dir
from matching_cli.model.metrics import (
    all_metrics,
    best_f1_threshold,
    pr_auc,
    precision_threshold,
)
from matching_cli.model.network import ModelConfig, PairClassifier
from matching_cli.model.saved import Classifier, SavedModel, save_model
from matching_cli.model.scoring import predict_proba
from matching_cli.model.train import (
    Callback,
    DeviceData,
    DevicePairs,
    FitState,
    ProgressCallback,
    Shard,
    fit,
    items_to_device,
    make_optimizer,
    pairs_to_device,
    resolve_device,
    to_device,
)
from matching_cli.predict import PredictSummary, predict_file
from matching_cli.progress import NullReporter, Reporter
from matching_cli.serving import request_fields, request_frame
from matching_cli.settings import Settings, auto_head

log = logging.getLogger(__name__)


@dataclass
class RunResult:
    run_id: str
    metrics: dict[str, float]
    status: RunStatus = RunStatus.finished
    threshold: float | None = None  # the model's decision threshold, chosen on validation
    best_epoch: int | None = None  # training: the epoch whose weights were kept...
    epochs: int | None = None  # ...of the epochs run
    registered: str | None = None  # models:/NAME/VERSION, when the run's model was registered
    mistakes: pd.DataFrame | None = None  # `evaluate --errors`: the most confident mistakes
    head: Head | None = None  # training: the head trained (`auto` made concrete)
    n_trees: int | None = None  # training the trees: how many were fitted


@dataclass
class PredictResult:
    run_id: str  # the training run whose model scored the pairs
    summary: PredictSummary


@dataclass
class TrainSetup:
    """Everything `fit` needs, built once from the settings."""

    settings: Settings  # concrete for the device: no `auto` left
    device: torch.device
    prepared: Prepared
    data: DeviceData
    model: Classifier
    optimizer: torch.optim.Optimizer | None  # None: a head fitted without a loop (trees)
    resumed: FitState | None
    tags: dict[str, str]
    shard: Shard  # this process's share of the training


def train_job(
    settings: Settings,
    reporter: Reporter | None = None,
    run_name: str | None = None,
    resume: str | None = None,
    report_dir: Path | None = None,
    callbacks: Sequence[Callback] = (),
    register: str | None = None,
    resume_epochs: int | None = None,
    mlp_options: Sequence[str] = (),
) -> RunResult | None:
    """Train and test a model, tracked as an MLflow run; `resume` continues a stopped run, to its
    own epoch total or to `resume_epochs`.

    `callbacks` join the loop's own (MLflow, progress, checkpoints); `register` names the registered
    model a finished run's model becomes a new version of. Started by torchrun, each
    process trains its share and only the first one tracks, saves and returns a result.
    `[model] head = "trees"` fits gradient-boosted trees instead (`train_trees.py`); `auto` is
    made one or the other first (`settings.auto_head`; `mlp_options`: the MLP's options given on
    the command line), and the run records why. A resumed run keeps its head."""
    resolve_device(settings.train.device)  # an absent device is told before any data or run
    if report_dir is not None:
        check_report_dir(report_dir)
    prepared, head_choice = None, ""
    if settings.model.head == Head.auto and resume is None:
        settings, prepared, head_choice = _choose_head(settings, reporter, mlp_options)
    if settings.model.head == Head.trees and resume is None:
        from matching_cli.train_trees import train_trees_job

        return train_trees_job(
            settings, reporter, run_name, report_dir, register, prepared, head_choice
        )
    with _processes(settings) as shard:
        if shard.rank != 0:
            _fit(_setup(settings, NullReporter(), resume, shard, resume_epochs), [])
            return None
        return _train_and_track(
            settings,
            shard,
            reporter,
            run_name,
            resume,
            report_dir,
            callbacks,
            register,
            resume_epochs,
            prepared,
            head_choice,
        )


def _choose_head(
    settings: Settings, reporter: Reporter | None, mlp_options: Sequence[str]
) -> tuple[Settings, Prepared | None, str]:
    """`head = "auto"` made concrete: the settings with it, the prepared data when choosing needed
    them (not under torchrun, whose processes prepare the data one after another), and why."""
    from matching_cli.scale import distributed

    prepared = None
    if not (mlp_options or distributed.launched()):
        prepared = ensure_prepared(settings.data, reporter)
    train_pairs = None if prepared is None else len(prepared.splits["train"])
    head, why = auto_head(train_pairs, settings.train.device, mlp_options)
    log.info("head auto: %s", why)
    model = settings.model.model_copy(update={"head": head})
    return settings.model_copy(update={"model": model}), prepared, f"head {why}"


@contextmanager
def _processes(settings: Settings) -> Iterator[Shard]:
    """This process alone, or its place among the processes torchrun started."""
    from matching_cli.scale import distributed

    if not distributed.launched():
        yield Shard()
        return
    with distributed.process_group(resolve_device(settings.train.device)) as shard:
        yield shard


def _train_and_track(
    settings: Settings,
    shard: Shard,
    reporter: Reporter | None,
    run_name: str | None,
    resume: str | None,
    report_dir: Path | None,
    callbacks: Sequence[Callback],
    register: str | None,
    resume_epochs: int | None,
    prepared: Prepared | None,
    head_choice: str,
) -> RunResult:
    reporter = reporter or NullReporter()
    tracking.configure(settings.mlflow)
    if resume is not None:
        tracking.existing_run(resume)  # before its checkpoint is read and the data prepared
    setup = _setup(settings, reporter, resume, shard, resume_epochs, prepared, head_choice)
    with tracking.run("train", run_name, setup.tags, run_id=resume) as run:
        if resume is None:
            tracking.log_settings(setup.settings)
            tracking.log_params({"train.processes": shard.processes})
        sinks = [
            tracking.MlflowCallback(),
            ProgressCallback(reporter, setup.resumed.epoch if setup.resumed else 0),
            CheckpointCallback(
                checkpoint_dir(setup.settings.train.models_dir, run.id),
                setup.model,
                setup.optimizer,
                setup.settings,
            ),
            *callbacks,
        ]
        state = _fit(setup, sinks)
        finishing = reporter.task("testing and saving the model", total=None)
        saved, folder = finalize_model(setup, run.id)
        history = [s.as_dict() for s in state.history]
        metrics = test_model(setup, saved, history, state.best_epoch, report_dir, run.id)
        finishing.close()
        interrupted = state.stopped == StopReason.interrupted
        run.status = RunStatus.killed if interrupted else RunStatus.finished
        registered = None
        if register is not None and not interrupted:  # a stopped run registers once resumed
            registered = tracking.register_model(run.id, register)
    if run.status == RunStatus.killed:
        log.warning(
            "Interrupted: the best model so far (epoch %d) is saved in %s; "
            "`matching train --resume %s%s` continues",
            state.best_epoch,
            folder,
            run.id,
            f" --register {register}" if register else "",
        )
    else:
        log.info("Model saved in %s", folder)
    return RunResult(
        run.id,
        metrics,
        run.status,
        saved.threshold,
        state.best_epoch,
        state.epoch,
        registered,
        head=Head.mlp,
    )


def _setup(
    settings: Settings,
    reporter: Reporter,
    resume: str | None,
    shard: Shard,
    resume_epochs: int | None = None,
    prepared: Prepared | None = None,
    head_choice: str = "",
) -> TrainSetup:
    """`prepared`: the data when they are already read; `head_choice`: why `head = "auto"` became
    the MLP, for the run's record."""
    from matching_cli.scale.distributed import main_first

    checkpoint = None
    if resume is not None:
        checkpoint = Checkpoint.read(checkpoint_dir(settings.train.models_dir, resume))
        # Resuming with other settings would not reach the same result.
        settings = trained_settings(checkpoint.settings, settings)
        settings = _resumed_epochs(settings, checkpoint, resume, resume_epochs)
    device = shard.device or resolve_device(settings.train.device)
    if prepared is None:
        with main_first(shard):  # one process prepares the data, the others read it
            prepared = ensure_prepared(settings.data, reporter)
    train_pairs = len(prepared.splits["train"])
    auto_choices = settings.train.auto_choices(device.type, train_pairs, shard.processes)
    settings = settings.model_copy(
        update={"train": settings.train.for_device(device.type, train_pairs, shard.processes)}
    )
    if auto_choices:
        log.info("auto settings: %s", auto_choices)
    torch.manual_seed(settings.train.seed)
    names = model_feature_names(settings, prepared)
    config = ModelConfig.build(settings.model, [b.dim for b in prepared.items.blocks], names)
    model = PairClassifier(config).to(device)
    optimizer = make_optimizer(model, settings.train)
    resumed = None
    if checkpoint is not None:
        resumed = checkpoint.restore(model, optimizer)
        log.info("Resuming run %s after epoch %d", resume, resumed.epoch)
    data = to_device(prepared, device, columns_for(prepared.feature_names, names))
    if names and resumed is None:
        model.fit_scaler(data.splits["train"].features)
    log.info(
        "Training on %s: %s train / %s validation pairs",
        device,
        f"{len(data.splits['train']):,}",
        f"{len(data.splits['val']):,}",
    )
    tags = run_tags(prepared, device, settings.model.head, head_choice, auto_choices)
    return TrainSetup(settings, device, prepared, data, model, optimizer, resumed, tags, shard)


def model_feature_names(settings: Settings, prepared: Prepared) -> tuple[str, ...]:
    """The pair features the model reads: `[features] families`, when the data has them."""
    names = tuple(feature_names(tuple(settings.features.families)))
    if names and not prepared.feature_names:
        log.warning(
            "data.listing_features is off: the model reads the embeddings only "
            "(features.families is ignored)"
        )
        return ()
    return names


def run_tags(
    prepared: Prepared, device: torch.device, head: Head, *auto_choices: str
) -> dict[str, str]:
    """A training run's tags; `auto_choices`: what the `auto` settings became and why (the tag
    `auto_choices`, where there is any)."""
    tags = tracking.git_tags() | {
        "head": str(head),
        "data_fingerprint": prepared.fingerprint,
        "device": str(device),
        "torch_version": torch.__version__,
    }
    choices = "; ".join(filter(None, auto_choices))
    if choices:
        tags["auto_choices"] = choices
    return tags


def _resumed_epochs(
    settings: Settings, checkpoint: Checkpoint, run_id: str, epochs: int | None
) -> Settings:
    """The epoch total a resumed run trains to; refused (before the run is reopened, so it is
    neither changed nor logged again) when no epoch would be left to train."""
    done, total = checkpoint.meta["epoch"], epochs or settings.train.epochs
    best = checkpoint.meta.get("best_epoch", done)
    if total <= done:
        asked = f"--epochs {epochs}" if epochs else f"its total of {total}"
        raise ModelError(
            f"run {run_id} has trained {done} epochs and {asked} leaves nothing to train; "
            f"give --epochs above {done} to continue it"
        )
    if epochs is None and done - best >= settings.train.patience:
        raise ModelError(
            f"run {run_id} stopped early after epoch {done} (no better validation for "
            f"{done - best} epochs); give --epochs above {done} to train it further anyway"
        )
    if epochs is not None and epochs != settings.train.epochs:
        log.info(
            "Continuing run %s to %d epochs (it was set to %d)",
            run_id,
            epochs,
            settings.train.epochs,
        )
    train = settings.train.model_copy(update={"epochs": total})
    return settings.model_copy(update={"train": train})


def _fit(setup: TrainSetup, callbacks: list[Callback]) -> FitState:
    """The loop, the only stretch where a signal means "stop after this batch"; after it, Ctrl-C
    aborts (the run ends KILLED) like anywhere else."""
    stop = setup.shard.stop_flag()
    with stop.catching():
        state = fit(
            setup.model,
            setup.data,
            setup.settings.train,
            callbacks,
            stop,
            setup.resumed,
            setup.optimizer,
            setup.shard,
        )
    if state.best_weights is None:
        if state.stopped == StopReason.interrupted:
            log.warning("Stopped before the first epoch ended: no model to save")
            raise KeyboardInterrupt
        if state.stopped == StopReason.diverged:
            raise ModelError(
                f"training diverged in epoch {state.epoch + 1} (the loss became NaN or infinite) "
                f"at learning rate {setup.settings.train.lr:g}: lower it (--lr); no model to save"
            )
        raise ModelError("training ended without a best epoch: no model to save")
    if state.stopped == StopReason.diverged:
        log.warning("Keeping epoch %d, the best before the loss diverged", state.best_epoch)
    return state


def finalize_model(
    setup: TrainSetup, run_id: str, held_out: tuple[np.ndarray, np.ndarray] | None = None
) -> tuple[SavedModel, Path]:
    """The thresholds chosen on validation (or on `held_out`: targets and probabilities of pairs
    the model was not fitted on, a cross-fit's), the model saved locally and logged to the run."""
    if held_out is None:
        val = setup.data.splits["val"]
        held_out = val.target.cpu().numpy(), _probabilities(setup.model, setup.data.items, val)
    target, scores = held_out
    saved = SavedModel(
        setup.model,
        best_f1_threshold(target, scores),
        setup.prepared.items.blocks,
        setup.settings,
        setup.prepared.fingerprint,
        _group_threshold(target, scores, setup.settings.match.group_precision),
    )
    folder = setup.settings.train.models_dir / run_id
    save_model(folder, saved)
    pairs, ids = setup.prepared.splits["val"], setup.prepared.items.ids
    example = request_frame(
        setup.settings.data.dir, ids[pairs.left[:2]], ids[pairs.right[:2]], request_fields(saved)
    )
    text_model = setup.prepared.store / TEXT_MODEL if setup.model.config.feature_names else None
    tracking.log_saved_model(folder, text_model, example)
    return saved, folder


def _group_threshold(target: np.ndarray, scores: np.ndarray, precision: float) -> float | None:
    """What `match` groups by: pairs must be right `precision` of the time, since one wrong edge
    can merge two whole groups."""
    threshold = precision_threshold(target, scores, precision)
    if threshold is None:
        log.warning(
            "No threshold reaches a validation precision of %.2f ([match] group_precision): "
            "match groups by the F1 threshold",
            precision,
        )
    return threshold


def test_model(
    setup: TrainSetup,
    saved: SavedModel,
    history: list[dict],
    best_epoch: int | None,
    report_dir: Path | None,
    run_id: str,
) -> dict[str, float]:
    """Test metrics and figures of a trained model, logged to the run (and `report_dir`)."""
    data = setup.data
    metrics = _test_and_log(
        saved,
        data.items,
        data.splits["test"],
        setup.prepared.splits["test"],
        history,
        prefix="",
        report_dir=report_dir,
    )
    train = data.splits["train"]
    # Beside the test score, the training score shows how much a model memorises listings.
    train_pr_auc = pr_auc(
        train.target.cpu().numpy(), _probabilities(saved.classifier, data.items, train)
    )
    tracking.log_metrics(
        ({"best_epoch": best_epoch} if best_epoch is not None else {})
        | {
            "threshold": saved.threshold,
            "group_threshold": saved.grouping_threshold,
            "train_pr_auc": train_pr_auc,
        }
    )
    if report_dir is not None:
        _write_report(report_dir, run_id, metrics, history)
    return metrics


def _probabilities(model: Classifier, items: torch.Tensor, pairs: DevicePairs) -> np.ndarray:
    return predict_proba(model, items, pairs.left, pairs.right, pairs.features).cpu().numpy()


def _test_and_log(
    saved: SavedModel,
    items: torch.Tensor,
    pairs: DevicePairs,
    host_pairs: PairSet,
    history: list[dict] | None,
    prefix: str,
    figures_folder: str = "plots",
    report_dir: Path | None = None,
    scores: np.ndarray | None = None,
) -> dict[str, float]:
    if scores is None:
        scores = _probabilities(saved.classifier, items, pairs)
    target = host_pairs.target
    metrics = all_metrics(target, scores, saved.threshold, host_pairs.category)
    from matching_cli.model.plots import run_figures  # matplotlib: 0.4 s that predict need not pay

    figures = run_figures(history, target, scores, saved.threshold, metrics)
    if report_dir is not None:
        report_dir.mkdir(parents=True, exist_ok=True)
        for name, figure in figures.items():
            figure.savefig(report_dir / name, dpi=100)
    tracking.log_figures(figures, figures_folder)
    # Last: a run that shows the metrics has the figures too (interrupted in between, it showed
    # an evaluation that looked whole).
    tracking.log_metrics(metrics, prefix=prefix)
    return metrics


def _write_report(
    report_dir: Path, run_id: str, metrics: dict[str, float], history: list[dict] | None
) -> None:
    """metrics.json (and history.csv) for `dvc metrics show` and `dvc plots show`."""
    (report_dir / "metrics.json").write_text(json_text({"run_id": run_id, **metrics}, indent=2))
    if history:
        columns = list(history[0])
        lines = [",".join(columns)] + [",".join(str(h[c]) for c in columns) for h in history]
        (report_dir / "history.csv").write_text("\n".join(lines) + "\n")


def evaluate_job(
    settings: Settings,
    run_id: str | None,
    pairs_path: Path | None = None,
    reporter: Reporter | None = None,
    report_dir: Path | None = None,
    errors: int = 0,
) -> RunResult:
    """Score the run's model on its test split (or on `pairs_path`) and log the metrics to the run;
    with `errors`, also its `errors` most confident false and missed matches (evaluation/errors.csv)."""
    if pairs_path is not None:
        _check_pairs_file(pairs_path, "labelled pairs (variantid1, variantid2, target)")
    if report_dir is not None:
        check_report_dir(report_dir)
    tracking.configure(settings.mlflow, create=False)
    loaded = load_model_run(settings, run_id, reporter or NullReporter())
    run_id, saved, prepared = loaded.run_id, loaded.saved, loaded.prepared
    items = items_to_device(prepared.items.matrix, loaded.scoring_device)
    if pairs_path is None:
        host_pairs, prefix, folder = prepared.splits["test"], "eval_", "evaluation"
        columns = columns_for(prepared.feature_names, loaded.feature_names)
        featurizer = loaded.featurizer() if loaded.own_text_features else None
        if featurizer is not None:  # the store's rows read its own text model, not the model's
            features = featurizer(host_pairs.left, host_pairs.right)
            host_pairs, columns = (
                replace(host_pairs, features=features),
                np.arange(features.shape[1]),
            )
    else:
        pairs = read_pairs(pairs_path, prepared.items, labelled=True, both_classes=False)
        if pairs.target.min() == pairs.target.max():
            kind = "a match (target 1)" if pairs.target[0] == 1 else "a non-match (target 0)"
            log.warning(
                "%s: every pair is %s: reporting accuracy, precision and recall at the "
                "threshold; PR-AUC, average precision and ROC-AUC need both classes",
                pairs_path,
                kind,
            )
        if prepared.fingerprint == saved.data_fingerprint:
            _warn_if_seen(pairs_path, pairs.left, pairs.right, prepared)
        featurizer = loaded.featurizer()
        host_pairs = PairSet(
            pairs.left,
            pairs.right,
            pairs.target,
            prepared.item_category[pairs.left],
            featurizer(pairs.left, pairs.right) if featurizer else np.zeros((len(pairs.left), 0)),
        )
        columns = np.arange(len(loaded.feature_names))
        # MLflow takes letters, digits and _-. /: in metric names ("pairs (1)" was refused only
        # after the scoring, its figures logged already).
        name = re.sub(r"[^\w\-.]", "_", pairs_path.stem)
        prefix, folder = f"eval_{name}_", f"evaluation/{name}"
    if len(host_pairs) == 0:
        raise DataError("no pairs to evaluate")
    device_pairs = pairs_to_device(host_pairs, loaded.scoring_device, columns)
    scores = _probabilities(saved.classifier, items, device_pairs)
    mistakes = None
    with tracking.run("evaluate", run_id=run_id, keep_status=True) as run:
        metrics = _test_and_log(
            saved,
            items,
            device_pairs,
            host_pairs,
            None,
            prefix=prefix,
            figures_folder=folder,
            report_dir=report_dir,
            scores=scores,
        )
        if errors > 0:
            mistakes = mistakes_table(
                prepared.items.ids,
                host_pairs.left,
                host_pairs.right,
                host_pairs.target,
                scores,
                host_pairs.features[:, columns],
                loaded.feature_names,
                saved.threshold,
                errors,
                loaded.settings.data.dir,
            )
            _log_mistakes(mistakes, folder, report_dir)
    if report_dir is not None:
        _write_report(report_dir, run_id, metrics, None)
    return RunResult(run_id, metrics, run.status, threshold=saved.threshold, mistakes=mistakes)


def _log_mistakes(mistakes: pd.DataFrame, folder: str, report_dir: Path | None) -> None:
    """errors.csv into the run's `folder` (and `report_dir`): every feature column, not only the
    few a terminal shows."""
    with tempfile.TemporaryDirectory() as staging:
        path = Path(staging) / "errors.csv"
        mistakes.to_csv(path, index=False)
        tracking.log_files([path], folder)
        if report_dir is not None:
            report_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, report_dir / "errors.csv")


def _warn_if_seen(path: Path, left: np.ndarray, right: np.ndarray, prepared: Prepared) -> None:
    """Labelled pairs that the model was fitted or tuned on flatter it: told, with how many."""
    n = np.int64(len(prepared.items.ids))

    def keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:  # one number per unordered pair
        return np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)

    given = keys(left, right)
    seen = {
        name: int(np.isin(given, keys(split.left, split.right)).sum())
        for name, split in prepared.splits.items()
        if name != "test"
    }
    if any(seen.values()):
        log.warning(
            "%s: %s of its %s pairs are the model's training pairs (%s) or validation pairs "
            "(%s): the figures flatter the model; evaluate on pairs it has not seen",
            path,
            f"{sum(seen.values()):,}",
            f"{len(given):,}",
            f"{seen.get('train', 0):,}",
            f"{seen.get('val', 0):,}",
        )


# Names that promise a form the scores are not written in (a compressed or JSON file).
_NOT_WRITTEN = {".gz", ".bz2", ".xz", ".zst", ".zip", ".json", ".jsonl", ".xlsx"}


def _check_predict_output(out_path: Path, pairs_path: Path, data_dir: Path) -> None:
    """The scores must not replace what they are made from: the pairs file, or a file of the data
    folder (`-o data/train.parquet` put scores where the labels were); nor go to a name that
    promises another form (`scores.csv.gz` was plain CSV)."""
    if is_stdout(out_path):
        return
    if out_path.suffix.lower() in _NOT_WRITTEN:
        raise OutputError(
            f"--output {out_path}: scores are written as parquet (*.parquet) or as plain CSV "
            f"(any other name), not {out_path.suffix}; name it *.csv or *.parquet"
        )
    target = Path(os.path.realpath(out_path))
    if target == Path(os.path.realpath(pairs_path)):
        raise OutputError(f"--output {out_path}: is the pairs file being scored; write elsewhere")
    if target.parent == Path(os.path.realpath(data_dir)):
        raise OutputError(
            f"--output {out_path}: is in the data folder {data_dir}, whose files are the raw "
            "data; write the scores elsewhere"
        )


def predict_job(
    settings: Settings,
    run_id: str | None,
    pairs_path: Path,
    out_path: Path,
    submission: bool,
    on_missing: OnMissing,
    reporter: Reporter | None = None,
    engine: Engine = Engine.local,
    spark_master: str = "local[2]",
) -> PredictResult:
    reporter = reporter or NullReporter()
    _check_pairs_file(pairs_path, "pairs (variantid1, variantid2)")
    check_output(out_path, "--output")  # before the model is loaded and the data prepared
    _check_predict_output(out_path, pairs_path, settings.data.dir)
    tracking.configure(settings.mlflow, create=False)
    if engine == Engine.spark:
        from matching_cli.scale.spark import spark_predict

        if not is_csv(pairs_path):  # the same refusals as the local engine's, before Spark starts
            pf = open_parquet(pairs_path)
            check_columns(pf, pairs_path, {"variantid1": "int", "variantid2": "int"})

        run_id = tracking.find_training_run(run_id, settings.mlflow.experiment).info.run_id
        summary = spark_predict(
            spark_master,
            settings.data.dir,
            f"runs:/{run_id}/model",
            pairs_path,
            out_path,
            submission=submission,
            on_missing=on_missing,
        )
        return PredictResult(run_id, summary)
    loaded = load_model_run(settings, run_id, reporter)
    summary = predict_file(
        loaded.saved.classifier,
        loaded.prepared.items,
        loaded.scoring_device,
        pairs_path,
        out_path,
        submission=submission,
        on_missing=on_missing,
        reporter=reporter,
        featurizer=loaded.featurizer(),
    )
    return PredictResult(loaded.run_id, summary)


def _check_pairs_file(path: Path, holding: str) -> None:
    """Before a model is loaded: a pairs file is the user's own, not something `download` makes."""
    check_input_file(path, f"give the path of a parquet file of {holding}")
