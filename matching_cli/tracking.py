"""MLflow in one place: nothing else imports mlflow (but `mlflow_model.py`, the served model's
entry point, which MLflow runs by itself)."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import mlflow
import pandas as pd
from mlflow.entities import Run, RunInfo
from mlflow.exceptions import MlflowException

from matching_cli import __version__
from matching_cli.choices import RunStatus
from matching_cli.errors import ModelError
from matching_cli.model.callbacks import Callback, EpochStats, FitState
from matching_cli.settings import MlflowSettings, Settings

if TYPE_CHECKING:  # matplotlib is imported where figures are made: predict and match make none
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)
MODEL_ARTIFACTS = "matching_model"
TEXT_MODEL_ARTIFACTS = "text_model"  # in MODEL_ARTIFACTS: the text model the run's features read
KIND_TAG = "matching.kind"
STATUS_TAG = "matching.status"  # how the run's own command ended: what an evaluation restores


def configure(settings: MlflowSettings, create: bool = True) -> None:
    """Point MLflow at the store and experiment: each job calls this first, from its settings alone.

    With `create` False (commands that read a trained model) a store that does not exist is an
    error, not a new empty one, and a missing experiment is not created."""
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # Read by MLflow at each request: a server that does not answer fails in seconds, not minutes.
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(max(1, round(settings.timeout_s)))
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "2"
    os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = "1"
    uri = settings.tracking_uri
    if not create:
        _check_store_exists(uri)
    mlflow.set_tracking_uri(uri)
    try:
        if create or mlflow.MlflowClient().get_experiment_by_name(settings.experiment):
            mlflow.set_experiment(settings.experiment)
    except MlflowException as e:
        if "Max retries exceeded" in e.message or "timed out" in e.message.lower():
            raise ModelError(
                f"MLflow tracking server {uri}: no answer after 3 tries ({_cause(e.message)}); "
                "start it or fix mlflow.tracking_uri (mlflow.timeout_s: how long a try waits)"
            ) from None
        raise ModelError(f"MLflow store {uri}: {_first_line(e.message)}") from None


def _check_store_exists(uri: str) -> None:
    """A local store (sqlite:///file, file:/folder or a plain folder) that is not there: opening it
    would create it empty, and the command would then find no model in it."""
    scheme, _, rest = uri.partition(":")
    if scheme == "sqlite":
        path = rest.removeprefix("///") if rest.startswith("///") else None
    elif scheme == "file":
        path = rest.removeprefix("//")
    elif "://" not in uri:
        path = uri
    else:
        return  # a server: its requests say whether it is there
    if path and path != ":memory:" and not Path(path).exists():
        raise ModelError(
            f"MLflow store {uri}: {path} does not exist; point mlflow.tracking_uri (or "
            "MLFLOW_TRACKING_URI) at the store that `matching train` wrote"
        )


def _cause(message: str) -> str:
    """The operating system's reason inside urllib3's long message ("Connection refused")."""
    found = re.search(r"\[Errno -?\d+\] ([^'\")]+)|(timed out)", message)
    return next((g for g in found.groups() if g), "no connection") if found else "no connection"


def _first_line(message: str) -> str:
    return message.strip().splitlines()[0] if message.strip() else message


@dataclass
class TrackedRun:
    id: str
    # How the run ends when its block exits normally; a reopened run that keeps its status: that.
    status: RunStatus = RunStatus.finished


@contextmanager
def run(
    kind: str,
    run_name: str | None = None,
    tags: dict[str, str] | None = None,
    run_id: str | None = None,
    keep_status: bool = False,
) -> Iterator[TrackedRun]:
    """A run (new, or `run_id` reopened), and the one place its outcome is set: the `status` the
    block leaves (FINISHED unless it says otherwise), KILLED on Ctrl-C, FAILED on an error.

    With `keep_status` the reopened run keeps its status: adding an evaluation to a training run
    does not change how that training ended, whatever happens to the evaluation. Where MLflow says
    RUNNING, another evaluation may have it open: the status its own command left (the tag
    STATUS_TAG) is the one kept."""
    kept = None
    if run_id is not None:
        found = existing_run(run_id)
        if keep_status:
            kept = RunStatus(found.info.status)
            if kept == RunStatus.running:  # open elsewhere: by its own command, or an evaluation
                kept = RunStatus(found.data.tags.get(STATUS_TAG, kept))
        # The run goes on in its own experiment, whichever mlflow.experiment names: MLflow refuses
        # to reopen it under another.
        mlflow.set_experiment(experiment_id=found.info.experiment_id)
    tracked = TrackedRun(run_id or "", kept or RunStatus.finished)
    running = {STATUS_TAG: "RUNNING"}
    try:
        # Inside the try: a Ctrl-C while MLflow opens the run (it is RUNNING at once) still ends it.
        if run_id is not None:
            active = mlflow.start_run(
                run_id=run_id, tags=None if keep_status else {**(tags or {}), **running}
            )
        else:
            active = mlflow.start_run(
                run_name=run_name, tags={KIND_TAG: kind, **(tags or {}), **running}
            )
        tracked.id = active.info.run_id
        yield tracked
    except KeyboardInterrupt:
        tracked.status = kept or RunStatus.killed
        raise
    except BaseException:
        tracked.status = kept or RunStatus.failed
        raise
    finally:
        _end(tracked, keep_status)


def _end(tracked: TrackedRun, keep_status: bool) -> None:
    if mlflow.active_run() is None:  # stopped while MLflow opened it
        if tracked.id:
            mlflow.MlflowClient().set_terminated(tracked.id, tracked.status)
        return
    if not keep_status:
        mlflow.set_tag(STATUS_TAG, tracked.status)
    mlflow.end_run(tracked.status)


def git_tags() -> dict[str, str]:
    """The version and git commit of the code that ran (its checkout's; `unknown` where it was
    installed from a wheel: the version says which then) and, where the current folder lies in
    another repository (a project's settings.toml and data.dvc), that one's commit too."""
    tags = {"matching_version": __version__, "git_commit": "unknown"}
    code = _git_state(Path(__file__).parent)
    if code is not None:
        tags["git_commit"], tags["git_dirty"] = code[1:]
    here = _git_state(Path.cwd(), other_than=code[0] if code is not None else None)
    if here is not None:
        tags["workdir_git_commit"], tags["workdir_git_dirty"] = here[1:]
    return tags


def _git_state(folder: Path, other_than: str | None = None) -> tuple[str, str, str] | None:
    """(top folder, commit, "True" where tracked files differ from it) of the repository that
    `folder` lies in; None outside one, where git is missing or refuses it, or where that
    repository's top folder is `other_than` (the usual case, the current folder in the code's
    checkout, then asks git once, not three times)."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=folder, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()

    try:
        top = git("rev-parse", "--show-toplevel")
        if top == other_than:
            return None
        return (
            top,
            git("rev-parse", "HEAD"),
            str(bool(git("status", "--porcelain", "--untracked-files=no"))),
        )
    except (OSError, subprocess.SubprocessError):
        return None


def flatten(settings: Settings) -> dict[str, Any]:
    """The settings as run parameters. Of `[match]` only `group_precision`, which picks the
    model's grouping threshold when it is trained; the rest play no part in training (a match run
    logs its own)."""
    values = settings.model_dump(mode="json")
    values["match"] = {"group_precision": values["match"]["group_precision"]}
    return {
        f"{section}.{key}": value for section, keys in values.items() for key, value in keys.items()
    }


def log_settings(settings: Settings) -> None:
    mlflow.log_params(flatten(settings))


def log_metrics(metrics: dict[str, float], prefix: str = "", step: int | None = None) -> None:
    mlflow.log_metrics({prefix + k: v for k, v in metrics.items()}, step=step)


# A history row's "val_ap" (history.csv, the plots) is logged as the MLP's epochs log it.
HISTORY_NAMES = {"val_ap": "val_average_precision"}


def log_history(history: list[dict[str, float]], step: str) -> None:
    """Every row's metrics at once, each at the row's `step` value (one request, not one a row),
    under the names the MLP's epochs use."""
    from mlflow.entities import Metric

    run = mlflow.active_run()
    now = int(time.time() * 1000)
    metrics = [
        Metric(HISTORY_NAMES.get(key, key), float(value), now, int(row[step]))
        for row in history
        for key, value in row.items()
        if key != step
    ]
    mlflow.MlflowClient().log_batch(run.info.run_id, metrics=metrics)


def log_figures(figures: dict[str, Figure], folder: str) -> None:
    import matplotlib.pyplot as plt

    for name, figure in figures.items():
        mlflow.log_figure(figure, f"{folder}/{name}")
        plt.close(figure)


def log_saved_model(
    folder: Path,
    text_model: Path | None,
    example: pd.DataFrame | None = None,
) -> None:
    """The model's own files, plus the MLflow model that `mlflow models serve` serves: raw listing
    fields in, probability out (`serving.py`), logged from code with its weights, never pickled."""
    from matching_cli.model.saved import META, WEIGHTS  # torch: not for `promote`

    for name in (WEIGHTS, META):  # the resume checkpoint beside them stays local
        mlflow.log_artifact(str(folder / name), MODEL_ARTIFACTS)
    if text_model is not None:  # what predict reads the listings' text with, on any data
        mlflow.log_artifacts(str(text_model), f"{MODEL_ARTIFACTS}/{TEXT_MODEL_ARTIFACTS}")
    with tempfile.TemporaryDirectory(prefix="matching-served-") as staging:
        model_dir = Path(staging) / "model"
        model_dir.mkdir()
        for name in (WEIGHTS, META):
            shutil.copy2(folder / name, model_dir / name)
        artifacts = {"model": str(model_dir)}
        if text_model is not None:
            artifacts["text_model"] = str(text_model)
        package = Path(__file__).parent
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(package / "mlflow_model.py"),
            artifacts=artifacts,
            code_paths=[str(package)],
            input_example=example,
            signature=None if example is None else _request_schema(example),
            pip_requirements=_served_requirements(),
        )


