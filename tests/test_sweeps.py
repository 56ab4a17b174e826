"""Sweeps end to end: presets, the union sweeper, MLflow parent runs under the basic launcher (joblib:
test_concurrency.py; submitit: test_optuna_sweeper.py's two processes and test_slurm.py), the report on
the runs a sweep made, and the one-line errors."""
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf, open_dict

from conftest import FAST, ROOT, compose_config, empty_store_in, run_cli, run_in_process, sweep_runs


# ----------------------------------------------------------------------------- presets (fast)
PRESETS = sorted(p.stem for p in (ROOT / "lambdaopt" / "conf" / "sweep").glob("*.yaml"))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_composes_and_validates(name):
    from hydra import compose, initialize_config_module

    from lambdaopt.config import validate

    with initialize_config_module("lambdaopt.conf", version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"+sweep={name}"], return_hydra_config=True)
    assert cfg.hydra.sweeper.params or cfg.hydra.sweeper.grids
    assert cfg.hydra.callbacks.mlflow_parent_run._target_ == "lambdaopt.parent_run.MlflowParentRun"
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)


def test_fixed_grid_is_the_papers():
    cfg = compose_config(["+sweep=fixed_lambda_grid"])
    assert cfg.regularizer._target_.endswith("FixedL2")
    grid = OmegaConf.load(ROOT / "lambdaopt" / "conf" / "sweep" / "fixed_lambda_grid.yaml").hydra.sweeper.params["regularizer.lam"]
    assert [float(v) for v in grid.split(",")] == [0, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1, 10]


def test_union_sweeper_expands_each_grid_and_routes_command_line_overrides(tmp_path):
    from hydra_plugins.lambdaopt_sweeper.union_sweeper import UnionSweeper

    preset = OmegaConf.load(ROOT / "lambdaopt" / "conf" / "sweep" / "paper_table.yaml").hydra.sweeper
    sweeper = UnionSweeper(max_batch_size=None, params=dict(preset.params),
                           grids=[dict(g) for g in preset.grids])
    launched = []
    sweeper.hydra_context = SimpleNamespace(config_loader=None)
    sweeper.config = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}})
    sweeper.launcher = SimpleNamespace(launch=lambda batch, initial_job_idx: launched.extend(batch) or [])
    sweeper.validate_batch_is_legal = lambda batch: None
    sweeper.sweep([])
    assert len(launched) == (12 + 2 + 3 + 2 + 1 + 4) * 3  # tuned fixed grid (SGD, Adam, slow SGD), SGDA + AMF, NeuMF, λOpt D/DU/DI/DUI
    launched.clear()
    sweeper = UnionSweeper(max_batch_size=None, params=dict(preset.params), grids=[dict(g) for g in preset.grids])
    sweeper.hydra_context, sweeper.config, sweeper.validate_batch_is_legal = (
        SimpleNamespace(config_loader=None), OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path)}}}),
        lambda batch: None)
    sweeper.launcher = SimpleNamespace(launch=lambda batch, initial_job_idx: launched.extend(batch) or [])
    sweeper.sweep(["regularizer.lam=0,1e-2", "seed=0", "model.dim=8"])  # λ only shrinks the fixed grid
    assert len(launched) == 3 * 2 + 2 + 2 + 2 + 1 + 4  # λ replaced in every fixed grid (3 + 1 SGD lr, 1 Adam lr)
    assert all("model.dim=8" in job and "seed=0" in job for job in launched)
    assert sum("regularizer.lam=0.01" in job for job in launched) == 5
    assert not any("regularizer.lam=0.01" in job for job in launched if "regularizer=lambdaopt_d" in job)


# ----------------------------------------------------------------------------- end to end (slow)
@pytest.fixture(scope="module")
def grid_sweep(tmp_path_factory):
    """A 2 × 2 grid (λ × seed) under the basic launcher, run once for the tests below."""
    cwd = tmp_path_factory.mktemp("grid")
    empty_store_in(cwd)
    result = run_in_process("run.py", ["-m", *FAST, "regularizer.lam=0,1e-2", "seed=0,1"], cwd, {})
    assert result.returncode == 0, result.stderr
    (cwd / "stdout.txt").write_text(result.stdout)
    return cwd


