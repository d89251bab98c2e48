"""Loading a model never unpickles: a pickle planted where weights belong is refused, not run."""

from __future__ import annotations

import os
import pickle
import re
import shutil
from pathlib import Path

import mlflow
import pytest

from matching_cli.errors import ModelError
from matching_cli.model.saved import META, WEIGHTS, load_model
from tests.conftest import invoke, scratch_experiment, use_store

PACKAGE = Path(__file__).resolve().parents[1] / "matching_cli"


class _Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def _plant(folder: Path, marker: Path) -> None:
    (folder / WEIGHTS).write_bytes(pickle.dumps({"mlp.0.weight": _Payload(marker)}))


def test_pickled_weights_are_refused(trained, tmp_path):
    folder, run_id, _ = trained
    model = tmp_path / "model"
    shutil.copytree(folder / "models" / run_id, model, ignore=shutil.ignore_patterns("checkpoint"))
    marker = tmp_path / "pwned"
    _plant(model, marker)
    with pytest.raises(ModelError, match="not a safetensors file"):
        load_model(model)
    assert not marker.exists()


def test_cli_refuses_a_run_whose_weights_are_a_pickle(trained, tmp_path, monkeypatch, mlflow_uri):
    folder, run_id, _ = trained
    for name in ("data", "prepared"):
        shutil.copytree(folder / name, tmp_path / name)
    planted = tmp_path / "planted"
    planted.mkdir()
    shutil.copy(folder / "models" / run_id / META, planted / META)
    marker = tmp_path / "pwned"
    _plant(planted, marker)
    client = mlflow.MlflowClient(mlflow_uri)
    experiment = scratch_experiment(client)
    run = client.create_run(experiment, tags={"matching.kind": "train"}).info.run_id
    for name in (META, WEIGHTS):
        client.log_artifact(run, str(planted / name), "matching_model")
    client.set_terminated(run)
    monkeypatch.chdir(tmp_path)
    use_store(monkeypatch, mlflow_uri)
    result = invoke("predict", "data/test.parquet", "-o", "out.csv", "--run-id", run)
    assert result.exit_code == 1
    assert "refusing to load it" in result.stderr and "Traceback" not in result.stderr
    assert not marker.exists() and not Path("out.csv").exists()


def test_no_unpickling_calls_in_the_package():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not re.search(r"\bpickle\.loads?\(|cloudpickle|joblib\.load", text), path
        for call in re.findall(r"torch\.load\([^)]*\)", text):
            assert "weights_only=True" in call, (path, call)
