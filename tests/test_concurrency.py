"""Parallel jobs (joblib launcher, 2 workers) logging to one SQLite file and to an `mlflow server` on
PostgreSQL (the team setup; its runs read back through the REST API too): every run, param and metric point
arrives (counted). (A server over a SQLite file, MLflow's default, is what test_mlflow_ui.py browses.)"""
import itertools
import json
import urllib.request
import uuid

import psycopg
import pytest
from mlflow.tracking import MlflowClient

from omegaconf import OmegaConf

from conftest import TINY, compose_config, empty_store_in, run_in_process
from lambdaopt.mlflow_ui import served
from lambdaopt.store import open_store
from lambdaopt.tracking import ensure_experiment, flatten

pytestmark = pytest.mark.slow

LAMS = ["0.0", "0.001", "0.01", "0.1", "0.2", "0.5", "1.0", "2.0"]  # the PostgreSQL sweep: 8 jobs
EPOCHS = 3


def sweep_and_count(tmp_path, uri: str, swept: list[str]):
    """Run a joblib sweep (2 workers, one job per combination of the `swept` overrides) against `uri` (a fresh
    store: the jobs create it together); assert nothing was lost: every run, param and metric point is there."""
    job = [*TINY, f"trainer.max_epochs={EPOCHS}", "trainer.patience=0", f"tracking.uri={uri}"]
    result = run_in_process("run.py", ["-m", *job, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *swept],
                            tmp_path, {})  # the sweep's launcher here; its jobs in the 2 loky worker processes
    assert result.returncode == 0, result.stderr
    experiment_id = ensure_experiment(uri, "lambdaopt")
    client = MlflowClient(tracking_uri=uri)
    everything = client.search_runs([experiment_id])
    parents = [r for r in everything if r.data.tags.get("sweep_role") == "parent"]
    runs = [r for r in everything if r.data.tags.get("sweep_role") != "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the sweep's parent run
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    keys = [override.split("=")[0] for override in swept]
    combinations = sorted(itertools.product(*(override.split("=")[1].split(",") for override in swept)))
    own = {r.info.run_id: [o for o in r.data.tags["overrides"].split() if o.split("=")[0] in keys] for r in runs}
    assert sorted(tuple(o.split("=")[1] for o in own[r.info.run_id]) for r in runs) == combinations  # none lost or doubled
    assert {r.data.tags["job_num"] for r in runs} == {str(num) for num in range(len(combinations))}
    assert all(r.info.status == "FINISHED" for r in runs)
    metric_names = {}
    for r in runs:
        config = compose_config([*job, *own[r.info.run_id]])
        assert len(r.data.params) == len(flatten(OmegaConf.to_container(config, resolve=True)))  # the whole config
        # the same metrics in every run of one regularizer
        assert metric_names.setdefault(r.data.tags["regularizer"], set(r.data.metrics)) == set(r.data.metrics)
        per_epoch = [name for name in r.data.metrics if name.startswith(("train_loss", "valid/", "reg/"))]
        assert {"train_loss", "valid/auc", "valid/ndcg_at_10"} <= set(per_epoch)
        assert any(name.startswith("reg/") for name in per_epoch)  # the regularizer's own curve (λ)
        for name in per_epoch:  # one point per epoch of every curve: none lost or doubled
            history = client.get_metric_history(r.info.run_id, name)
            assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), (r.info.run_id, name)
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"config.yaml", "model.pt"}
    return runs


def test_parallel_jobs_into_one_sqlite_file(tmp_path):
    """Fixed λ and λOpt (its look-ahead, validation sampler and λ state) in the loky workers."""
    uri = f"sqlite:///{empty_store_in(tmp_path)}"
    runs = sweep_and_count(tmp_path, uri, ["regularizer=fixed,lambdaopt_d", "seed=0,1"])
    assert sorted(r.data.tags["regularizer"] for r in runs) == ["FixedL2", "FixedL2", "LambdaOpt", "LambdaOpt"]


def rest(base: str, path: str) -> dict:
    """GET `path` of the server's REST API."""
    with urllib.request.urlopen(base + path, timeout=30) as response:
        return json.loads(response.read())


@pytest.mark.postgres
def test_eight_parallel_jobs_into_an_mlflow_server_on_postgresql(tmp_path, postgres_uri, monkeypatch):
    """The team setup: `mlflow server` on PostgreSQL with proxied artifacts, 8 jobs by 2 joblib workers; a run
    read back through the REST API, nothing of it on the client's disk."""
    database = f"mlflow_{uuid.uuid4().hex[:12]}"  # a fresh database: counts start from zero
    with psycopg.connect(postgres_uri, autocommit=True) as connection:  # CREATE DATABASE: outside a transaction
        connection.execute(f'CREATE DATABASE "{database}"')
    server = tmp_path / "server"
    server.mkdir()
    with served(postgres_uri.rsplit("/", 1)[0] + "/" + database, artifacts=server / "artifacts", cwd=server) as base:
        runs = sweep_and_count(tmp_path, base, ["regularizer.lam=" + ",".join(LAMS)])
        experiment = rest(base, "/api/2.0/mlflow/experiments/get-by-name?experiment_name=lambdaopt")["experiment"]
        run = rest(base, f"/api/2.0/mlflow/runs/get?run_id={runs[0].info.run_id}")["run"]
        assert run["info"]["status"] == "FINISHED" and run["info"]["experiment_id"] == experiment["experiment_id"]
        metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
        assert 0.0 <= metrics["test/auc"] <= 1.0 and "test/ndcg_at_10" in metrics
        assert {p["key"]: p["value"] for p in run["data"]["params"]}["model.dim"] == "8"
        artifacts = rest(base, f"/api/2.0/mlflow/artifacts/list?run_id={run['info']['run_id']}")
        assert {"config.yaml", "model.pt"} <= {f["path"] for f in artifacts.get("files", [])}
        # the next job finds the experiment with its proxied location (mlflow-artifacts:/1): nothing local to
        # check or create (as a path it would be a folder named "mlflow-artifacts:" in the working directory)
        monkeypatch.chdir(tmp_path)
        before = sorted(tmp_path.iterdir())
        assert open_store(base, "lambdaopt", "mlartifacts") == experiment["experiment_id"]
        assert experiment["artifact_location"].startswith("mlflow-artifacts:") and sorted(tmp_path.iterdir()) == before
    with psycopg.connect(postgres_uri.rsplit("/", 1)[0] + "/" + database) as connection:  # the rows themselves
        assert connection.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'").fetchone()[0] == 9
        assert connection.execute("SELECT count(*) FROM metrics WHERE key = 'train_loss'").fetchone()[0] == 8 * EPOCHS
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()  # all on the server
    assert not (tmp_path / "mlartifacts").exists() and len(runs) == 8
