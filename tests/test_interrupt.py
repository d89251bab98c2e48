"""Stopping `train` with a signal keeps the best model, marks the run KILLED, and resumes exactly."""

from __future__ import annotations

import json
import os
import signal

import mlflow
import pytest

from matching_cli import tracking
from tests.conftest import FAST, invoke


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_then_resume_reaches_the_uninterrupted_result(
    project, trained, monkeypatch, mlflow_uri, signum
):
    epoch_end = tracking.MlflowCallback.on_epoch_end

    def signal_after_epoch_two(self, stats, state):
        epoch_end(self, stats, state)
        if stats.epoch == 2:
            os.kill(os.getpid(), signum)  # a real signal, caught by the training loop

    monkeypatch.setattr(tracking.MlflowCallback, "on_epoch_end", signal_after_epoch_two)
    stopped = invoke("train", *FAST, "--json")
    assert stopped.exit_code == 0, stopped.stderr
    out = json.loads(stopped.stdout)
    assert out["status"] == "KILLED"
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(out["run_id"])
    assert run.info.status == "KILLED"
    assert {
        a.path for a in client.list_artifacts(out["run_id"], "matching_model")
    }  # best model logged
    assert (project / "models" / out["run_id"] / "weights.safetensors").is_file()

    monkeypatch.setattr(tracking.MlflowCallback, "on_epoch_end", epoch_end)
    resumed = invoke("train", "--resume", out["run_id"], "--json")
    assert resumed.exit_code == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["run_id"] == out["run_id"] and result["status"] == "FINISHED"
    assert result["metrics"] == trained[2]
    history = client.get_metric_history(out["run_id"], "val_pr_auc")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert client.get_run(out["run_id"]).info.status == "FINISHED"


def test_resume_without_checkpoint_is_a_clear_error(project):
    result = invoke("train", "--resume", "0123456789abcdef")
    assert result.exit_code == 1
    assert "no checkpoint to resume from" in result.stderr
