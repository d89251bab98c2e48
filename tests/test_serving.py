"""The served model through a real `mlflow models serve` process on 127.0.0.1, sent README's request."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.conftest import invoke


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(url: str, server: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise AssertionError(f"the server exited: {server.stderr.read()}")  # type: ignore[union-attr]
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise AssertionError(f"no answer from {url} in {seconds} s")


@pytest.mark.slow
def test_mlflow_models_serve_scores_raw_listings_like_predict(in_trained, mlflow_uri, tmp_path):
    from matching_cli.model.saved import load_model
    from matching_cli.serving import request_fields, request_frame

    folder, run_id, _ = in_trained
    test = pd.read_parquet(folder / "data/test.parquet").head(3)
    fields = request_fields(load_model(folder / "models" / run_id))
    request = request_frame(folder / "data", test["variantid1"], test["variantid2"], fields)
    body = json.dumps({"dataframe_records": request.to_dict(orient="records")})
    port = _free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    # The server copies the model into a temporary folder that it leaves behind when stopped.
    (tmp_path / "server").mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow_uri, "TMPDIR": str(tmp_path / "server")}
    command = [str(mlflow), "models", "serve", "-m", f"runs:/{run_id}/model"]
    command += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(f"http://127.0.0.1:{port}/ping", server)
        http = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=body.encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(http, timeout=60) as answer:
            served = np.asarray(json.loads(answer.read())["predictions"], dtype=float).ravel()
    finally:
        server.terminate()
        server.wait(timeout=30)
    test.to_parquet("three.parquet")
    assert invoke("predict", "three.parquet", "-o", "three.csv", "--run-id", run_id).exit_code == 0
    np.testing.assert_allclose(served, pd.read_csv("three.csv")["score"], atol=1e-6)


def test_the_served_models_requirements_need_no_mlflow_distribution(monkeypatch):
    """MLflow installed as `mlflow-skinny` (as on the GPU machine) has no `mlflow` distribution:
    `train` failed when it logged the model. MLflow is pinned to the module's version, and a
    package without metadata is named unpinned."""
    import importlib.metadata

    import mlflow

    from matching_cli.tracking import _served_requirements

    known = importlib.metadata.version

    def version(name: str) -> str:
        if name in ("mlflow", "rich"):
            raise importlib.metadata.PackageNotFoundError(name)
        return known(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    requirements = _served_requirements()
    assert requirements[0] == f"mlflow=={mlflow.__version__}"
    assert "rich" in requirements
    assert f"numpy=={known('numpy')}" in requirements