def _request_schema(example: pd.DataFrame):  # type: ignore[no-untyped-def]
    """The request's columns, each optional and of any type: a listing may lack any field (an
    embedding too, as in a catalogue), and MLflow's typed arrays refuse nulls. The scorer checks
    what it needs and says what is missing."""
    from mlflow.types.schema import AnyType, ColSpec, Schema

    columns = [ColSpec(AnyType(), name, required=False) for name in example.columns]
    return mlflow.models.ModelSignature(inputs=Schema(columns))


def _served_requirements() -> list[str]:
    """What the served model imports, pinned to what trained it (a local label like +cpu dropped).
    MLflow's version is the module's: installed as `mlflow-skinny` it has no `mlflow`
    distribution. A package installed without its metadata is named unpinned."""
    from importlib.metadata import PackageNotFoundError, version

    names = ["torch", "numpy", "pandas", "pyarrow", "scikit-learn", "scipy"]
    names += ["safetensors", "pydantic", "pydantic-settings", "rich"]
    pinned = [f"mlflow=={mlflow.__version__}"]
    for name in names:
        try:
            pinned.append(f"{name}=={version(name).split('+')[0]}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


class MlflowCallback(Callback):
    def on_epoch_end(self, stats: EpochStats, state: FitState) -> None:
        mlflow.log_metrics(
            {
                "train_loss": stats.train_loss,
                "val_loss": stats.val_loss,
                "val_pr_auc": stats.val_pr_auc,
                "val_average_precision": stats.val_ap,
                "epoch_seconds": stats.seconds,
                "train_pairs_per_s": stats.pairs_per_s,
            },
            step=stats.epoch,
        )


REGISTRY_URI = "models:/"


@contextmanager
def _registry_quiet() -> Iterator[None]:
    """MLflow's registry prints its own lines ("Created version '3' of model ...") to stderr, and
    warns that MLflow 3 registers the logged model rather than the run's artefact path: ours says
    what was registered; `--verbose` (MLflow's loggers at DEBUG) shows theirs."""
    if logging.getLogger("mlflow").isEnabledFor(logging.DEBUG):
        yield
        return
    registry = logging.getLogger("mlflow.tracking._model_registry")
    level = registry.level
    registry.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        registry.setLevel(level)


def register_model(run_id: str, name: str) -> str:
    """Register the run's served model as a new version of `name` (created when new): its
    `models:/NAME/VERSION` URI, logged."""
    try:
        with _registry_quiet():
            version = mlflow.register_model(f"runs:/{run_id}/model", name)
    except MlflowException as e:
        raise ModelError(f"--register {name}: {e.message}") from None
    uri = f"{REGISTRY_URI}{name}/{version.version}"
    log.info("Registered the model as %s", uri)
    return uri


def set_alias(name: str, version: int, alias: str) -> None:
    """Point `models:/NAME@ALIAS` at a version (moving the alias from any other)."""
    client = mlflow.MlflowClient()
    try:
        client.get_model_version(name, str(version))
    except MlflowException:
        raise ModelError(
            f"models:/{name}/{version}: no such registered model version in "
            f"{mlflow.get_tracking_uri()}"
        ) from None
    try:
        client.set_registered_model_alias(name, alias, str(version))
    except MlflowException as e:  # a reserved or malformed alias: MLflow's reason says which
        raise ModelError(f"--alias {alias!r}: {_first_line(e.message)}") from None


def registered_run_id(uri: str) -> str:
    """The training run behind `models:/NAME@ALIAS` or `models:/NAME/VERSION`."""
    reference = uri.removeprefix(REGISTRY_URI)
    name, at, alias = reference.partition("@")
    version = ""
    if not at:
        name, _, version = reference.rpartition("/")
    if not name or not (alias or version.isdigit()):
        raise ModelError(f"--model {uri}: expected models:/NAME@ALIAS or models:/NAME/VERSION")
    client = mlflow.MlflowClient()
    try:
        found = (
            client.get_model_version_by_alias(name, alias)
            if alias
            else client.get_model_version(name, version)
        )
    except MlflowException:
        raise ModelError(
            f"--model {uri}: not in the registry of {mlflow.get_tracking_uri()}"
        ) from None
    if not found.run_id:
        raise ModelError(f"--model {uri}: version {found.version} was not logged by a run")
    return found.run_id


def find_training_run(run_id: str | None, experiment: str) -> Run:
    """The given run (an id, or a registered model's `models:/...` URI), or the latest finished
    training run of the experiment."""
    client = mlflow.MlflowClient()
    if run_id is not None and run_id.startswith(REGISTRY_URI):
        run_id = registered_run_id(run_id)
    if run_id is None:
        known = client.get_experiment_by_name(experiment)
        if known is None:  # searched by name, MLflow logs a warning of its own first
            raise ModelError(
                f"experiment '{experiment}' does not exist in {mlflow.get_tracking_uri()}; run "
                "`matching train` (or give --experiment or --run-id)"
            )
        found = mlflow.search_runs(
            experiment_ids=[known.experiment_id],
            output_format="list",
            max_results=1,
            filter_string=f"tags.`{KIND_TAG}` = 'train' and attributes.status = '{RunStatus.finished}'",
            order_by=["attributes.start_time DESC"],
        )
        if not found:
            raise ModelError(
                f"experiment '{experiment}' has no finished training run; run `matching train`"
            )
        return found[0]
    try:
        found_run = client.get_run(run_id)
    except MlflowException:
        raise ModelError(f"--run-id {run_id}: no such run in {mlflow.get_tracking_uri()}") from None
    if found_run.data.tags.get(KIND_TAG) != "train":
        raise ModelError(f"--run-id {run_id}: not a training run of `matching train`")
    _check_not_deleted(found_run.info)
    return found_run


def existing_run(run_id: str) -> Run:
    """The run that `run_id` names, to be reopened: one that is not there, or is deleted, is
    refused (MLflow refused to reopen a deleted one with a traceback, after the work)."""
    try:
        found = mlflow.MlflowClient().get_run(run_id)
    except MlflowException:
        raise ModelError(f"run {run_id}: not found in {mlflow.get_tracking_uri()}") from None
    _check_not_deleted(found.info)
    return found


def _check_not_deleted(info: RunInfo) -> None:
    if info.lifecycle_stage == "deleted":
        raise ModelError(
            f"run {info.run_id} is deleted; restore it (`mlflow runs restore --run-id "
            f"{info.run_id}`) or give another"
        )


@contextmanager
def downloaded_model(run_id: str) -> Iterator[Path]:
    """The run's model artifacts in a temporary folder, removed on exit."""
    with tempfile.TemporaryDirectory(prefix="matching-model-") as target:
        try:
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=MODEL_ARTIFACTS, dst_path=target
            )
        except (MlflowException, OSError) as e:
            raise ModelError(
                f"run {run_id}: its model artifacts are missing ({e}); train again"
            ) from None
        yield Path(path)


def log_params(params: dict[str, Any]) -> None:
    mlflow.log_params(params)


def log_files(paths: list[Path], folder: str) -> None:
    for path in paths:
        mlflow.log_artifact(str(path), folder)
