"""Checkpoint and resume: a job SIGKILLed after an evaluated epoch, or stopped by SIGTERM in the middle
of an epoch, and then resumed, ends with exactly (==) the metrics of the same job run without a break."""
import os
import signal
import subprocess
import sys

import pytest
import torch
from mlflow.tracking import MlflowClient

import lambdaopt
from conftest import ROOT, TINY, empty_store_in, one_error_line, run_cli, run_in, run_in_process
from lambdaopt import checkpoint
from lambdaopt.store import local_artifact_dir

pytestmark = pytest.mark.slow

TIMINGS = {"train_seconds", "epoch_seconds", "test_eval_seconds"}


def only_run(cwd):
    client = MlflowClient(tracking_uri=f"sqlite:///{cwd}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lambdaopt").experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def results(cwd):
    """(final metrics without timings, {metric: [(step, value), ...]} for every per-epoch metric)."""
    client, run = only_run(cwd)
    metrics = {k: v for k, v in run.data.metrics.items() if k not in TIMINGS}
    histories = {k: sorted((m.step, m.value) for m in client.get_metric_history(run.info.run_id, k))
                 for k in metrics if k.startswith(("valid/", "train_loss", "reg/"))}
    return run, metrics, histories


@pytest.fixture
def run_from(monkeypatch):
    """`lambdaopt.run(overrides)` from `folder`: with the command's default tracking settings, relative to
    it, so its params equal those of `python run.py` run there."""
    def run(folder, overrides):
        empty_store_in(folder)
        monkeypatch.chdir(folder)
        return lambdaopt.run(overrides)
    return run


def assert_same_results(straight_dir, resumed_dir):
    straight, straight_metrics, straight_histories = results(straight_dir)
    resumed, resumed_metrics, resumed_histories = results(resumed_dir)
    assert resumed.info.status == "FINISHED"
    assert resumed_metrics == straight_metrics  # exact: every test/*, valid/*, best_* and λ value
    assert resumed_histories == straight_histories  # one point per epoch, same steps, same values
    assert resumed.data.params == straight.data.params


@pytest.mark.parametrize("regularizer", ["fixed", "lambdaopt_dui"])
def test_sigkill_after_an_epoch_then_resume_gives_identical_metrics(tmp_path, regularizer, run_from):
    """The killed run is a process of its own; the uninterrupted run and the resume run in this one, from
    the run's folder (lambdaopt.run, as from a notebook; the command's resume: test_sigterm_mid_epoch_...)."""
    from lambdaopt.errors import ConfigError

    args = [*TINY, "trainer.max_epochs=4", f"regularizer={regularizer}"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir(), empty_store_in(interrupted)
    run_from(straight, args)

    killed = run_cli(["2", *args], interrupted, script=ROOT / "tests" / "kill_after_checkpoint.py")
    assert killed.returncode == -signal.SIGKILL
    client, run = only_run(interrupted)
    assert run.info.status == "RUNNING"  # SIGKILL leaves no chance to end the run
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == 2
    saved = checkpoint.load(checkpoint.checkpoint_dir(run.info.artifact_uri, run.info.run_id)[0] / checkpoint.FILENAME)
    assert saved["trainer"]["epoch"] == 2 and saved["run_id"] == run.info.run_id

    if regularizer == "fixed":  # an override that contradicts the stored config is refused, nothing runs
        with pytest.raises(ConfigError, match=r"model.dim=16 \(the run has 8\)"):
            run_from(interrupted, [f"resume={run.info.run_id}", "model.dim=16"])
        assert only_run(interrupted)[1].info.status == "RUNNING"

    run_from(interrupted, [f"resume={run.info.run_id}"])
    assert_same_results(straight, interrupted)
    _, run = only_run(interrupted)
    assert run.data.tags["resumed_at_epoch"] == "2"
    # the finished run's checkpoint is deleted (trainer.keep_checkpoint=false); model.pt remains
    assert not (local_artifact_dir(run.info.artifact_uri) / "checkpoint").exists()
    assert (local_artifact_dir(run.info.artifact_uri) / "model.pt").exists()


def test_sigterm_mid_epoch_checkpoints_ends_killed_and_resume_last_is_exact(tmp_path, run_from):
    # SIGTERM before step 10 of epoch 4 (of 6; no early stop): the checkpoint is taken after that step
    args = [*TINY, "trainer.max_epochs=6", "trainer.patience=0", "trainer.batch_size=32", "optimizer.lr=1.5",
            "trainer.stop_loss=0", "regularizer=lambdaopt_dui"]
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    straight.mkdir(), interrupted.mkdir(), empty_store_in(interrupted)
    job = run_cli(["4", "10", *args], interrupted, script=ROOT / "tests" / "term_in_epoch.py")
    line = one_error_line(job, "interrupted by SIGTERM in epoch 4 after step 11", 128 + signal.SIGTERM)
    assert "resume=" in line
    client, run = only_run(interrupted)
    assert run.info.status == "KILLED" and run.data.tags["failure_reason"].startswith("interrupted")
    saved = checkpoint.load(checkpoint.checkpoint_dir(run.info.artifact_uri, run.info.run_id)[0] / checkpoint.FILENAME)
    assert (saved["trainer"]["epoch"], saved["trainer"]["step_in_epoch"]) == (3, 11)  # 3 epochs and 11 steps done

    run_from(straight, args)  # the uninterrupted run in this process
    resumed = run_in_process("run.py", ["resume=last"], interrupted, {})  # the command's resume, here
    assert resumed.returncode == 0, resumed.stderr
    assert_same_results(straight, interrupted)


def test_resume_errors_are_one_line(tmp_path):
    # (a malformed value and resume=last without runs: tests/test_bad_inputs.py)
    from lambdaopt.errors import LambdaoptError

    finished = run_in(tmp_path, [*TINY, "trainer.max_epochs=1"]).run_id
    for args, needle in (([f"resume={finished}"], "already FINISHED; there is nothing to resume"),
                         (["resume=0123456789abcdef0123456789abcdef"], "no such MLflow run")):
        with pytest.raises(LambdaoptError, match=needle) as error:
            run_in(tmp_path, args)
        assert "\n" not in str(error.value)


def test_save_atomic_keeps_the_old_checkpoint_when_writing_fails(tmp_path):
    path = tmp_path / "checkpoint.pt"
    checkpoint.save_atomic({"epoch": 1, "weights": torch.ones(3)}, path)
    with pytest.raises(Exception):
        checkpoint.save_atomic({"epoch": 2, "unpicklable": lambda: None}, path)
    assert checkpoint.load(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_ctrl_c_during_training_ends_the_run_killed_with_exit_130(tmp_path):
    args = [*TINY, "trainer.max_epochs=200", "trainer.patience=0", "trainer.stop_loss=0"]
    empty_store_in(tmp_path)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    job = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *args], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in job.stdout:
            if "epoch   2 |" in line:
                break
        job.send_signal(signal.SIGINT)
        _, stderr = job.communicate(timeout=120)
    finally:
        job.kill()
    one_error_line((job.returncode, stderr), "interrupted by SIGINT", 130)
    _, run = only_run(tmp_path)
    assert run.info.status == "KILLED"
    assert (local_artifact_dir(run.info.artifact_uri) / "checkpoint" / checkpoint.FILENAME).is_file()
