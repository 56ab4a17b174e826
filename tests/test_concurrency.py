"""Parallel jobs (joblib launcher, 2 workers) logging to one SQLite file, to a loopback `mlflow server`,
and to one on PostgreSQL (the team setup): every run, param and metric point arrives (counted)."""
import uuid

import psycopg
import pytest
from mlflow.tracking import MlflowClient

from omegaconf import OmegaConf

from conftest import TINY, compose_config, mlflow_server, run_cli
from lambdaopt.tracking import ensure_experiment, flatten

pytestmark = pytest.mark.slow

LAMS = ["0.0", "0.001", "0.01", "0.1"]
EPOCHS = 3


def sweep_and_count(tmp_path, uri: str, lams: list[str] = LAMS):
    """Run a joblib sweep (2 workers, one job per λ in `lams`) against `uri` (a fresh store: the jobs
    create it together); assert nothing was lost: every run, param and metric point is there."""
    job = [*TINY, f"trainer.max_epochs={EPOCHS}", "trainer.patience=0", f"tracking.uri={uri}"]
    result = run_cli(["-m", *job, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "regularizer.lam=" + ",".join(lams)],
                     tmp_path, timeout=240)
    assert result.returncode == 0, result.stderr
    experiment_id = ensure_experiment(uri, "lambdaopt")
    client = MlflowClient(tracking_uri=uri)
    everything = client.search_runs([experiment_id])
    parents = [r for r in everything if r.data.tags.get("sweep_role") == "parent"]
    runs = [r for r in everything if r.data.tags.get("sweep_role") != "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"  # the sweep's parent run
    assert {r.data.tags["mlflow.parentRunId"] for r in runs} == {parents[0].info.run_id}
    assert sorted((r.data.params["regularizer.lam"] for r in runs), key=float) == lams  # none lost or doubled
    assert all(r.info.status == "FINISHED" for r in runs)
    expected_params = len(flatten(OmegaConf.to_container(compose_config(job), resolve=True)))
    assert [len(r.data.params) for r in runs] == [expected_params] * len(lams)  # the whole flattened config
    metric_names = {frozenset(r.data.metrics) for r in runs}
    assert len(metric_names) == 1  # the same metrics in every run
    points = 0
    for r in runs:
        for name in ("train_loss", "valid/auc", "valid/ndcg_at_10", "reg/lambda"):
            history = client.get_metric_history(r.info.run_id, name)
            assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1)), (r.info.run_id, name)
            points += len(history)
        assert {a.path for a in client.list_artifacts(r.info.run_id)} >= {"config.yaml", "model.pt"}
    assert points == len(lams) * 4 * EPOCHS
    return runs


def test_parallel_jobs_into_one_sqlite_file(tmp_path):
    sweep_and_count(tmp_path, f"sqlite:///{tmp_path}/mlflow.db")


def test_parallel_jobs_into_a_loopback_mlflow_server(tmp_path):
    with mlflow_server(tmp_path / "server") as base:
        sweep_and_count(tmp_path, base)


@pytest.mark.postgres
def test_eight_parallel_jobs_into_an_mlflow_server_on_postgresql(tmp_path, postgres_uri):
    """The team setup: `mlflow server` on PostgreSQL with proxied artifacts, 8 jobs by 2 joblib workers."""
    database = f"mlflow_{uuid.uuid4().hex[:12]}"  # a fresh database: counts start from zero
    with psycopg.connect(postgres_uri, autocommit=True) as connection:  # CREATE DATABASE: outside a transaction
        connection.execute(f'CREATE DATABASE "{database}"')
    with mlflow_server(tmp_path / "server", postgres_uri.rsplit("/", 1)[0] + "/" + database) as base:
        runs = sweep_and_count(tmp_path, base, LAMS + ["0.2", "0.5", "1.0", "2.0"])
    with psycopg.connect(postgres_uri.rsplit("/", 1)[0] + "/" + database) as connection:  # the rows themselves
        assert connection.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'").fetchone()[0] == 9
        assert connection.execute("SELECT count(*) FROM metrics WHERE key = 'train_loss'").fetchone()[0] == 8 * EPOCHS
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()  # artifacts: the server's
    assert len(runs) == 8
