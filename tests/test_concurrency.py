"""Parallel jobs (joblib launcher, 2 workers) logging to one SQLite file, to a loopback `mlflow server`,
and to one on PostgreSQL (the team setup): every run, param and metric point arrives (counted)."""
import itertools
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


def sweep_and_count(tmp_path, uri: str, swept: list[str]):
    """Run a joblib sweep (2 workers, one job per combination of the `swept` overrides) against `uri` (a fresh
    store: the jobs create it together); assert nothing was lost: every run, param and metric point is there."""
    job = [*TINY, f"trainer.max_epochs={EPOCHS}", "trainer.patience=0", f"tracking.uri={uri}"]
    result = run_cli(["-m", *job, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", *swept], tmp_path, timeout=240)
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
    runs = sweep_and_count(tmp_path, f"sqlite:///{tmp_path}/mlflow.db", ["regularizer=fixed,lambdaopt_d", "seed=0,1"])
    assert sorted(r.data.tags["regularizer"] for r in runs) == ["FixedL2", "FixedL2", "LambdaOpt", "LambdaOpt"]


def test_parallel_jobs_into_a_loopback_mlflow_server(tmp_path):
    with mlflow_server(tmp_path / "server") as base:
        sweep_and_count(tmp_path, base, ["regularizer.lam=" + ",".join(LAMS)])


@pytest.mark.postgres
def test_eight_parallel_jobs_into_an_mlflow_server_on_postgresql(tmp_path, postgres_uri):
    """The team setup: `mlflow server` on PostgreSQL with proxied artifacts, 8 jobs by 2 joblib workers."""
    database = f"mlflow_{uuid.uuid4().hex[:12]}"  # a fresh database: counts start from zero
    with psycopg.connect(postgres_uri, autocommit=True) as connection:  # CREATE DATABASE: outside a transaction
        connection.execute(f'CREATE DATABASE "{database}"')
    with mlflow_server(tmp_path / "server", postgres_uri.rsplit("/", 1)[0] + "/" + database) as base:
        runs = sweep_and_count(tmp_path, base, ["regularizer.lam=" + ",".join(LAMS + ["0.2", "0.5", "1.0", "2.0"])])
    with psycopg.connect(postgres_uri.rsplit("/", 1)[0] + "/" + database) as connection:  # the rows themselves
        assert connection.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'").fetchone()[0] == 9
        assert connection.execute("SELECT count(*) FROM metrics WHERE key = 'train_loss'").fetchone()[0] == 8 * EPOCHS
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlartifacts").exists()  # artifacts: the server's
    assert len(runs) == 8
