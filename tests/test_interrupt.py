"""Stopping `train` with a signal keeps the best model, marks the run KILLED, and resumes exactly;
after the loop a signal aborts, and the run still ends KILLED."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from matching_cli import tracking
from matching_cli.jobs import train_job
from matching_cli.model.train import Callback
from matching_cli.settings import load_settings
from tests.conftest import FAST, invoke, signal_after_first_checkpoint


class SignalAfterEpoch(Callback):
    def __init__(self, epoch: int, signum: int):
        self.epoch, self.signum = epoch, signum

    def on_epoch_end(self, stats, state) -> None:
        if stats.epoch == self.epoch:
            os.kill(os.getpid(), self.signum)  # a real signal, caught by the training loop


def fast_settings():
    """FAST, as settings."""
    return load_settings(
        overrides={
            "train": {"epochs": 3, "batch_size": 256, "seed": 7},
            "model": {"hidden_size": 32, "head": "mlp"},  # what `auto` gives with FAST's options
        }
    )


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_then_resume_reaches_the_uninterrupted_result(project, trained, mlflow_uri, signum):
    stopped = train_job(fast_settings(), callbacks=[SignalAfterEpoch(2, signum)])
    assert stopped.status == "KILLED"
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(stopped.run_id)
    assert run.info.status == "KILLED"
    assert {
        a.path for a in client.list_artifacts(stopped.run_id, "matching_model")
    }  # best model logged
    assert (project / "models" / stopped.run_id / "weights.safetensors").is_file()

    resumed = invoke("train", "--resume", stopped.run_id, "--json")
    assert resumed.exit_code == 0, resumed.stderr
    result = json.loads(resumed.stdout)
    assert result["run_id"] == stopped.run_id and result["status"] == "FINISHED"
    assert result["metrics"] == trained[2]
    history = client.get_metric_history(stopped.run_id, "val_pr_auc")
    assert sorted(m.step for m in history) == [1, 2, 3]
    assert client.get_run(stopped.run_id).info.status == "FINISHED"


@pytest.mark.parametrize("sent", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_after_the_loop_aborts_and_the_run_ends_killed(
    project, monkeypatch, mlflow_uri, sent
):
    # Ctrl-C (or a SIGTERM, as a scheduler sends) while the model is logged: the loop is over, so
    # nothing "stops after this batch"; the run must not be left RUNNING.
    log_saved_model = tracking.log_saved_model

    def interrupted(*args):
        os.kill(os.getpid(), sent)
        log_saved_model(*args)

    monkeypatch.setattr(tracking, "log_saved_model", interrupted)

    def unhandled(signum, frame):  # what reaches here, the command left to Python's default
        raise AssertionError("the command did not handle SIGTERM: the run would stay RUNNING")

    previous = signal.signal(signal.SIGTERM, unhandled)
    # Python's own Ctrl-C handler, as in a terminal: a job started in the background by a shell
    # inherits SIGINT ignored, and then no Ctrl-C can reach it at all.
    previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = invoke("train", *FAST, "--json")
    finally:
        signal.signal(signal.SIGTERM, previous)
        signal.signal(signal.SIGINT, previous_int)
    assert result.exit_code == 130, result.stdout
    assert "stopping after this batch" not in result.stderr
    client = mlflow.MlflowClient(mlflow_uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("tests").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert run.info.status == "KILLED"


def test_ctrl_c_in_the_first_epoch_ends_killed_not_failed(project, mlflow_uri):
    class SignalInFirstBatch(Callback):
        def on_batch_end(self, pairs, loss) -> None:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train_job(fast_settings(), callbacks=[SignalInFirstBatch()])
    client = mlflow.MlflowClient(mlflow_uri)
    [run] = client.search_runs(
        [client.get_experiment_by_name("tests").experiment_id],
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    assert run.info.status == "KILLED"


def test_resume_without_checkpoint_is_a_clear_error(project, mlflow_uri):
    result = invoke("train", "--resume", "0123456789abcdef")
    assert result.exit_code == 1
    assert "run 0123456789abcdef: not found" in result.stderr
    client = mlflow.MlflowClient(mlflow_uri)
    run_id = client.create_run(client.get_experiment_by_name("tests").experiment_id).info.run_id
    result = invoke("train", "--resume", run_id)
    assert result.exit_code == 1
    assert "no checkpoint to resume from" in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_during_the_epochs_shows_the_run_and_exits_130(project, monkeypatch, signum):
    """The loop stops after its batch and saves the best model so far; the command said so and
    exited 0, so `train && evaluate` went on as after a whole run."""
    monkeypatch.setenv("MATCHING_TRAIN__PATIENCE", "100")  # no early stop: time to interrupt
    process = subprocess.Popen(
        [sys.executable, "-m", "matching_cli", "train", *FAST[2:], "--epochs", "60", "--json"],
        env=os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    signal_after_first_checkpoint(process, project, signum)
    out, err = process.communicate(timeout=90)
    assert process.returncode == 130, err
    assert json.loads(out)["status"] == "KILLED"


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_as_match_puts_its_results_in_place_keeps_them(in_trained, monkeypatch, signum):
    """A Ctrl-C just after the output folder was swapped exited 130 ("Interrupted.") over the new
    results, their run KILLED. Held from the moment they are whole to their run's end, it is told
    after, and the results and their run stand."""
    end = tracking._end

    def stopped_then_end(tracked, keep_status):
        os.kill(os.getpid(), signum)  # a real signal, as the folder is in place
        end(tracked, keep_status)

    monkeypatch.setattr(tracking, "_end", stopped_then_end)
    result = invoke("match", "-o", "matches_held", "--json")
    assert result.exit_code == 0, result.stderr
    assert "Stopped as the results were put in place" in result.stderr
    summary = json.loads(Path("matches_held/summary.json").read_text())
    assert mlflow.MlflowClient().get_run(summary["run_id"]).info.status == "FINISHED"
    shutil.rmtree("matches_held")  # the shared run's folder, as it was
