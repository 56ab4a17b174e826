"""Parallel jobs (joblib launcher, 2 workers) logging to one SQLite file and to a loopback `mlflow
server`: every run, param and metric point arrives (counted)."""
import socket
import subprocess
import sys
import time
import urllib.request

import pytest
from mlflow.tracking import MlflowClient

from omegaconf import OmegaConf

from conftest import TINY, compose_config, run_cli
from lambdaopt.tracking import ensure_experiment, flatten

pytestmark = pytest.mark.slow
pytest.importorskip("hydra_plugins.hydra_joblib_launcher")

LAMS = ["0.0", "0.001", "0.01", "0.1"]
EPOCHS = 3


def sweep_and_count(tmp_path, uri: str):
    """Run a 4-job joblib sweep against `uri` (a fresh store: the jobs create it together); assert
    nothing was lost."""
    job = [*TINY, f"trainer.max_epochs={EPOCHS}", "trainer.patience=0", f"tracking.uri={uri}"]
    result = run_cli(["-m", *job, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "regularizer.lam=" + ",".join(LAMS)],
                     tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    experiment_id = ensure_experiment(uri, "lambdaopt")
    client = MlflowClient(tracking_uri=uri)
    everything = client.search_runs([experiment_id])
    parents = [r for r in everything if r.data.tags.get("sweep_role") == "parent"]
    runs = [r for r in everything if r.data.tags.get("sweep_role") != "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the sweep's parent run
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert sorted(r.data.params["regularizer.lam"] for r in runs) == LAMS  # 4 runs, none lost or doubled
    assert all(r.info.status == "FINISHED" for r in runs)
    expected_params = len(flatten(OmegaConf.to_container(compose_config(job), resolve=True)))
    assert [len(r.data.params) for r in runs] == [expected_params] * len(LAMS)  # the whole flattened config
    metric_names = {frozenset(r.data.metrics) for r in runs}
    assert len(metric_names) == 1  # the same metrics in every run
    points = 0
    for r in runs:
        for name in ("train_loss", "valid/auc", "valid/ndcg_at_10", "reg/lambda"):
            history = client.get_metric_history(r.info.run_id, name)
            assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), (r.info.run_id, name)
            points += len(history)
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"config.yaml", "model.pt"}
    assert points == len(LAMS) * 4 * EPOCHS
    return runs


def test_parallel_jobs_into_one_sqlite_file(tmp_path):
    sweep_and_count(tmp_path, f"sqlite:///{tmp_path}/mlflow.db")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parallel_jobs_into_a_loopback_mlflow_server(tmp_path):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{tmp_path}/server.db",
         "--default-artifact-root", str(tmp_path / "server-artifacts"), "--host", "127.0.0.1",
         "--port", str(port), "-w", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 90
        while True:  # bounded wait for /health
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert server.poll() is None, "mlflow server exited"
            assert time.monotonic() < deadline, "mlflow server not ready within 90 s"
            time.sleep(0.5)
        sweep_and_count(tmp_path, f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
