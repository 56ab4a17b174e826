"""Checkpoints of a training run, and finding the run to resume.

One file, `checkpoint.pt`, rewritten after every evaluated epoch (and when a run is interrupted):
the trainer's `state_dict()` (model, optimizer, regularizer with its λ optimizer and RNG, the trainer's
own RNG and bookkeeping) plus the run's resolved config. It is written to a temporary file in the same
folder and renamed over the old one (`os.replace` is atomic), so a run killed at any moment leaves
either the previous checkpoint or the new one, never half of one.

Where: inside the run's artifact folder (`<artifact uri>/checkpoint/checkpoint.pt`) when that is a
local path (the default: sqlite + `mlartifacts/`), so MLflow lists it with the run; otherwise (an
artifact store behind a server) in `checkpoints/<run id>/` under the launch directory, uploaded with
`log_artifact` when the run ends.
"""
from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from lambdaopt.errors import ConfigError
from lambdaopt.store import local_artifact_dir
from lambdaopt.tracking import store_uri

log = logging.getLogger(__name__)

FILENAME = "checkpoint.pt"
ARTIFACT_DIR = "checkpoint"
RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def checkpoint_dir(artifact_uri: str, run_id: str) -> tuple[Path, bool]:
    """(folder of the run's checkpoint, whether that folder is inside the run's artifacts)."""
    local = local_artifact_dir(artifact_uri)
    if local is not None:
        return local / ARTIFACT_DIR, True
    return Path("checkpoints").resolve() / run_id, False


def save_atomic(state: dict, path: Path) -> None:
    """torch.save to a temporary file next to `path`, fsync, then rename it over `path`."""
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        _remove_quietly(tmp)
        raise


def _remove_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def load(path: Path) -> dict:
    """Read a checkpoint written by `save_atomic`. It holds numpy RNG states and plain Python objects
    besides tensors, hence `weights_only=False`: only load checkpoints your own runs wrote."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # a truncated or foreign file: say which, no traceback
        raise ConfigError(f"cannot read checkpoint {path}: {type(error).__name__}: {error}") from None


class Checkpointer:
    """Writes the checkpoint of one run; `meta` (config, run id) is stored with every state."""

    def __init__(self, directory: Path, in_artifacts: bool, meta: dict):
        self.path, self.in_artifacts, self.meta = directory / FILENAME, in_artifacts, meta

    def save(self, state: dict) -> None:
        save_atomic({**self.meta, **state}, self.path)

    def finish(self, tracker, keep: bool) -> None:
        """At the end of a FINISHED run: delete the checkpoint, or upload it if it lives outside the
        artifact store."""
        for stray in self.path.parent.glob(f".{FILENAME}.*.tmp"):  # left by a process killed while writing
            _remove_quietly(str(stray))
        if not self.path.exists():
            return
        if keep and not self.in_artifacts:
            tracker.log_file(self.path, ARTIFACT_DIR)
        if not keep or not self.in_artifacts:
            shutil.rmtree(self.path.parent, ignore_errors=True)


# ----------------------------------------------------------------------------- resume
def find_checkpoint(client, run) -> Path | None:
    """The local checkpoint of `run`, downloading it from a remote artifact store if need be."""
    directory, in_artifacts = checkpoint_dir(run.info.artifact_uri, run.info.run_id)
    if (directory / FILENAME).is_file():
        return directory / FILENAME
    if in_artifacts:
        return None
    try:
        return Path(client.download_artifacts(run.info.run_id, f"{ARTIFACT_DIR}/{FILENAME}", str(directory)))
    except Exception:  # no such artifact (or the store is unreachable): treated as "no checkpoint"
        return None


def resolve_resume(tracking_cfg, resume: str):
    """(MLflow run, checkpoint path) for `resume=<run id>` or `resume=last` (the most recently started
    run of the experiment that has a checkpoint and did not finish). One-line ConfigError otherwise."""
    if not tracking_cfg.enabled:
        raise ConfigError("resume needs tracking.enabled=true: checkpoints belong to MLflow runs")
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(tracking_cfg.uri))
    experiment = client.get_experiment_by_name(tracking_cfg.experiment)
    where = f"experiment '{tracking_cfg.experiment}' at {tracking_cfg.uri}"
    if resume == "last":
        if experiment is None:
            raise ConfigError(f"resume=last: there is no {where}")
        for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time DESC"],
                                      max_results=200):
            if run.info.status != "FINISHED":
                path = find_checkpoint(client, run)
                if path is not None:
                    return run, path
        raise ConfigError(f"resume=last: no unfinished run with a checkpoint in {where}")
    try:
        run = client.get_run(resume)
    except MlflowException:
        raise ConfigError(f"resume={resume}: no such MLflow run at {tracking_cfg.uri}") from None
    if experiment is None or run.info.experiment_id != experiment.experiment_id:
        raise ConfigError(f"resume={resume}: the run is not in {where}: set tracking.experiment")
    if run.info.status == "FINISHED":
        raise ConfigError(f"resume={resume}: the run already FINISHED; there is nothing to resume")
    path = find_checkpoint(client, run)
    if path is None:
        raise ConfigError(f"resume={resume}: the run has no checkpoint (it stopped before its first "
                          f"evaluated epoch, or ran with trainer.checkpoint=false)")
    return run, path


def _override_key(override: str) -> str | None:
    """'model.dim=8' → 'model.dim'; '+x=1', '++x=1', '~x' → 'x'; None for sweeps' own syntax."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key or None


def resume_config(cfg, overrides: list[str]):
    """(config to run, MLflow run id, checkpoint state) for `cfg.resume`.

    A resumed run continues with the config stored in its checkpoint: `tracking.*` comes from the
    command line (it is how the run was found) and any other override must agree with the stored
    value, else a ConfigError lists the keys that differ (the run's params cannot change)."""
    from omegaconf import OmegaConf

    run, path = resolve_resume(cfg.tracking, str(cfg.resume))
    state = load(path)
    if state.get("run_id") != run.info.run_id or "config" not in state:
        raise ConfigError(f"checkpoint {path} does not belong to run {run.info.run_id}")
    stored = OmegaConf.create(state["config"])
    differing = []
    for override in overrides:
        key = _override_key(override)
        if key is None or key.split(".")[0] in ("resume", "tracking", "hydra"):
            continue
        given, kept = OmegaConf.select(cfg, key, default=None), OmegaConf.select(stored, key, default=None)
        as_plain = lambda v: OmegaConf.to_container(v, resolve=True) if OmegaConf.is_config(v) else v  # noqa: E731
        if as_plain(given) != as_plain(kept):
            differing.append(f"{key}={as_plain(given)!r} (the run has {as_plain(kept)!r})")
    if differing:
        raise ConfigError(f"resume={cfg.resume} continues run {run.info.run_id} with its own config; drop or fix "
                          "these overrides: " + ", ".join(differing))
    stored.tracking = OmegaConf.to_container(cfg.tracking, resolve=True)
    stored.resume = run.info.run_id
    log.info("resuming run %s from %s (epoch %d, step %d of the next)", run.info.run_id, path,
             state["trainer"]["epoch"], state["trainer"]["step_in_epoch"])
    return stored, run.info.run_id, state
