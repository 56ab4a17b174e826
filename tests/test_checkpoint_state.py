"""The trainer's state_dict round trip, in process, for every kind of task: a trainer restored from the
state of an evaluated epoch, or of a step inside an epoch, continues exactly (==) as one never stopped.
(End to end, with SIGKILL/SIGTERM and MLflow: test_resume.py.)"""
import io
from pathlib import Path

import pytest
import torch

from conftest import TINY, compose_config
from lambdaopt import checkpoint
from lambdaopt.experiment import build_parts, build_trainer
from lambdaopt.tracking import NullTracker

EPOCHS = 4
SETUPS = {
    "bpr + λOpt": [*TINY, "regularizer=lambdaopt_dui"],
    "neumf with dropout (torch RNG)": [*TINY, "model=neumf", "model.dim=8", "model.mlp_dim=8", "model.layers=[8]",
                                      "model.dropout=0.3"],
    "bpr + amf": [*TINY, "regularizer=amf"],
    "explicit ratings": [*TINY, "dataset.feedback=explicit", "regularizer=fixed", "optimizer=adam"],
    "completion, full batch": ["dataset=lowrank", "dataset.n=12", "dataset.rank=2", "dataset.n_train_samples=80",
                               "trainer.steps_per_epoch=10", "evaluation.spectrum_top_k=3", "model=deep_mf",
                               "model.depth=3", "optimizer=group_rmsprop", "optimizer.lr=1e-2"],
}


class Memory:
    """A checkpointer that keeps the last state serialized, as on disk."""

    def __init__(self):
        self.blob = None

    def save(self, state):
        self.blob = io.BytesIO()
        torch.save(state, self.blob)

    def load(self):
        self.blob.seek(0)
        return torch.load(self.blob, weights_only=False)


class StopAfter:
    """Stands in for a SIGTERM arriving during step `steps` of the first epoch."""

    def __init__(self, steps):
        self.steps, self.asked = steps, 0

    @property
    def requested(self):
        self.asked += 1
        return self.asked >= self.steps


def make_trainer(overrides):
    cfg = compose_config([*overrides, "tracking.enabled=false", f"trainer.max_epochs={EPOCHS}", "trainer.eval_every=1",
                          "trainer.patience=0", "trainer.stop_loss=0"])
    torch.set_num_threads(1)
    return build_trainer(cfg, build_parts(cfg, torch.device("cpu")), NullTracker(), checkpointer=Memory())


def outcome(trainer, fit):
    history = [{k: v for k, v in h.items() if k != "epoch_seconds"} for h in fit.history]
    trajectory = getattr(trainer.valid_evaluator, "trajectory", None)
    return (fit.best_epoch, fit.best_valid, history, {k: v.clone() for k, v in trainer.model.state_dict().items()},
            None if trajectory is None else (list(trajectory.steps), [v.tolist() for v in trajectory.values]))


def assert_same(a, b):
    assert a[:3] == b[:3]
    assert a[3].keys() == b[3].keys() and all(torch.equal(a[3][k], b[3][k]) for k in a[3])
    assert a[4] == b[4]


@pytest.mark.slow
@pytest.mark.parametrize("setup", list(SETUPS))
def test_restored_trainer_continues_exactly(setup):
    straight = make_trainer(SETUPS[setup])
    expected = outcome(straight, straight.fit())

    # stopped after the checkpoint of epoch 2
    first = make_trainer(SETUPS[setup])
    first.max_epochs = 2
    first.fit()
    resumed = make_trainer(SETUPS[setup])
    resumed.load_state_dict(first.checkpointer.load())
    assert_same(outcome(resumed, resumed.fit()), expected)

    # stopped inside epoch 1, after its third step
    first = make_trainer(SETUPS[setup])
    assert first.train_epoch(StopAfter(3)) is None and first.step_in_epoch == 3
    first.checkpointer.save(first.state_dict())
    resumed = make_trainer(SETUPS[setup])
    resumed.load_state_dict(first.checkpointer.load())
    assert_same(outcome(resumed, resumed.fit()), expected)


class RecordingTracker(NullTracker):
    def __init__(self):
        self.logged = []

    def log_file(self, path, artifact_dir=None):
        self.logged.append((Path(path).read_bytes(), artifact_dir))


def test_checkpoint_location_follows_the_artifact_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    local = tmp_path / "my artifacts" / "1" / "abc" / "artifacts"
    assert checkpoint.checkpoint_dir(local.as_uri(), "abc") == (local / "checkpoint", True)
    assert checkpoint.checkpoint_dir(str(local), "abc") == (local / "checkpoint", True)
    # an artifact store behind a server: a local folder, uploaded when the run finishes
    directory, in_artifacts = checkpoint.checkpoint_dir("mlflow-artifacts:/1/abc/artifacts", "abc")
    assert (directory, in_artifacts) == (tmp_path / "checkpoints" / "abc", False)
    writer = checkpoint.Checkpointer(directory, in_artifacts, {"run_id": "abc"})
    writer.save({"epoch": 3})
    (directory / ".checkpoint.pt.x1.tmp").write_bytes(b"half")  # as left by a kill during a write
    tracker = RecordingTracker()
    writer.finish(tracker, keep=True)
    assert len(tracker.logged) == 1 and tracker.logged[0][1] == "checkpoint" and not directory.exists()


def test_finished_run_in_a_local_store_drops_its_checkpoint_unless_kept(tmp_path):
    for keep in (False, True):
        directory = tmp_path / str(keep) / "checkpoint"
        writer = checkpoint.Checkpointer(directory, True, {})
        writer.save({"epoch": 1})
        (directory / ".checkpoint.pt.x1.tmp").write_bytes(b"half")
        writer.finish(RecordingTracker(), keep=keep)
        assert [p.name for p in directory.iterdir()] == ["checkpoint.pt"] if keep else not directory.exists()
