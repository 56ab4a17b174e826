"""Faults beyond a bad value or file: concurrent first runs, no permission, killed writers, a corrupt
cached raw file, ids far beyond the row count, metrics the data cannot define, too many threads.

Permission cases run the command's entry point, all in one process (tests/run_cases.py), without the
right to bypass file permissions: as root (as in CI) through `setpriv` with CAP_DAC_OVERRIDE and
CAP_DAC_READ_SEARCH dropped, otherwise as is.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from conftest import ROOT, TINY, Outcome, compose_config, one_error_line
from lambdaopt.data import fetch
from lambdaopt.data.interactions import Interactions
from lambdaopt.data.real import load_dataset
from lambdaopt.data.scratch import owner_tag, remove_stale
from lambdaopt.errors import DataError
from lambdaopt.evaluation.ranking import RankingEvaluator

U_DATA = "".join(f"{u}\t{i}\t4\t{880000000 + 100 * u + i}\n" for u in range(1, 31) for i in range(1, 21))


def unprivileged(command: list[str]) -> list[str]:
    """`command` without the right to ignore file permissions (root keeps it unless dropped)."""
    if os.geteuid() != 0:
        return command
    return ["setpriv", "--bounding-set=-dac_override,-dac_read_search", *command]


# ----------------------------------------------------------------------------- concurrency
# One process imports MLflow once and forks the openers (12 imports would cost ~35 s of CPU): each child is
# a process of its own with its own SQLite connection, as concurrent runs are, released together once
# every one is ready. Exit status: the number of children that failed.
STORE_OPENERS = """
import os, sys, traceback
import mlflow.tracking, mlflow.store.tracking.sqlalchemy_store  # imported once, before the fork
from lambdaopt.tracking import ensure_experiment
folders, per_folder = sys.argv[1:-1], int(sys.argv[-1])
go_read, go_write = os.pipe()
children = []
for folder in folders:
    for _ in range(per_folder):
        pid = os.fork()
        if pid == 0:  # the child: wait for the release, open the fresh store, exit 0 or 1
            os.close(go_write)
            os.read(go_read, 1)
            try:
                ensure_experiment(f"sqlite:///{folder}/mlflow.db", "lambdaopt", f"{folder}/art")
                code = 0
            except BaseException:
                traceback.print_exc()
                code = 1
            sys.stderr.flush()
            os._exit(code)
        children.append(pid)
os.close(go_read)
os.write(go_write, b"x" * len(children))  # the release: every child reads its byte at once
sys.exit(sum(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]) != 0 for pid in children))
"""


def test_runs_started_together_in_a_fresh_folder_share_one_intact_store(tmp_path):
    """Before the creation lock, 2 runs started at once left mlflow.db half-migrated in 3 of 6 tries.
    Three fresh folders, four processes each, all released at once."""
    from mlflow.tracking import MlflowClient

    folders = [tmp_path / str(attempt) for attempt in range(3)]
    for folder in folders:
        folder.mkdir()
    result = subprocess.run([sys.executable, "-c", STORE_OPENERS, *map(str, folders), "4"], capture_output=True,
                            text=True, timeout=240, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    for folder in folders:
        client = MlflowClient(tracking_uri=f"sqlite:///{folder}/mlflow.db")
        assert sorted(e.name for e in client.search_experiments()) == ["Default", "lambdaopt"]  # one, not 4 or a crash


# ----------------------------------------------------------------------------- permissions
@pytest.fixture(scope="module")
def permission_cases(tmp_path_factory):
    """Each case's folder, command and outcome."""
    base = tmp_path_factory.mktemp("permissions")
    cases = {}

    def folder(name):
        path = base / name
        path.mkdir()
        return path

    data = folder("unreadable_file")
    (data / "u.data").write_text(U_DATA)
    (data / "u.data").chmod(0)
    cases["unreadable data file"] = (data, ["dataset=ml-100k", f"dataset.path={data / 'u.data'}",
                                            f"dataset.cache_dir={data / 'cache'}"])
    empty = folder("unwritable_empty_cache")
    (empty / "cache").mkdir(mode=0o555)
    cases["unwritable empty cache"] = (empty, ["dataset=ml-100k", f"dataset.cache_dir={empty / 'cache'}"])
    holding = folder("unwritable_cache_with_raw")
    raw = holding / "cache" / "raw" / "ml-100k"
    raw.mkdir(parents=True)
    (raw / "u.data").write_text(U_DATA)  # not the published counts: it must be moved aside, which it cannot
    for path in (raw, raw.parent, raw.parent.parent):
        path.chmod(0o555)
    cases["unwritable cache holding a raw file"] = (holding, ["dataset=ml-100k", f"dataset.cache_dir={holding / 'cache'}"])
    readonly_cache = folder("readonly_cache_own_file")
    (readonly_cache / "u.data").write_text(U_DATA)
    (readonly_cache / "cache").mkdir(mode=0o555)
    cases["read-only cache, own file"] = (readonly_cache, [
        "dataset=ml-100k", f"dataset.path={readonly_cache / 'u.data'}", f"dataset.cache_dir={readonly_cache / 'cache'}",
        "dataset.min_user_interactions=3", "model.dim=4", "trainer.max_epochs=1", "evaluation.ks=[5]",
        "tracking.enabled=false"])
    launch = folder("readonly_launch")
    launch.chmod(0o555)
    cases["read-only launch folder"] = (launch, [*TINY])

    # all cases in one unprivileged process (tests/run_cases.py), each as the command would run it
    result = subprocess.run(unprivileged([sys.executable, str(ROOT / "tests" / "run_cases.py")]), capture_output=True,
                            text=True, timeout=300, input=json.dumps([[str(cwd), args] for cwd, args in cases.values()]),
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr[-3000:]
    outcomes = [Outcome(*outcome) for outcome in json.loads(result.stdout.splitlines()[-1])]
    yield {name: (cases[name][0], outcome) for name, outcome in zip(cases, outcomes)}
    for path in base.rglob("*"):  # let pytest clean up
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() else 0o644)
    base.chmod(0o755)


