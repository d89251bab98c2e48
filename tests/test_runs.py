"""MLflow runs as a user meets them: a run reopened in its own experiment, its status told as MLflow
keeps it, a deleted run refused up front, and what a training run records (the code's commit, the
project's, the settings that shaped the model)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import mlflow

import matching_cli
from tests.conftest import FAST, invoke


def _trained(*args: str) -> str:
    result = invoke("train", *FAST, *args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["run_id"]


def _evaluated_status(run_id: str) -> str:
    result = invoke("evaluate", "--run-id", run_id, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)["status"]


def test_a_run_is_reopened_in_its_experiment_with_its_status_and_refused_when_deleted(
    project, mlflow_uri, monkeypatch
):
    client = mlflow.MlflowClient(mlflow_uri)
    client.create_experiment("here")  # the settings' experiment, there before the run
    monkeypatch.setenv("MATCHING_MLFLOW__EXPERIMENT", "here")
    run_id = _trained("--experiment", "elsewhere")

    # Without --run-id: the latest finished training run of --experiment (evaluate, predict and
    # match had no such option, and took the settings' experiment's).
    by_experiment = invoke("evaluate", "--experiment", "elsewhere", "--json")
    assert json.loads(by_experiment.stdout)["run_id"] == run_id, by_experiment.stderr
    predicted = invoke("predict", "data/test.parquet", "-o", "-", "--experiment", "elsewhere")
    assert f"training run {run_id}" in " ".join(predicted.stderr.split())
    assert "experiment 'here' has no finished training run" in invoke("evaluate").stderr

    # MLflow refused to reopen a run of another experiment (a traceback); the metrics go to it.
    assert _evaluated_status(run_id) == "FINISHED"
    run = client.get_run(run_id)
    assert "eval_pr_auc" in run.data.metrics
    assert run.info.experiment_id == client.get_experiment_by_name("elsewhere").experiment_id

    # A failed training run stays failed, and evaluate says so (it said "finished").
    client.set_terminated(run_id, "FAILED")
    assert _evaluated_status(run_id) == "FAILED"
    assert client.get_run(run_id).info.status == "FAILED"

    # A deleted run: refused before any work (evaluate scored first and then failed with a
    # traceback; predict used its model silently).
    client.delete_run(run_id)
    for command in (
        ["evaluate", "--run-id", run_id],
        ["predict", "data/test.parquet", "-o", "scores.csv", "--run-id", run_id],
        ["train", "--resume", run_id],
    ):
        result = invoke(*command)
        assert result.exit_code == 1, result.stdout + result.stderr
        assert f"run {run_id} is deleted" in result.stderr and "Traceback" not in result.stderr
    assert not Path("scores.csv").exists()


def _head(folder: Path) -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=folder, capture_output=True, text=True, check=True
    ).stdout.strip()


def test_a_training_run_records_the_codes_commit_the_projects_and_group_precision(
    project, mlflow_uri, monkeypatch
):
    # The project folder is a repository of its own (its settings, its data.dvc).
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    monkeypatch.setenv("MATCHING_MATCH__GROUP_PRECISION", "0.8")
    run = mlflow.MlflowClient(mlflow_uri).get_run(_trained())
    code = Path(matching_cli.__file__).parent
    in_git = subprocess.run(["git", "rev-parse"], cwd=code, capture_output=True).returncode == 0
    # It logged the current folder's commit as the code's.
    assert run.data.tags["git_commit"] == (_head(code) if in_git else "unknown")
    assert run.data.tags["workdir_git_commit"] == _head(project)
    assert run.data.tags["matching_version"] == matching_cli.__version__
    # It picks the grouping threshold stored with the model: two runs differing in it differed in
    # nothing logged.
    assert run.data.params["match.group_precision"] == "0.8"


def test_an_evaluation_leaves_the_training_runs_status_whatever_happens_to_it(
    project, mlflow_uri, monkeypatch
):
    client = mlflow.MlflowClient(mlflow_uri)
    run_id = _trained()
    # Another evaluation has the run open (MLflow says RUNNING): this one restored RUNNING when it
    # ended, for good, and later commands took an older run as the latest finished one.
    client.update_run(run_id, status="RUNNING")
    assert _evaluated_status(run_id) == "FINISHED"
    assert client.get_run(run_id).info.status == "FINISHED"

    # Ctrl-C while MLflow reopens the run (it is RUNNING from then on).
    real_start = mlflow.start_run

    def interrupted_start(*args, **kwargs):
        real_start(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(mlflow, "start_run", interrupted_start)
    result = invoke("evaluate", "--run-id", run_id)
    assert result.exit_code == 130, result.stderr
    assert client.get_run(run_id).info.status == "FINISHED"
