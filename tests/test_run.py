"""The entry point end to end: MLflow runs, artifacts, multirun, and one-line errors."""
import mlflow
import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, run_cli

pytestmark = pytest.mark.slow


def runs_in(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.get_experiment_by_name("lambdaopt")
    runs = client.search_runs([experiment.experiment_id]) if experiment else []
    return client, [r for r in runs if r.data.tags.get("sweep_role") != "parent"]  # -m adds a parent run


def test_single_run_logs_a_finished_mlflow_run(tmp_path):
    result = run_cli(TINY, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test" in result.stdout and "mlflow ui --backend-store-uri sqlite:///mlflow.db" in result.stdout
    client, runs = runs_in(tmp_path)
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and "mlflow.parentRunId" not in run.data.tags
    for name in ("test/auc", "test/hr_at_10", "test/ndcg_at_10", "valid/ndcg_at_5", "train_loss"):
        assert name in run.data.metrics, name
    assert run.data.params["model.dim"] == "8"
    assert run.data.tags["dataset"] == "synthetic" and len(run.data.tags["dataset_hash"]) == 12
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "overrides.yaml", "model.pt"} <= artifacts
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 3  # one point per epoch
    assert (tmp_path / "mlartifacts").is_dir()


def test_multirun_creates_one_run_per_job(tmp_path):
    result = run_cli(["-m", *TINY, "regularizer.lam=0,1e-2"], tmp_path)
    assert result.returncode == 0, result.stderr
    _, runs = runs_in(tmp_path)
    assert sorted(r.data.params["regularizer.lam"] for r in runs) == ["0.0", "0.01"]
    assert all(r.info.status == "FINISHED" for r in runs)
    assert {r.data.tags["job_num"] for r in runs} == {"0", "1"}
    assert all("regularizer.lam=" in r.data.tags["overrides"] for r in runs)
    assert len({r.data.tags["mlflow.parentRunId"] for r in runs}) == 1


@pytest.mark.parametrize("args,needle", [
    (["optimizer.lr=0"], "optimizer.lr=0"),
    (["model.dim=-3"], "model.dim=-3"),
    (["evaluation.ks=[10,5000]"], "evaluation.ks"),
    (["dataset.min_user_interactions=1", "dataset.min_interactions=1", "dataset.mean_interactions=2"],
     "dataset.min_user_interactions"),
])
def test_bad_values_give_one_line_and_nonzero_exit(tmp_path, args, needle):
    result = run_cli([*TINY, *args], tmp_path)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and needle in errors[0], result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_option_and_wrong_type_are_reported_by_hydra(tmp_path):
    result = run_cli(["regularizer=nope"], tmp_path)
    assert result.returncode != 0 and "regularizer" in result.stderr and "Traceback" not in result.stderr
    result = run_cli(["model.dim=abc"], tmp_path)
    assert result.returncode != 0 and "model.dim" in result.stderr and "Traceback" not in result.stderr


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_cli(["--cfg", "job"], tmp_path)
    assert result.returncode == 0 and "regularizer:" in result.stdout and "lam:" in result.stdout