@pytest.mark.slow
def test_basic_launcher_grid_gives_one_parent_and_finished_children(grid_sweep):
    client, parents, children = sweep_runs(grid_sweep)
    assert len(parents) == 1 and len(children) == 4
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.data.tags["n_jobs"] == "4"
    assert parent.data.tags["n_failed"] == "0" and "regularizer.lam=0,1e-2 seed=0,1" in parent.data.tags["overrides"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    combos = {(c.data.params["regularizer.lam"], c.data.params["seed"]) for c in children}
    assert combos == {("0.0", "0"), ("0.0", "1"), ("0.01", "0"), ("0.01", "1")}
    assert {c.data.tags["job_num"] for c in children} == {"0", "1", "2", "3"}
    for child in children:
        lam = "0" if child.data.params["regularizer.lam"] == "0.0" else "0.01"
        assert f"regularizer.lam={lam} seed={child.data.params['seed']}" in child.data.tags["overrides"]
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {"report/table.md", "report/table.csv", "report/lambda_sensitivity.png"} <= artifacts
    assert "sweep.yaml" in {a.path for a in client.list_artifacts(parent.info.run_id)}
    # what a person sees in the run list: names that differ, a description, and the sweep's result on the parent
    names = sorted(c.info.run_name for c in children)
    assert names == sorted(f"fixed λ={lam} · MF · synthetic · seed {seed}" for lam in ("0", "0.01") for seed in (0, 1))
    assert all("selected on validation ndcg@10" in c.data.tags["mlflow.note.content"] for c in children)
    assert sorted(parent.data.params["swept_keys"].split(",")) == ["regularizer.lam", "seed"]
    best = max(children, key=lambda c: (c.data.metrics["best_valid/ndcg_at_10_smoothed"], -int(c.data.tags["job_num"])))
    assert parent.data.metrics["test/ndcg_at_10"] == best.data.metrics["test/ndcg_at_10"]
    assert parent.data.tags["mlflow.note.content"].startswith("Sweep over regularizer.lam, seed; best on validation")
    assert "| MF-λFix |" in parent.data.tags["mlflow.note.content"]
    printed = (grid_sweep / "stdout.txt").read_text()  # the table and how to browse, once, at the end
    assert printed.count("mlflow ui --backend-store-uri") == 1 and printed.count("| MF-λFix |") == 1
    assert "Browse the sweep: mlflow ui" in printed and f"runs/{parent.info.run_id}?workflowType=machine_learning" in printed


@pytest.mark.slow
def test_report_cli_writes_table_and_figures(grid_sweep):
    out = grid_sweep / "report_out"
    result = subprocess_report(["--experiment", "lambdaopt", "--out", str(out)], grid_sweep)
    assert result.returncode == 0, result.stderr
    assert "MF-λFix" in result.stdout and "NDCG@10" in result.stdout and "±" in result.stdout
    for name in ("table.csv", "table.md", "runs.csv", "lambda_sensitivity.png"):
        assert (out / name).stat().st_size > 0, name
    table = (out / "table.md").read_text()
    assert table.count("\n| MF-λFix") == 1 and "| 2 | 4 |" in table  # 2 seeds, 4 runs: λ chosen per seed


@pytest.mark.slow
@pytest.mark.parametrize("args,needle", [
    (["--experiment", "nope"], "no experiment 'nope'"),
    (["--metrics", "ndcg@20"], "test/ndcg_at_20"),
    (["--tag", "dataset=ml-100k"], "no runs in experiment 'lambdaopt' with tag dataset=ml-100k"),
])
def test_report_bad_input_is_one_line(grid_sweep, capsys, monkeypatch, args, needle):
    from lambdaopt.report.__main__ import main

    monkeypatch.chdir(grid_sweep)
    assert main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


def test_report_without_a_database_is_one_line(tmp_path, capsys, monkeypatch):
    from lambdaopt.report.__main__ import main

    monkeypatch.chdir(tmp_path)
    assert main(["--experiment", "lambdaopt"]) == 2
    assert capsys.readouterr().err.startswith("error: no MLflow database at mlflow.db")
    assert not (tmp_path / "mlflow.db").exists()


def subprocess_report(args, cwd):
    import subprocess

    return subprocess.run([sys.executable, "-m", "lambdaopt.report", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_a_failed_job_fails_the_parent_and_is_named(tmp_path):
    empty_store_in(tmp_path)
    result = run_in_process("run.py", ["-m", *FAST, "optimizer.lr=0,1e-2"], tmp_path, {})
    assert result.returncode == 0, result.stderr  # a user error does not stop the sweep
    _, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FAILED"
    assert "optimizer.lr=0" in parents[0].data.tags["failed_jobs"] and parents[0].data.tags["n_failed"] == "1"
    assert len(children) == 1 and children[0].info.status == "FINISHED"  # lr=0 failed before its run opened
    status = json.loads(next((Path(parents[0].data.tags["sweep_dir"]) / "job_status").glob("0.json")).read_text())
    assert status["status"] == "FAILED"


@pytest.mark.slow
@pytest.mark.parametrize("args,needle,in_process", [
    (["+sweep=nope"], "Could not find 'sweep/nope'", True),
    # fails after the parent run opened: it is deleted at the process's exit (atexit), so a process of its own
    (["no_such_key=1,2"], "no_such_key", False),
])
def test_bad_sweeps_are_reported_by_hydra_and_leave_no_parent(tmp_path, args, needle, in_process):
    empty_store_in(tmp_path)
    result = (run_in_process("run.py", ["-m", *FAST, *args], tmp_path, {}) if in_process
              else run_cli(["-m", *FAST, *args], tmp_path))
    assert result.returncode != 0 and needle in result.stderr and "Traceback" not in result.stderr
    _, parents, children = sweep_runs(tmp_path)
    assert not [p for p in parents if p.info.lifecycle_stage == "active"] and not children
