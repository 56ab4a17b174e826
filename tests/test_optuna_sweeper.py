"""`hydra/sweeper=optuna_study`: search spaces, samplers and pruners by name, a stored study that resumes,
trials through the basic, joblib and submitit launchers, two processes on one study, the objective on
validation (never test), FAIL and PRUNED trials, one MLflow parent with the best trial's metrics, and
one-line errors."""
import json
import os
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from conftest import FAST, ROOT, empty_store_in, one_error_line, run_cli, run_in_process, sweep_runs
from lambdaopt.errors import ConfigError
from lambdaopt.search import build_plugin, open_storage, search_space

SEARCH = [*FAST, "+sweep=optuna_lambda", "hydra.sweeper.n_jobs=2"]


def shared_trials(storage: str) -> list:
    """The trials of study "shared" in `storage` (none before it exists)."""
    try:
        return optuna.load_study(study_name="shared", storage=open_storage(storage)).trials
    except KeyError:  # not created yet
        return []


def study(cwd, name="optuna_lambda"):
    return optuna.load_study(study_name=name, storage=f"sqlite:///{cwd}/optuna.db")


# ----------------------------------------------------------------------------- parsing (fast)
def test_search_space_builds_optuna_distributions():
    space = search_space({"regularizer.lam": {"type": "float", "low": 1e-6, "high": 10, "log": True},
                          "optimizer.lr": {"type": "float", "low": 1, "high": 100},
                          "model.dim": {"type": "int", "low": 8, "high": 64, "step": 8},
                          "regularizer.granularity": {"type": "categorical", "choices": ["d", "du", "dui"]}})
    assert space["regularizer.lam"] == optuna.distributions.FloatDistribution(1e-6, 10, log=True)
    assert space["optimizer.lr"] == optuna.distributions.FloatDistribution(1, 100)
    assert space["model.dim"] == optuna.distributions.IntDistribution(8, 64, step=8)
    assert space["regularizer.granularity"] == optuna.distributions.CategoricalDistribution(["d", "du", "dui"])


@pytest.mark.parametrize("params,needle", [
    ({"regularizer.lam": "tag(log, interval(1e-6, 10))"}, "is not a search space: use a mapping with type"),
    ({"regularizer.lam": {"type": "loguniform", "low": 1e-6, "high": 1}}, "is not a search space"),
    ({"regularizer.lam": {"type": "float", "low": 0, "high": 1, "log": True}}, "regularizer.lam"),
    ({"regularizer.lam": {"type": "float", "low": 1e-6}}, "missing 'high'"),
    ({"model.dim": {"type": "int", "low": 8, "high": 64, "scale": 2}}, "unknown option 'scale' for type int"),
    ({}, "hydra.sweeper.params is empty"),
])
def test_bad_search_space_is_one_clear_error(params, needle):
    with pytest.raises(ConfigError) as error:
        search_space(params)
    assert needle in str(error.value) and "\n" not in str(error.value)


def test_samplers_and_pruners_by_name_with_keyword_arguments():
    sampler = build_plugin("sampler", {"name": "RandomSampler", "seed": 3})
    assert isinstance(sampler, optuna.samplers.RandomSampler)
    pruner = build_plugin("pruner", {"name": "MedianPruner", "n_warmup_steps": 4})
    assert isinstance(pruner, optuna.pruners.MedianPruner) and pruner._n_warmup_steps == 4
    assert isinstance(build_plugin("sampler", "TPESampler"), optuna.samplers.TPESampler)
    assert build_plugin("pruner", None) is None
    with pytest.raises(ConfigError, match="'Tpe' is not an Optuna sampler: use one of .*TPESampler"):
        build_plugin("sampler", {"name": "Tpe"})
    with pytest.raises(ConfigError, match="MedianPruner\\(n_warmup=3\\) fails"):
        build_plugin("pruner", {"name": "MedianPruner", "n_warmup": 3})


def test_unreachable_storage_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot open the Optuna storage .*use a reachable SQLAlchemy URL"):
        open_storage("postgresql://nobody:x@127.0.0.1:1/optuna")
    with pytest.raises(ConfigError, match="the folder .*/missing does not exist"):
        open_storage(f"sqlite:///{tmp_path}/missing/optuna.db")
    journal = open_storage(f"journal:{tmp_path}/study.log")  # Optuna's journal file: no SQLite locking
    assert isinstance(journal, optuna.storages.JournalStorage)


