"""Completion, sensing, nuclear norm and rating regression through the real entry point."""
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient

from conftest import compose_config, fails_in_one_line, run_in
from lambdaopt.experiment import run

pytestmark = pytest.mark.slow

SMALL = ["dataset=lowrank", "dataset.n=20", "dataset.rank=2", "dataset.n_train_samples=200",
         "trainer.steps_per_epoch=50", "trainer.max_epochs=40", "evaluation.spectrum_top_k=4"]


def test_deep_mf_completion_logs_metrics_and_singular_value_artifacts(tmp_path):
    run_in(tmp_path, [*SMALL, "model=deep_mf", "model.depth=3", "optimizer=group_rmsprop", "optimizer.lr=1e-2"])
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run_info = client.search_runs([client.get_experiment_by_name("lambdaopt").experiment_id])[0]
    metrics = run_info.data.metrics
    for name in ("train_loss", "eval/relative_error", "eval/effective_rank", "eval/nuclear_norm",
                 "eval/sigma_1", "eval/grad_norm", "eval/param_norm", "test/relative_error"):
        assert name in metrics, name
    assert metrics["test/relative_error"] < 0.05  # 200 of 400 entries of a rank-2 matrix: depth 3 recovers it
    artifacts = {a.path for a in client.list_artifacts(run_info.info.run_id)}
    assert {"singular_values.parquet", "singular_values.png", "singular_values.pdf", "completion_data.npz"} <= artifacts
    local = client.download_artifacts(run_info.info.run_id, "singular_values.parquet", str(tmp_path))
    table = pd.read_parquet(local)
    assert list(table.columns) == ["step", "index", "value"] and set(table["index"]) == {1, 2, 3, 4}
    assert table["step"].max() == 50 * len(client.get_metric_history(run_info.info.run_id, "train_loss"))
    # from the initialization on, log-spaced within the first epoch, then at every evaluation
    assert {0, 1, 2, 3, 4, 6, 7, 10, 13, 18, 24, 32, 50, 100} <= set(table["step"])
    assert table.groupby("step").size().eq(4).all()  # one snapshot per step, not one per recording route


def test_sensing_svd_mf_and_nuclear_norm_run_in_process():
    sensing = run(compose_config([*SMALL, "model=deep_mf", "dataset.sensing=true", "dataset.n_train_samples=300",
                                  "optimizer=group_rmsprop", "optimizer.lr=1e-2", "tracking.enabled=false"])).test
    assert sensing["relative_error"] < 0.05
    svd = run(compose_config([*SMALL, "model=svd_mf", "optimizer=adam", "optimizer.lr=1e-2",
                              "trainer.max_epochs=10", "tracking.enabled=false"])).test
    assert svd["train_mse"] < 0.1
    convex = run(compose_config([*SMALL, "model=nuclear_norm", "tracking.enabled=false"])).test
    assert convex["train_mse"] < 1e-6 and convex["relative_error"] < 0.1


def test_explicit_ratings_beat_the_mean_rating():
    overrides = ["dataset.feedback=explicit", "dataset.n_users=150", "dataset.n_items=120",
                 "dataset.mean_interactions=15", "model.dim=8", "model.user_bias=true", "model.item_bias=true",
                 "optimizer=adam", "optimizer.lr=1e-2", "trainer.max_epochs=15", "trainer.batch_size=256", "tracking.enabled=false"]
    test = run(compose_config(overrides)).test
    assert set(test) == {"rmse", "mae", "mse"}
    assert test["rmse"] < 1.41  # ratings are quintiles 1–5: predicting the mean gives RMSE √2
    data_and_training = [o for o in overrides if not o.startswith("model.")]
    deep = run(compose_config([*data_and_training, "model=deep_mf", "model.depth=2", "model.init_scale=1e-1",
                               "trainer.full_batch=true", "trainer.steps_per_epoch=20"])).test
    assert deep["rmse"] < 1.5


@pytest.mark.parametrize("args,needle", [
    (["model=deep_mf", "model.depth=0"], "model.depth=0"),
    (["dataset.rank=30"], "dataset.rank=30"),
    (["dataset.n_train_samples=401"], "dataset.n_train_samples=401"),
    (["model=svd_mf", "dataset.m=10", "model.rank=15"], "model.rank=15"),
    (["model=nuclear_norm", "dataset=synthetic"], "nuclear_norm"),
])
def test_bad_completion_input_is_one_line(args, needle):
    base = [o for o in SMALL if not o.startswith("dataset")] if "dataset=synthetic" in args else SMALL
    fails_in_one_line([*base, *args, "dataset.n_users=60", "dataset.n_items=50", "dataset.mean_interactions=10",
                       "evaluation.ks=[5]"] if "dataset=synthetic" in args else [*base, *args], needle)