@pytest.mark.parametrize("name,needle", [
    ("unreadable data file", "u.data: no permission to read it (dataset.path)"),
    ("unwritable empty cache", "cannot write the raw file there (Permission denied); set dataset.cache_dir=DIR or $LAMBDAOPT_CACHE"),
    ("unwritable cache holding a raw file", "could not be moved aside (Permission denied): delete it, or set dataset.cache_dir"),
    ("read-only launch folder", "cannot write in the launch directory"),
])
def test_no_permission_is_one_line_naming_the_path_and_the_fix(permission_cases, name, needle):
    folder, result = permission_cases[name]
    line = one_error_line(result)
    assert needle in line, line
    assert str(folder) in line or name == "unreadable data file" and "u.data" in line


def test_a_read_only_cache_costs_only_the_caching(permission_cases):
    folder, result = permission_cases["read-only cache, own file"]
    assert result.returncode == 0, result.stderr
    assert "the splits are not cached" in result.stdout and "best epoch" in result.stdout  # Hydra logs to stdout


# ----------------------------------------------------------------------------- leftovers of killed writers
def test_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid that no longer runs
    live_tag, dead_tag = owner_tag(), owner_tag().replace(f".{os.getpid()}@", f".{dead.pid}@")
    processed = tmp_path / "cache" / "processed"
    raw = tmp_path / "cache" / "raw" / "ml-100k"
    for folder in (processed, raw):
        folder.mkdir(parents=True)
    (processed / f".tmp-ml-100k-abc{dead_tag}x1").mkdir()
    (processed / f".tmp-ml-100k-abc{live_tag}x2").mkdir()
    old = processed / ".tmp-ml-100k-abc-x3"  # an older name without an owner: removed once a day old
    old.mkdir()
    os.utime(old, (time.time() - 2 * 86400,) * 2)
    (raw / f".download{dead_tag}y1").mkdir()
    (raw / f".u.data{dead_tag}part").write_text("half")
    (raw / f".u.data{live_tag}part").write_text("in progress")

    path = tmp_path / "u.data"
    path.write_text(U_DATA)
    load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "cache"))  # writes a processed entry
    assert sorted(p.name for p in processed.iterdir() if p.name.startswith(".")) == [f".tmp-ml-100k-abc{live_tag}x2"]
    remove_stale(raw, (".download", ".u.data"))  # what fetch() does before downloading
    assert sorted(p.name for p in raw.iterdir()) == [f".u.data{live_tag}part"]


