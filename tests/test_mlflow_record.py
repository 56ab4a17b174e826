"""What a run leaves in MLflow's own terms (dataset input, pyfunc model, system metrics, selected-epoch
values at the selected step) and on the console (epoch line, progress bar only on a terminal, MLflow's
messages and the summary in the Hydra job log)."""
import io
import json

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import TINY, compose_config, run_in_process
from lambdaopt import console
from lambdaopt.experiment import build, run


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


@pytest.mark.slow
def test_a_run_logs_its_dataset_a_loadable_model_system_metrics_and_the_selected_epoch(tmp_path):
    env = {"MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL": "0.2", "MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING": "1"}
    result = run_in_process("run.py", [*TINY, "regularizer=lambdaopt_dui", "tracking.system_metrics=true"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    [run_] = client.search_runs([client.get_experiment_by_name("lambdaopt").experiment_id])
    metrics, run_id = run_.data.metrics, run_.info.run_id

    [used] = run_.inputs.dataset_inputs
    assert used.dataset.name == "synthetic" and used.dataset.digest == run_.data.tags["dataset_hash"]
    assert [t.value for t in used.tags if t.key == "mlflow.data.context"] == ["train/valid/test"]
    profile = json.loads(used.dataset.profile)
    dataset = build(compose_config(TINY).dataset)
    assert (profile["n_train"], profile["n_valid"], profile["n_test"]) == (
        len(dataset.train), len(dataset.valid), len(dataset.test))
    assert "load_synthetic" in used.dataset.source and "user_id" in used.dataset.schema
    assert not any(k.startswith("data/") for k in metrics)  # the statistics live in the profile now

    best = int(metrics["best_epoch"])
    for key in ("test/ndcg_at_10", "best_valid/ndcg_at_10"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [best]
    assert len(client.get_metric_history(run_id, "valid/ndcg_at_10")) == 3  # the curve: every epoch
    assert any(k.startswith("system/cpu_utilization") for k in metrics)

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    model = mlflow.pyfunc.load_model(f"runs:/{run_id}/model")
    assert model.metadata.get_input_schema().input_names() == ["user_id"]
    top = model.predict(pd.DataFrame({"user_id": [0, 5]}), params={"k": 4})
    assert list(top.columns) == ["user_id", "rank", "item_id", "score"] and len(top) == 8
    seen = dataset.train.concat(dataset.valid)
    for user, rows in top.groupby("user_id"):
        assert list(rows["rank"]) == [1, 2, 3, 4] and (np.diff(rows["score"]) <= 0).all()
        assert not set(rows["item_id"]) & set(seen.items[seen.users == user])  # seen items never recommended
    with pytest.raises(Exception, match="user_id 150 is not a user"):
        model.predict(pd.DataFrame({"user_id": [150]}))

    lines = result.stdout.splitlines()
    assert any("][mlflow.store.db.utils][INFO] - Creating initial MLflow database tables" in l for l in lines)
    assert any(l.startswith("[") and "λ mean user " in l and " item " in l for l in lines)
    [job_log] = tmp_path.glob("outputs/*/*/lambdaopt.log")
    logged = job_log.read_text()
    assert "best epoch" in logged and f"runs/{run_id}?workflowType=machine_learning" in logged
    assert "Creating initial MLflow database tables" in logged
    assert "step/s" not in result.stderr  # not a terminal: no progress bar


def test_the_progress_bar_shows_on_a_terminal_only(monkeypatch):
    monkeypatch.setattr(console, "BAR_DELAY_S", 0.0)
    terminal, pipe = FakeTerminal(), io.StringIO()
    for stream in (terminal, pipe):
        monkeypatch.setattr("sys.stderr", stream)
        assert list(console.within_epoch(iter(range(5)), total=5, epoch=7)) == [0, 1, 2, 3, 4]
    assert "epoch 7" in terminal.getvalue() and "/5 [" in terminal.getvalue()  # tqdm: steps done / total
    assert pipe.getvalue() == ""


def test_a_run_is_the_same_with_and_without_the_progress_bar(monkeypatch):
    cfg = compose_config([*TINY, "tracking.enabled=false", "regularizer=lambdaopt_dui"])
    plain = run(cfg)
    monkeypatch.setattr(console, "BAR_DELAY_S", 0.0)
    monkeypatch.setattr("sys.stderr", FakeTerminal())
    with_bar = run(cfg)
    assert with_bar.test == plain.test and with_bar.best_epoch == plain.best_epoch


def test_the_epoch_line_and_the_closing_rows():
    line = console.epoch_line(12, 0.4321, "valid", {"auc": 0.912, "ndcg@10": 0.1661}, "ndcg@10", (3, 0.16),
                              True, {"reg/user/lambda_mean": 0.0012, "reg/item/lambda_mean": 3.4e-5}, 3.21)
    assert line == ("epoch  12 | loss 0.4321 | valid auc 0.9120 ndcg@10 0.1661 (mean of last 3 0.1600) * | "
                    "λ mean user 0.001200 item 3.400e-05 | 3.21 s")
    assert list(console.result_rows("valid", {"a": 1.0}, {"a": 2.0})) == ["valid", "test"]
    assert list(console.result_rows("eval", {"a": 1.0}, {"a": 1.0})) == ["test"]  # completion: vs W* both
