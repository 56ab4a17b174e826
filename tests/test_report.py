"""The report's table logic and figures on hand-made runs (no MLflow): λ selected per seed on validation,
a grid row's compute is its whole grid's, best per column, deep-MF figure."""
import numpy as np
import pandas as pd

from lambdaopt.report import figures, label_runs, paper_table, to_markdown
from lambdaopt.report.table import metric_columns

from builders import fake_runs
from conftest import empty_store_in


def test_fixed_grid_row_is_the_validation_selected_lambda_with_the_whole_grids_cost():
    runs = label_runs(fake_runs())
    assert set(runs["row"]) == {"MF-λFix", "MF-λOpt-DUI"}
    table = paper_table(runs, ["ndcg_at_10"])
    fixed = table.loc["MF-λFix"]
    assert fixed["selected_lam"] == "0.01, 0.01, 0.01"  # best validation, not the best test (λ=1)
    assert np.isclose(fixed["ndcg_at_10_mean"], 0.251) and fixed["runs"] == 9 and fixed["compute_s"] == 9.0
    assert table.loc["MF-λOpt-DUI", "compute_s"] == 3.0 and table.loc["MF-λOpt-DUI", "seeds"] == 3
    markdown = to_markdown(table, ["ndcg_at_10"])
    assert "**0.2710 ± 0.0008**" in markdown and "NDCG@10" in markdown


def test_runs_differing_in_another_key_get_their_own_rows():
    runs = fake_runs()
    runs["params.optimizer.lr"] = ["0.1" if i >= 4 else "0.01" for i in range(len(runs))]
    labels = set(label_runs(runs)["row"])
    assert "MF-λOpt-DUI [lr=0.1]" in labels and "MF-λOpt-DUI [lr=0.01]" in labels


def test_metric_columns_default_order_and_missing_metric():
    import pytest

    from lambdaopt.errors import ReportError

    runs = pd.DataFrame({"metrics.test/ndcg_at_10": [0.1], "metrics.test/auc": [0.9], "metrics.test/hr_at_10": [0.2]})
    assert metric_columns(runs) == ["auc", "hr_at_10", "ndcg_at_10"]
    with pytest.raises(ReportError, match="no run has metric test/ndcg_at_50"):
        metric_columns(runs, ["ndcg@50"])


def test_figures_are_written(tmp_path):
    runs = label_runs(fake_runs())
    assert figures.lambda_sensitivity(runs, ["ndcg_at_10"], tmp_path / "s.png").stat().st_size > 0
    history = pd.DataFrame({"step": [1, 2, 1, 2], "key": ["reg/user/lambda_mean"] * 2 + ["reg/item/lambda_mean"] * 2,
                            "value": [0.1, 0.2, 0.3, 0.1]})
    assert figures.lambda_trajectories({"MF-λOpt-DUI": history}, tmp_path / "t.png").stat().st_size > 0
    deep = pd.DataFrame([{"params.model.depth": str(d), "params.model.init_scale": s,
                          "metrics.test/rmse": 1e-2 * d, "metrics.effective_rank": 5.0 - d}
                         for d in (2, 3, 4) for s in ("1e-3", "1e-6")])
    assert figures.deep_mf(deep, tmp_path / "d.png").stat().st_size > 0


def test_tuned_fixed_row_selects_lambda_and_lr_per_seed_and_the_figure_selects_per_lambda():
    from lambdaopt.report.table import select_grid_points

    runs = fake_runs()
    fixed = runs[runs["tags.regularizer"] == "FixedL2"]
    # a second learning rate for every fixed-λ run: better on validation at λ = 0 only, worse on test there
    other = fixed.assign(**{"params.optimizer.lr": "100", "run_id": fixed["run_id"] + "b",
                            "metrics.best_valid/ndcg_at_10": fixed["metrics.best_valid/ndcg_at_10"]
                            + np.where(fixed["params.regularizer.lam"] == "0.0", 0.05, -0.05),
                            "metrics.test/ndcg_at_10": fixed["metrics.test/ndcg_at_10"] - 0.1})
    runs = label_runs(pd.concat([runs.assign(**{"params.optimizer.lr": "50"}), other], ignore_index=True))
    assert set(runs["row"]) == {"MF-λFix", "MF-λOpt-DUI"}  # lr is tuned over, not a row of its own
    fixed_row = paper_table(runs, ["ndcg_at_10"]).loc["MF-λFix"]
    assert fixed_row["selected_lam"] == "0.01 lr=50, 0.01 lr=50, 0.01 lr=50" and fixed_row["runs"] == 18
    per_lam = select_grid_points(runs, within=("lam",))
    per_lam = per_lam[per_lam["is_grid"]]
    assert len(per_lam) == 9  # 3 seeds × 3 λ, each the better lr on validation at that λ
    assert set(per_lam.loc[per_lam["lam"] == 0.0, "params.optimizer.lr"]) == {"100"}
    assert set(per_lam.loc[per_lam["lam"] > 0, "params.optimizer.lr"]) == {"50"}


def test_a_report_over_ranking_and_completion_runs_has_one_section_each_and_never_fails(tmp_path, capsys):
    """The README's own `--experiment lambdaopt` once crashed here (a log axis over zeros, metrics mixed)."""
    from mlflow.tracking import MlflowClient

    from lambdaopt.report import write_report

    uri = f"sqlite:///{empty_store_in(tmp_path)}"
    client = MlflowClient(uri)
    experiment = client.create_experiment("mixed", artifact_location=(tmp_path / "art").as_uri())
    for feedback, model, metrics in (
            ("implicit", "MatrixFactorization", {"test/auc": 0.8, "test/ndcg_at_10": 0.2}),
            ("completion", "DeepMatrixFactorization", {"test/relative_error": 7.7e-6, "test/train_mse": 0.0,
                                                        "test/effective_rank": 2.0})):
        for depth in ("2", "3"):
            run = client.create_run(experiment, tags={"model": model, "regularizer": "NoRegularizer",
                                                      "dataset": feedback})
            for key, value in {"dataset.feedback": feedback, "seed": "0", "model.depth": depth}.items():
                client.log_param(run.info.run_id, key, value)
            for key, value in {**metrics, "train_seconds": 1.0}.items():
                client.log_metric(run.info.run_id, key, value)
            client.set_terminated(run.info.run_id)
    written = write_report(uri, "mixed", out=tmp_path / "report")
    table = written["table_md"].read_text()
    assert "## ranking (implicit feedback)" in table and "## matrix completion" in table
    ranking, completion = table.split("## matrix completion")
    assert "relative_error" not in ranking and "NDCG@10" not in completion  # no metric mixed into the other task
    assert "±" not in table  # one seed: no spread to print
    assert "7.7e-06" in completion  # not 0.0000
    assert (tmp_path / "report" / "table-completion.csv").exists()
    assert "lack test/" not in capsys.readouterr().err


def test_the_default_report_folder_is_named_for_what_was_selected():
    from lambdaopt.report import default_out

    assert str(default_out("lambdaopt", None, [])) == "reports/lambdaopt/all"
    assert str(default_out("lambdaopt", "0123456789abcdef", [])) == "reports/lambdaopt/parent-0123456789ab"
    assert str(default_out("lambdaopt", None, [("dataset", "ml-100k")])) == "reports/lambdaopt/dataset=ml-100k"
