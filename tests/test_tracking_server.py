"""Remote tracking: a real `mlflow server` on 127.0.0.1, a tiny run logged to it over HTTP, read back
through the REST API."""
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY, run_cli

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rest(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def mlflow_server(tmp_path):
    port = free_port()
    server_dir = tmp_path / "server"
    server_dir.mkdir()
    mlflow_cli = Path(sys.executable).with_name("mlflow")
    process = subprocess.Popen(
        [str(mlflow_cli), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{server_dir}/mlflow.db", "--artifacts-destination", str(server_dir / "artifacts")],
        cwd=server_dir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2).read()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"mlflow server did not start: {process.stderr.read().decode()[-2000:]}")
                time.sleep(0.5)
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def test_a_run_logged_to_mlflow_server_reads_back_over_rest(tmp_path, mlflow_server):
    work = tmp_path / "client"
    work.mkdir()
    result = run_cli([*TINY, "trainer.max_epochs=2", f"tracking.uri={mlflow_server}"], work)
    assert result.returncode == 0, result.stderr
    assert not (work / "mlflow.db").exists() and not (work / "mlartifacts").exists()  # all on the server
    experiment = rest(mlflow_server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=lambdaopt")["experiment"]
    runs = rest(mlflow_server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert 0.0 <= metrics["test/auc"] <= 1.0 and "test/ndcg_at_10" in metrics
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.dim"] == "8"
    artifacts = rest(mlflow_server, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
    assert {"config.yaml", "model.pt"} <= {f["path"] for f in artifacts.get("files", [])}