# ----------------------------------------------------------------------------- end to end (slow)
@pytest.mark.slow
def test_search_optimizes_validation_resumes_and_reports_to_one_parent(tmp_path):
    empty_store_in(tmp_path)
    result = run_in_process("run.py", ["-m", *SEARCH, "hydra.sweeper.n_trials=3"], tmp_path, {})
    assert result.returncode == 0, result.stderr
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [TrialState.COMPLETE] * 3
    client, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED" and len(children) == 3
    parent = parents[0]
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parent.info.run_id}
    assert parent.data.params["swept_keys"] == "regularizer.lam"
    by_run = {c.info.run_id: c for c in children}
    for trial in trials:  # each trial's value is its run's validation value, never test
        run = by_run[trial.user_attrs["mlflow_run_id"]]
        assert trial.value == run.data.metrics["best_valid/ndcg_at_10_smoothed"]
        assert trial.value != run.data.metrics["test/ndcg_at_10"]
        assert float(run.data.params["regularizer.lam"]) == trial.params["regularizer.lam"]
        assert run.data.tags["optuna_study"] == "optuna_lambda" and run.data.tags["optuna_trial"] == str(trial.number)
        assert sorted(trial.intermediate_values) == [1, 2]  # one report per evaluated epoch
        assert trial.intermediate_values[2] == run.data.metrics["valid/ndcg_at_10_smoothed"]
    best = by_run[study(tmp_path).best_trial.user_attrs["mlflow_run_id"]]
    assert parent.data.metrics["test/ndcg_at_10"] == best.data.metrics["test/ndcg_at_10"]  # the best trial's
    assert parent.data.tags["best_child"].endswith(f"({best.info.run_id})")

    # the same command with a larger budget resumes the stored study: only the missing trials run
    result = run_in_process("run.py", ["-m", *SEARCH, "hydra.sweeper.n_trials=5"], tmp_path, {})
    assert result.returncode == 0, result.stderr
    assert [t.state for t in study(tmp_path).trials] == [TrialState.COMPLETE] * 5
    _, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 2 and len(children) == 5
    assert "3 of 5 trials there" in result.stdout + result.stderr


@pytest.mark.filterwarnings("ignore:BruteForceSampler is experimental")  # Optuna's note to a user, chosen here
@pytest.mark.slow
def test_joblib_trials_pruned_failed_and_one_study_per_seed(tmp_path):
    # ThresholdPruner(lower=2): every NDCG is below 2, so each trial is pruned at its first step past
    # warm-up (epoch 2 of 6);
    # optimizer.lr=0 is refused by the job (a FAILED dict), which the study records as FAIL.
    empty_store_in(tmp_path)
    pruner = json.dumps({"name": "ThresholdPruner", "lower": 2.0, "n_warmup_steps": 2}).replace('"', "")
    # the sweeper and launcher in this process, the trials in the 2 loky worker processes
    result = run_in_process("run.py", [
        "-m", *FAST, "+sweep=optuna_lambda", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
        "trainer.max_epochs=6", "trainer.min_epochs=0", "trainer.patience=0", "seed=0,1",
        "regularizer.lam=1e-3",  # set on the command line: not searched
        "hydra.sweeper.n_trials=2", "hydra.sweeper.pruner=null", f"hydra.sweeper.pruner={pruner}",
        "+hydra.sweeper.params.optimizer.lr={type: categorical, choices: [0.0, 50.0]}",
        "hydra.sweeper.sampler=null", "hydra.sweeper.sampler={name: BruteForceSampler, seed: 0}",
    ], tmp_path, {})  # (`=null` first: a new mapping would be merged into the preset's)
    assert result.returncode == 0, result.stderr
    _, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FAILED"  # a trial failed
    for seed in (0, 1):
        trials = study(tmp_path, f"optuna_lambda[seed={seed}]").trials
        assert sorted(t.state.name for t in trials) == ["FAIL", "PRUNED"]
        pruned = next(t for t in trials if t.state == TrialState.PRUNED)
        failed = next(t for t in trials if t.state == TrialState.FAIL)
        assert pruned.params["optimizer.lr"] == 50.0 and sorted(pruned.intermediate_values) == [1, 2]
        assert failed.params["optimizer.lr"] == 0.0 and "optimizer.lr=0.0 is not allowed" in failed.user_attrs["error"]
        run = next(c for c in children if c.info.run_id == pruned.user_attrs["mlflow_run_id"])
        assert run.info.status == "FINISHED" and run.data.tags["optuna_pruned_at_epoch"] == "2"
        assert run.data.params["seed"] == str(seed) and run.data.metrics["best_epoch"] <= 2
    assert len(children) == 2  # the failed trials were refused before their runs opened


