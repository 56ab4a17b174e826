"""The entry point end to end: MLflow runs, artifacts and one-line errors (multiruns: test_sweeps.py)."""
import pytest

from conftest import TINY, fails_in_one_line, run_cli, run_in_process, tracked_runs

pytestmark = pytest.mark.slow


def test_single_run_logs_a_finished_mlflow_run(tmp_path):
    result = run_cli(TINY, tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})  # its imports, on stderr
    assert result.returncode == 0, result.stderr
    imported = [line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    assert "torch" in imported and "torch._dynamo" not in imported  # lambdaopt/startup.py
    assert "test" in result.stdout and "mlflow ui --backend-store-uri sqlite:///mlflow.db" in result.stdout
    client, runs = tracked_runs(tmp_path)
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


def test_an_untracked_run_imports_no_mlflow(tmp_path):
    """tracking.enabled=false needs no MLflow: a GPU image or a bare notebook can run without it."""
    result = run_cli([*TINY, "tracking.enabled=false"], tmp_path, env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert result.returncode == 0, result.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")}
    assert "torch" in imported and "mlflow" not in imported
    assert not (tmp_path / "mlflow.db").exists() and "test" in result.stdout


def test_users_with_one_interaction_are_refused_in_one_line():
    # the other bad values, through the command line: test_bad_inputs.py
    fails_in_one_line([*TINY, "dataset.min_user_interactions=1", "dataset.min_interactions=1",
                       "dataset.mean_interactions=2"], "dataset.min_user_interactions")


def test_unknown_option_and_wrong_type_are_reported_by_hydra(tmp_path):
    result = run_in_process("run.py", ["regularizer=nope"], tmp_path, {})
    assert result.returncode != 0 and "regularizer" in result.stderr and "Traceback" not in result.stderr
    result = run_in_process("run.py", ["model.dim=abc"], tmp_path, {})
    assert result.returncode != 0 and "model.dim" in result.stderr and "Traceback" not in result.stderr


def test_cfg_job_prints_the_composed_config(tmp_path):
    result = run_in_process("run.py", ["--cfg", "job"], tmp_path, {})
    assert result.returncode == 0 and "regularizer:" in result.stdout and "lam:" in result.stdout
