"""SIGKILL in the middle of writing: the destination is never corrupt, and the next run completes."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from matching_cli.data.prepare import load_prepared, stores
from matching_cli.data.synthetic import generate
from tests.conftest import store


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.Popen(
        [sys.executable, "-m", "matching_cli", "-q", *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _kill_when(
    process: subprocess.Popen, folder: Path, pattern: str, timeout: float = 120
) -> list[int]:
    """SIGKILL the process as soon as its temporary output shows up; the processes it had forked."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if list(folder.glob(pattern)):
            children = _children(process.pid)
            process.send_signal(signal.SIGKILL)
            process.wait()
            return children
        if process.poll() is not None:
            pytest.fail(f"finished before it could be killed: {process.stderr.read().decode()}")
        time.sleep(0.005)
    process.kill()
    pytest.fail("its temporary output never appeared")


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # an orphan that nobody reaps stays a zombie


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def medium_data(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("medium") / "data"
    folder.mkdir()
    generate(folder, 30_000, seed=1)
    return folder


def test_killed_download_keeps_the_old_data(project):
    before = _digest(project / "data")
    process = _start(["download", "--synthetic", "--force", "--pairs", "200000"], project)
    _kill_when(process, project, ".data.partial-*")
    assert _digest(project / "data") == before
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "matching_cli",
            "-q",
            "download",
            "--synthetic",
            "--force",
            "--pairs",
            "300",
        ],
        cwd=project,
        capture_output=True,
    )
    assert done.returncode == 0, done.stderr
    assert pq.read_table(project / "data/train.parquet").num_rows == 300
    assert not list(project.glob(".data.*")), "the killed run's leftovers are cleared"


def test_killed_prepare_leaves_no_half_written_prepared_data(tmp_path, medium_data):
    shutil.copytree(medium_data, tmp_path / "data")
    process = _start(["prepare"], tmp_path)
    workers = _kill_when(process, tmp_path, "prepared/.*.partial-*/items.npy")
    # Its features worker dies with it, not working on into the folder the next run removes.
    deadline = time.monotonic() + 0.5
    while any(map(_alive, workers)) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(map(_alive, workers)), "prepare's worker outlived it"
    assert not stores(tmp_path / "prepared")
    done = subprocess.run(
        [sys.executable, "-m", "matching_cli", "-q", "prepare"], cwd=tmp_path, capture_output=True
    )
    assert done.returncode == 0, done.stderr
    assert len(load_prepared(store(tmp_path)).splits["train"]) > 0
    assert not list(tmp_path.glob("prepared/.*"))


def test_killed_predict_writes_no_partial_csv(trained, tmp_path, monkeypatch, mlflow_uri):
    folder, run_id, _ = trained
    for name in ("data", "prepared"):
        shutil.copytree(folder / name, tmp_path / name)
    pairs = pq.read_table(tmp_path / "data/test.parquet")
    pq.write_table(
        pa.concat_tables([pairs] * (1_000_000 // pairs.num_rows)), tmp_path / "many.parquet"
    )
    monkeypatch.setenv("MATCHING_MLFLOW__TRACKING_URI", mlflow_uri)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    process = _start(["predict", "many.parquet", "-o", "scores.csv", "--run-id", run_id], tmp_path)
    _kill_when(process, tmp_path, ".scores.csv.*.partial")
    assert not (tmp_path / "scores.csv").exists()
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "matching_cli",
            "-q",
            "predict",
            "data/test.parquet",
            "-o",
            "scores.csv",
            "--run-id",
            run_id,
        ],
        cwd=tmp_path,
        capture_output=True,
        env=os.environ.copy(),
    )
    assert done.returncode == 0, done.stderr
    assert len((tmp_path / "scores.csv").read_text().splitlines()) == pairs.num_rows + 1
    assert not list(tmp_path.glob(".scores.csv.*"))
