"""Remote tracking: a real `mlflow server` on 127.0.0.1, a tiny run logged to it over HTTP, read back
through the REST API."""
import json
import urllib.request

import pytest

from conftest import TINY, mlflow_server, run_in_process
from lambdaopt.store import open_store

pytestmark = pytest.mark.slow


def rest(base: str, path: str, body: dict | None = None) -> dict:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


@pytest.fixture
def server(tmp_path):
    with mlflow_server(tmp_path / "server") as base:
        yield base


def test_a_run_logged_to_mlflow_server_reads_back_over_rest(tmp_path, server, monkeypatch):
    work = tmp_path / "client"
    work.mkdir()
    result = run_in_process("run.py", [*TINY, "trainer.max_epochs=2", f"tracking.uri={server}"], work, {})
    assert result.returncode == 0, result.stderr
    assert not (work / "mlflow.db").exists() and not (work / "mlartifacts").exists()  # all on the server
    experiment = rest(server, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=lambdaopt")["experiment"]
    runs = rest(server, "/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert len(runs) == 1
    run = runs[0]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    assert 0.0 <= metrics["test/auc"] <= 1.0 and "test/ndcg_at_10" in metrics
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["model.dim"] == "8"
    artifacts = rest(server, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
    assert {"config.yaml", "model.pt"} <= {f["path"] for f in artifacts.get("files", [])}
    # the next job finds the experiment with its proxied location (mlflow-artifacts:/1): nothing local to check
    # or create (as a path it would be a folder named "mlflow-artifacts:" in the working directory)
    monkeypatch.chdir(work)
    before = sorted(work.iterdir())
    assert open_store(server, "lambdaopt", "mlartifacts") == experiment["experiment_id"]
    assert experiment["artifact_location"].startswith("mlflow-artifacts:") and sorted(work.iterdir()) == before
