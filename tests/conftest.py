"""Shared fixtures: one tiny demo data set, one real SQLite MLflow store, one trained run."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from matching_cli.cli import app
from matching_cli.data.synthetic import generate

DEMO_PAIRS = 1200
FAST = ["--epochs", "3", "--hidden-size", "32", "--batch-size", "256", "--seed", "7"]


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("demo") / "data"
    folder.mkdir()
    generate(folder, DEMO_PAIRS, seed=3)
    return folder


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory) -> str:
    # Creating a SQLite store runs migrations for seconds: one store for the whole session.
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


# The shared trained run has an experiment of its own: "the latest training run" there is that run,
# whatever other tests trained (or broke) in the "tests" experiment before.
TRAINED_EXPERIMENT = "trained"


def scratch_experiment(client) -> str:
    """The id of the "tests" experiment, where tests plant broken runs."""
    found = client.get_experiment_by_name("tests")
    return found.experiment_id if found else client.create_experiment("tests")


def use_store(monkeypatch, mlflow_uri: str, experiment: str = "tests") -> None:
    """Point the CLI (and this process's MLflow client) at the shared test store."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MATCHING_MLFLOW__TRACKING_URI", mlflow_uri)
    monkeypatch.setenv("MATCHING_MLFLOW__EXPERIMENT", experiment)


@pytest.fixture
def project(tmp_path, monkeypatch, demo_data, mlflow_uri) -> Path:
    """A fresh working folder holding a copy of the demo data, using the shared MLflow store."""
    shutil.copytree(demo_data, tmp_path / "data")
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, mlflow_uri)
    return tmp_path


@pytest.fixture
def in_trained(trained, monkeypatch, mlflow_uri):
    """Work in the shared trained run's folder: (folder, run id, metrics)."""
    import mlflow

    monkeypatch.chdir(trained[0])
    use_store(monkeypatch, mlflow_uri, TRAINED_EXPERIMENT)
    mlflow.set_tracking_uri(mlflow_uri)
    return trained


def store(folder: Path = Path(".")) -> Path:
    """The prepared store in `folder` used last (`prepared/<fingerprint>/`)."""
    from matching_cli.data.prepare import stores

    found = stores(folder / "prepared")
    assert found, f"no prepared store in {folder}"
    return found[0]


def invoke(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="session")
def trained(tmp_path_factory, demo_data, mlflow_uri):
    """One training run shared by the evaluate and predict tests: (folder, run id, metrics)."""
    folder = tmp_path_factory.mktemp("trained")
    shutil.copytree(demo_data, folder / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(folder)
        use_store(mp, mlflow_uri, TRAINED_EXPERIMENT)
        result = invoke("train", *FAST, "--json")
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    return folder, out["run_id"], out["metrics"]


def signal_after_first_checkpoint(process: subprocess.Popen, project: Path, signum: int) -> None:
    """Send `signum` to a training process once it has saved an epoch's checkpoint."""
    deadline = time.monotonic() + 90
    while not list(project.glob("models/*/checkpoint/checkpoint.json")):
        assert process.poll() is None, process.stderr.read() if process.stderr else ""
        assert time.monotonic() < deadline, "no checkpoint was written"
        time.sleep(0.01)
    process.send_signal(signum)
