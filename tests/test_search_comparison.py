"""λOpt against a search (lambdaopt/conf/sweep/search_vs_lambdaopt*.yaml, `python -m lambdaopt.report --search`), on tiny
synthetic data: per seed the grid's and Optuna's validation-selected λ and λOpt's one run, each with the
summed training seconds of every run it needed."""

import pandas as pd
import pytest

from conftest import FAST, empty_store_in, run_in_process, sweep_runs

pytestmark = pytest.mark.slow
EXPERIMENT = "search_vs_lambdaopt"


@pytest.fixture(scope="module")
def compared(tmp_path_factory):
    """Both sweeps and the report, each run as its command would be, in this process (faster than three)."""
    cwd = tmp_path_factory.mktemp("search")
    empty_store_in(cwd)
    grid = run_in_process("run.py", ["-m", *FAST, "+sweep=search_vs_lambdaopt", "regularizer.lam=0,1e-2", "seed=0,1"],
                          cwd, {})
    assert grid.returncode == 0, grid.stderr
    search = run_in_process("run.py", ["-m", *FAST, "+sweep=search_vs_lambdaopt_optuna", "seed=0,1",
                                       "hydra.sweeper.n_trials=2"], cwd, {})
    assert search.returncode == 0, search.stderr
    report = run_in_process("report", ["--experiment", EXPERIMENT, "--search", "--metrics", "ndcg@10,auc",
                                       "--out", str(cwd / "report")], cwd, {})
    assert report.returncode == 0, report.stderr
    return cwd, report.stdout


def test_search_table_selects_on_validation_and_sums_each_methods_compute(compared):
    cwd, printed = compared
    _, _, runs = sweep_runs(cwd, EXPERIMENT)
    assert len(runs) == 2 * 2 + 2 + 2 * 2  # grid 2 λ × 2 seeds, λOpt × 2 seeds, Optuna 2 trials × 2 seeds
    table = pd.read_csv(cwd / "report" / "search.csv")
    assert sorted(zip(table["seed"], table["method"])) == sorted(
        (seed, method) for seed in (0, 1) for method in ("grid", "Optuna", "λOpt-DUI"))
    for _, row in table.iterrows():
        def method_of(r):
            if r.data.tags["regularizer"] != "FixedL2":
                return "λOpt-DUI"
            return "Optuna" if "optuna_study" in r.data.tags else "grid"

        mine = [r for r in runs if r.data.params["seed"] == str(row["seed"]) and method_of(r) == row["method"]]
        assert row["runs"] == len(mine) == (1 if row["method"] == "λOpt-DUI" else 2)
        assert row["compute_s"] == pytest.approx(sum(r.data.metrics["train_seconds"] for r in mine))
        valid = {r.info.run_id: r.data.metrics["best_valid/ndcg_at_10_smoothed"] for r in mine}
        assert row["valid"] == valid[row["run_id"]] == max(valid.values())  # validation decides (ties: either)
        chosen = next(r for r in mine if r.info.run_id == row["run_id"])
        assert row["ndcg_at_10"] == chosen.data.metrics["test/ndcg_at_10"]  # its test value, reported only
    assert "| seed | method | runs | λ | valid ndcg_at_10 | NDCG@10 | AUC | compute |" in printed
    assert printed.count("| mean |") == 3 and (cwd / "report" / "search.md").read_text().strip() in printed


def test_search_table_without_an_optuna_arm_is_one_line(compared, capsys, monkeypatch):
    from lambdaopt.report.__main__ import main

    cwd, _ = compared
    monkeypatch.chdir(cwd)
    assert main(["--experiment", EXPERIMENT, "--search", "--tag", "regularizer=FixedL2", "--out", "x"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: a search comparison needs grid runs, Optuna trials and a λOpt run")