@pytest.mark.slow
def test_two_processes_work_on_one_study_through_basic_and_submitit_launchers(tmp_path):
    """Two sweeps at once on one stored study (Optuna's journal file: no SQLite locking) share its budget —
    trials running in the other process count: one through submitit in a process of its own, one with the
    basic launcher in this process, started once the other has taken its first trial (in this process it
    needs no start-up, and would otherwise run the whole budget before the other one asks)."""
    empty_store_in(tmp_path)
    storage = f"journal:{tmp_path}/study.log"
    args = [*SEARCH, "hydra.sweeper.n_jobs=1", "hydra.sweeper.n_trials=6", f"hydra.sweeper.storage={storage}",
            "hydra.sweeper.study_name=shared"]
    other = subprocess.Popen([sys.executable, str(ROOT / "run.py"), "-m", *args, "hydra/launcher=submitit_local"],
                             cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(f"{tmp_path}/study.log") or not shared_trials(storage):
            assert other.poll() is None, other.communicate()[1][-2000:]
            assert time.monotonic() < deadline, "the other sweep took no trial in 120 s"
            time.sleep(0.2)
        here = run_in_process("run.py", ["-m", *args], tmp_path, {})
        _, other_stderr = other.communicate(timeout=600)
    finally:
        other.kill()
    assert here.returncode == 0, here.stderr[-2000:]
    assert other.returncode == 0, other_stderr[-2000:]
    trials = shared_trials(storage)
    # 6 asked in all; two processes counting at the same moment may each ask the last one (one extra)
    assert 6 <= len(trials) <= 7 and all(t.state == TrialState.COMPLETE for t in trials)
    _, parents, children = sweep_runs(tmp_path)
    assert len(parents) == 2 and len(children) == len(trials)
    assert sorted(p.data.tags["launcher"] for p in parents) == ["BasicLauncher", "LocalLauncher"]  # submitit_local
    assert all(run.info.status == "FINISHED" for run in [*parents, *children])
    per_parent = {p.info.run_id: sum(c.data.tags["mlflow.parentRunId"] == p.info.run_id for c in children)
                  for p in parents}
    assert all(n >= 1 for n in per_parent.values()), per_parent  # both processes ran trials of the study
    assert {c.data.tags["optuna_trial"] for c in children} == {str(t.number) for t in trials}


@pytest.mark.filterwarnings("ignore:BruteForceSampler is experimental")  # Optuna's note to a user, chosen here
@pytest.mark.slow
@pytest.mark.parametrize("args,needle,in_process", [
    (["hydra.sweeper.storage=postgresql://nobody:x@127.0.0.1:1/optuna"], "cannot open the Optuna storage", False),
    (["+hydra.sweeper.params.optimizer.lr={type: float, low: 10, high: 1}"], "optimizer.lr: `low <= high`", True),
    (["hydra.sweeper.sampler={name: BruteForceSampler}"], "step must be given for BruteForceSampler", True),
])
def test_bad_search_is_one_line_and_runs_nothing(tmp_path, args, needle, in_process):
    """One case as the process it is: the sweep's empty parent run is deleted at exit (parent_run.py's
    atexit step, which only a process exit runs); the others in this process, to the same one line."""
    empty_store_in(tmp_path)
    if in_process:
        result = run_in_process("run.py", ["-m", *SEARCH, *args], tmp_path, {})
    else:
        result = run_cli(["-m", *SEARCH, *args], tmp_path)
    one_error_line(result, needle)
    _, parents, children = sweep_runs(tmp_path)
    assert not children and (in_process or not [p for p in parents if p.info.lifecycle_stage == "active"])
