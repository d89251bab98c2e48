"""The model registry, in the real SQLite store: `train --register`, `promote`, `--model models:/...`."""

from __future__ import annotations

import json

import mlflow
import pandas as pd

from tests.conftest import FAST, invoke

NAME = "pair-matcher"


def trained_and_registered(*args: str) -> dict:
    result = invoke("train", *FAST, *args, "--register", NAME, "--json")
    assert result.exit_code == 0, result.stderr
    # MLflow's registry lines ("Created version '2' of model ...") are not ours to print.
    assert "Created version" not in result.stderr and "already exists" not in result.stderr
    assert f"Registered the model as models:/{NAME}/" in result.stderr
    return json.loads(result.stdout)


def test_register_promote_and_use_by_alias(project, mlflow_uri):
    first, second = trained_and_registered(), trained_and_registered("--seed", "8")
    assert first["registered"] == f"models:/{NAME}/1"
    assert second["registered"] == f"models:/{NAME}/2"
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_model_version(NAME, "1").run_id == first["run_id"]

    # A reserved or malformed alias is told as such (it was "no such registered model version").
    for alias in ("latest", "v3", "bad alias!"):
        refused = invoke("promote", NAME, "1", "--alias", alias)
        assert refused.exit_code == 1 and f"--alias {alias!r}: " in refused.stderr, refused.stderr
        assert "no such registered model version" not in refused.stderr

    promoted = invoke("promote", NAME, "1", "--alias", "champion")
    assert promoted.exit_code == 0, promoted.stderr
    assert int(client.get_model_version_by_alias(NAME, "champion").version) == 1

    # The champion is the first run's model although the second is the latest training run.
    by_alias = invoke(
        "predict", "data/test.parquet", "-o", "alias.csv", "--model", f"models:/{NAME}@champion"
    )
    assert by_alias.exit_code == 0, by_alias.stderr
    by_run = invoke("predict", "data/test.parquet", "-o", "run.csv", "--run-id", first["run_id"])
    latest = invoke("predict", "data/test.parquet", "-o", "latest.csv")
    assert by_run.exit_code == latest.exit_code == 0
    pd.testing.assert_frame_equal(pd.read_csv("alias.csv"), pd.read_csv("run.csv"))
    assert not pd.read_csv("alias.csv").equals(pd.read_csv("latest.csv"))

    evaluated = invoke("evaluate", "--model", f"models:/{NAME}/1", "--json")
    assert evaluated.exit_code == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["run_id"] == first["run_id"]
    assert "eval_pr_auc" in client.get_run(first["run_id"]).data.metrics

    matched = invoke(
        "match", "--model", f"models:/{NAME}@champion", "-o", "out", "-k", "3", "--json"
    )
    assert matched.exit_code == 0, matched.stderr
    match_run = client.get_run(json.loads(matched.stdout)["run_id"])
    assert match_run.data.tags["model_run_id"] == first["run_id"]

    # Promoting another version moves the alias.
    assert invoke("promote", NAME, "2", "--alias", "champion").exit_code == 0
    again = invoke("evaluate", "--model", f"models:/{NAME}@champion", "--json")
    assert json.loads(again.stdout)["run_id"] == second["run_id"]


def test_unknown_versions_aliases_and_mixed_options_are_refused(project, mlflow_uri):
    result = invoke("promote", "no-such-model", "1")
    assert result.exit_code == 1 and "no such registered model version" in result.stderr
    result = invoke("evaluate", "--model", "models:/no-such-model@champion")
    assert result.exit_code == 1 and "not in the registry" in result.stderr
    result = invoke("evaluate", "--model", "models:/no-version")
    assert result.exit_code == 1 and "expected models:/NAME@ALIAS" in result.stderr
    result = invoke(
        "predict", "data/test.parquet", "-o", "x.csv", "--run-id", "abc", "--model", "models:/x/1"
    )
    assert result.exit_code == 2 and "not both" in result.stderr
