"""`torchrun --nproc-per-node 2 -m matching_cli train` on this CPU (gloo): two real processes.

With dropout off, two processes with 128 pairs each per batch take the steps of one process with
batches of 256, up to the order in which floats are summed: the gradient of a batch is the mean of
two half-batch gradients instead of one sum. (With dropout on, each process draws its own masks,
so the runs agree in distribution, not weight for weight.)
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from safetensors.torch import load_file

from tests.conftest import invoke, signal_after_first_checkpoint

pytestmark = pytest.mark.slow
COMMON = ["--hidden-size", "32", "--seed", "7"]
# Measured: weights within 5e-6 of each other, identical test metrics (README, "Scaling out").
WEIGHT_TOLERANCE = 1e-4


def torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",  # a free port on this machine: tests may run side by side
        "--nproc-per-node",
        "2",
        "-m",
        "matching_cli",
        "-q",
        "train",
        *args,
    ]


@pytest.fixture
def two_processes(project, monkeypatch) -> dict[str, str]:
    """The environment for torchrun's processes: this checkout, no dropout, two CPU threads."""
    monkeypatch.setenv("MATCHING_MODEL__DROPOUT", "0")
    return os.environ | {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
        "OMP_NUM_THREADS": "1",
    }


def weights(folder: Path) -> dict:
    return load_file(folder / "weights.safetensors")


def max_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def runs_of(client, experiment: str = "tests") -> set[str]:
    found = client.get_experiment_by_name(experiment)
    return {r.info.run_id for r in client.search_runs([found.experiment_id])} if found else set()


def test_two_processes_take_the_steps_of_one_with_the_same_global_batch(
    project, two_processes, mlflow_uri
):
    # 839 training pairs: the last batch of each epoch (71 pairs) splits unevenly, 36 + 35, which
    # the loss scaling must weigh like one process's mean over 71.
    alone = invoke("train", "--epochs", "3", "--batch-size", "256", *COMMON, "--json")
    assert alone.exit_code == 0, alone.stderr
    alone = json.loads(alone.stdout)
    client = mlflow.MlflowClient(mlflow_uri)
    before = runs_of(client)

    done = subprocess.run(
        torchrun("--epochs", "3", "--batch-size", "128", *COMMON, "--json"),
        cwd=project,
        env=two_processes,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.strip().splitlines()  # only the first process prints a result
    together = json.loads(line)

    assert runs_of(client) - before == {together["run_id"]}  # one run, logged by one process
    run = client.get_run(together["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.processes"] == "2"
    assert run.data.params["train.batch_size"] == "128"
    assert sorted(p.name for p in (project / "models").iterdir()) == sorted(
        [alone["run_id"], together["run_id"]]
    )
    difference = max_difference(
        weights(project / "models" / alone["run_id"]),
        weights(project / "models" / together["run_id"]),
    )
    assert difference < WEIGHT_TOLERANCE
    for name, value in alone["metrics"].items():
        assert together["metrics"][name] == pytest.approx(value, abs=1e-3), name
    history = [
        client.get_metric_history(r, "train_loss") for r in (alone["run_id"], run.info.run_id)
    ]
    assert [m.step for m in history[1]] == [1, 2, 3]
    assert [m.value for m in history[1]] == pytest.approx([m.value for m in history[0]], rel=1e-5)


def test_ctrl_c_stops_both_processes_and_resume_finishes(
    project, two_processes, mlflow_uri, monkeypatch
):
    """SIGINT to torchrun, which passes it on to its processes: they stop after the same batch,
    the first saves the best model and marks the run KILLED; `--resume` under torchrun then ends
    where the run would have ended without the interruption."""
    epochs = ["--epochs", "30", "--batch-size", "128", *COMMON]
    monkeypatch.setenv("MATCHING_TRAIN__PATIENCE", "100")  # no early stop: time to interrupt
    two_processes |= {"MATCHING_TRAIN__PATIENCE": "100"}
    launcher = subprocess.Popen(
        torchrun(*epochs, "--json"),
        cwd=project,
        env=two_processes,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    signal_after_first_checkpoint(launcher, project, signal.SIGINT)
    _, err = launcher.communicate(timeout=90)
    [folder] = (project / "models").iterdir()
    run_id = folder.name
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_run(run_id).info.status == "KILLED", err
    stopped_at = json.loads((folder / "checkpoint" / "checkpoint.json").read_text())["epoch"]
    assert 1 <= stopped_at < 30, err

    resumed = subprocess.run(
        torchrun("--resume", run_id, "--json"),
        cwd=project,
        env=two_processes,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert resumed.returncode == 0, resumed.stderr
    result = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert result["run_id"] == run_id and result["status"] == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "val_pr_auc")]
    assert sorted(steps) == list(range(1, 31))

    # The same training under torchrun, not interrupted. (Not one process: over 30 epochs the
    # all-reduce's other order of sums can grow from 1e-7 to 5e-3 in the weights on some data;
    # the first test compares two processes with one.)
    straight = subprocess.run(
        torchrun(*epochs, "--json"), cwd=project, env=two_processes, capture_output=True, text=True
    )
    assert straight.returncode == 0, straight.stderr
    other = json.loads(straight.stdout.strip().splitlines()[-1])["run_id"]
    difference = max_difference(weights(folder), weights(project / "models" / other))
    assert difference < WEIGHT_TOLERANCE