def test_a_truncated_raw_file_in_the_cache_is_set_aside_and_fetched_again(tmp_path, monkeypatch, caplog):
    import pandas as pd

    frame = pd.DataFrame({"user_id": np.repeat(np.arange(1, 31), 20), "movie_id": np.tile(np.arange(1, 21), 30),
                          "rating": 4, "timestamp": 880000000 + np.arange(600)})
    raw = tmp_path / "raw" / "ml-100k"
    raw.mkdir(parents=True)
    good = tmp_path / "good.parquet"
    frame.to_parquet(good)
    (raw / "MovieLens100k_data.parquet").write_bytes(good.read_bytes()[:300])  # truncated
    spec = fetch.SPECS["ml-100k"]
    monkeypatch.setitem(fetch.SPECS, "ml-100k", dataclasses.replace(spec, expected=None))  # a 600-row stand-in
    calls = []

    def fake_fetch(name, cache_dir=None):
        calls.append(name)
        if len(calls) == 1:
            return fetch.find_raw(fetch.SPECS[name], cache_dir)
        shutil.copy(good, raw / "MovieLens100k_data.parquet")  # the fresh download
        return raw / "MovieLens100k_data.parquet", "widedeep-parquet"

    monkeypatch.setattr("lambdaopt.data.real.fetch", fake_fetch)
    with caplog.at_level(logging.WARNING):
        dataset = load_dataset("ml-100k", cache_dir=str(tmp_path))
    assert len(calls) == 2 and dataset.n_users == 30
    assert (raw / "MovieLens100k_data.parquet.rejected").stat().st_size == 300
    assert "not a readable parquet file" in caplog.text and "fetching it again" in caplog.text


def test_ids_far_beyond_the_row_count_are_remapped_before_any_dense_array(tmp_path):
    path = tmp_path / "u.data"
    path.write_text(U_DATA + f"{2**40}\t{2**41}\t4\t880099999\n" * 1 + f"{2**40}\t3\t4\t880099998\n"
                    + f"{2**40}\t4\t4\t880099997\n")
    dataset = load_dataset("ml-100k", path=str(path), cache_dir=str(tmp_path / "cache"))
    assert (dataset.n_users, dataset.n_items) == (31, 21)


# ----------------------------------------------------------------------------- undefined metrics, threads
def test_a_metric_no_user_defines_is_left_out_with_a_warning_never_nan(caplog):
    class Scores:
        def score_all(self, users):
            return torch.arange(3, dtype=torch.float32).expand(len(users), 3)

    # one user whose every candidate is held out: nothing ranks below a held-out item, so AUC is undefined
    heldout = Interactions(np.array([0, 0]), np.array([1, 2]), np.zeros(2, np.int64), np.ones(2, np.float32))
    excluded = Interactions(np.array([0]), np.array([0]), np.zeros(1, np.int64), np.ones(1, np.float32))
    with caplog.at_level(logging.WARNING):
        metrics = RankingEvaluator(1, 3, heldout, excluded, ks=[1, 2])(Scores())
    assert "auc" not in metrics and metrics["hr@2"] == 1.0
    assert "auc undefined on this split" in caplog.text


def test_a_single_user_run_reports_no_nan():
    from lambdaopt.experiment import run

    base = ["dataset.n_users=1", "dataset.mean_interactions=200", "trainer.max_epochs=2", "model.dim=4",
            "tracking.enabled=false"]
    result = run(compose_config(base))
    assert "auc" not in result.test and all(np.isfinite(v) for v in result.test.values())



def test_training_refuses_to_select_on_a_metric_validation_cannot_define():
    from lambdaopt.experiment import build_parts, build_trainer
    from lambdaopt.tracking import NullTracker

    cfg = compose_config([*TINY, "tracking.enabled=false"])
    parts = build_parts(cfg, torch.device("cpu"))

    class WithoutNdcg:  # an evaluator whose validation data cannot define ndcg@10
        log_prefix, trajectory = "valid", None

        def __call__(self, model):
            return {"hr@10": 0.5}

    parts.task.valid_evaluator = WithoutNdcg()
    with pytest.raises(DataError, match="trainer.monitor=ndcg@10 is undefined on this validation data"):
        build_trainer(cfg, parts, NullTracker()).fit()


def test_more_threads_than_cores_is_warned_about(caplog):
    from lambdaopt.experiment import _warn_oversubscribed

    with caplog.at_level(logging.WARNING):
        _warn_oversubscribed(1)
        assert not caplog.text
        _warn_oversubscribed(999)
    assert "num_threads=999 is more than the" in caplog.text


def test_a_run_flushes_subnormal_floats():
    """Adam's decaying moments of untouched rows reach subnormal floats, which x86 computes slowly."""
    from lambdaopt.experiment import run

    run(compose_config([*TINY, "trainer.max_epochs=1", "tracking.enabled=false"]))
    assert float(torch.tensor([1e-40], dtype=torch.float32)[0]) == 0.0
