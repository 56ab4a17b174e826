"""MLflow tracking: one run per job, params from the resolved config, FAILED/KILLED on errors.

Metric names keep the framework's `hr@10` style in code and on the terminal; MLflow does not allow
'@' in keys, so they are logged as `hr_at_10`.
"""
from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterator

import yaml

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parent.parent
# Set by the multirun callback (lambdaopt/parent_run.py): every job's run becomes a child of the sweep's run.
PARENT_RUN_ENV = "LAMBDAOPT_PARENT_RUN_ID"


def store_uri(uri: str) -> str:
    """`uri` with a relative SQLite path made absolute. MLflow caches one store per URI string in a
    process, so `sqlite:///mlflow.db` would keep pointing at the first directory it was used from."""
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri.startswith(prefix + "/"):
        return prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def mlflow_key(name: str) -> str:
    return name.replace("@", "_at_")


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} → {'a.b': 1}; lists are kept as their string form."""
    if isinstance(tree, dict):
        flat: dict[str, Any] = {}
        for key, value in tree.items():
            flat.update(flatten(value, f"{prefix}{key}."))
        return flat
    return {prefix[:-1]: tree}


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                             text=True, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class NullTracker:
    """Used with tracking.enabled=false: the same calls, nothing recorded."""

    run_id = None
    artifact_uri = None
    experiment_id = None

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def log_dict(self, data: dict, filename: str) -> None:
        pass

    def log_file(self, path: str | Path, artifact_dir: str | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, str]) -> None:
        pass


class MlflowTracker(NullTracker):
    def __init__(self, mlflow_module, run):
        self.mlflow, self.run_id = mlflow_module, run.info.run_id
        self.artifact_uri, self.experiment_id = run.info.artifact_uri, run.info.experiment_id

    def log_metrics(self, metrics, step=None):
        self.mlflow.log_metrics({mlflow_key(k): float(v) for k, v in metrics.items()}, step=step)

    def log_dict(self, data, filename):
        self.mlflow.log_text(yaml.safe_dump(data, sort_keys=False), filename)

    def log_file(self, path, artifact_dir=None):
        self.mlflow.log_artifact(str(path), artifact_dir)

    def set_tags(self, tags):
        self.mlflow.set_tags(tags)


EXPERIMENT_KIND = "mlflow.experimentKind"


def is_server(uri: str) -> bool:
    """A tracking server (`mlflow server`), as opposed to a store this process opens itself."""
    return uri.startswith(("http://", "https://"))


def browse_hint(uri: str, experiment_id: str, run_id: str | None = None, serve: bool = True) -> str:
    """How to open a run (or the run list): the `mlflow ui` command for a local store (unless `serve` is
    False), then the page's URL."""
    command = "" if is_server(uri) or not serve else f"mlflow ui --backend-store-uri {uri} -w 1, then open "
    return command + experiment_url(uri, experiment_id, run_id)


def experiment_url(uri: str, experiment_id: str, run_id: str | None = None) -> str:
    """The experiment's run list (or one run's page) in the MLflow UI: the server itself for an http URI,
    else where `mlflow ui` serves (http://127.0.0.1:5000). `workflowType=machine_learning` opens the
    training-runs view: a fresh browser otherwise lands on MLflow 3's GenAI traces dashboard (checked in
    headless Chromium with bench/mlflow_screenshots.py; the experiment tag alone does not switch it)."""
    base = uri.rstrip("/") if is_server(uri) else "http://127.0.0.1:5000"
    page = f"runs/{run_id}" if run_id else "runs"
    return f"{base}/#/experiments/{experiment_id}/{page}?workflowType=machine_learning"


def experiment_id(client, name: str, artifact_location: str) -> str:
    """The id of experiment `name`, created if missing. Parallel jobs may race to create it: the
    loser of the race finds the winner's experiment."""
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = artifact_location
    if "://" not in location:
        if is_server(client.tracking_uri):
            location = None  # a shared server stores the artifacts (proxied), not this machine's disk
        else:
            location = Path(location).resolve().as_uri()
    try:
        # the classic training-runs view, not the GenAI traces dashboard a fresh MLflow 3 UI opens in
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND: "custom_model_development"})
    except MlflowException:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def ensure_experiment(uri: str, name: str, artifact_location: str = "mlartifacts") -> str:
    """Check the store at `uri`, create it and experiment `name` if missing (safe from parallel
    processes: lambdaopt/store.py), and return the experiment id. Raises ConfigError in one line."""
    from lambdaopt.store import open_store

    return open_store(uri, name, artifact_location)


@contextlib.contextmanager
def tracked_run(tracking_cfg, run_name: str, params: dict[str, Any], tags: dict[str, str],
                run_id: str | None = None, client=None) -> Iterator[NullTracker]:
    """Open an MLflow run (or a NullTracker); on an exception the run ends FAILED with a
    `failure_reason` tag, on Ctrl-C / SIGTERM KILLED, otherwise FINISHED.

    `run_id`: continue that existing run (resume): it is set RUNNING again and keeps its params
    (MLflow refuses changed params), so `params` are not logged; `tags` are added.
    `client`: an MlflowClient from `store.check_store` (its checks are not repeated).
    """
    if not tracking_cfg.enabled:
        yield NullTracker()
        return
    import mlflow

    mlflow.set_tracking_uri(store_uri(tracking_cfg.uri))
    # CPU, memory (and GPU) every 10 s under system/*, sampled by a thread of MLflow's with psutil
    system_metrics = bool(tracking_cfg.get("system_metrics", False))
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
    else:
        if client is None:
            experiment = ensure_experiment(tracking_cfg.uri, tracking_cfg.experiment, tracking_cfg.artifact_location)
        else:  # the store was checked already (experiment.run does it before any data work)
            from lambdaopt.store import open_experiment

            experiment = open_experiment(client, tracking_cfg.experiment, tracking_cfg.artifact_location)
        if os.environ.get(PARENT_RUN_ENV):  # a job of a sweep: a child of the sweep's parent run
            tags = {**tags, "mlflow.parentRunId": os.environ[PARENT_RUN_ENV]}
        run = mlflow.start_run(experiment_id=experiment, run_name=run_name, tags=tags, log_system_metrics=system_metrics)
    try:
        if run_id is None:
            mlflow.log_params({k: str(v)[:6000] for k, v in params.items()})
        else:
            mlflow.set_tags(tags)
        yield MlflowTracker(mlflow, run)
    except KeyboardInterrupt as interrupt:
        mlflow.set_tag("failure_reason", f"interrupted: {interrupt}"[:5000] if str(interrupt) else "interrupted")
        mlflow.end_run(status="KILLED")
        raise
    except BaseException as error:
        error.mlflow_run_id = run.info.run_id  # lets a sweep's FAILED job result name its run
        mlflow.set_tag("failure_reason", f"{type(error).__name__}: {error}"[:5000])
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


def load_run_state_dict(uri: str, run_id: str, filename: str = "model.pt") -> dict:
    """The `filename` checkpoint logged by MLflow run `run_id` (for warm starts: `init_from=<run id>`)."""
    import torch
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from lambdaopt.errors import ConfigError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = MlflowClient(tracking_uri=store_uri(uri)).download_artifacts(run_id, filename, tmp)
        except (MlflowException, OSError) as error:
            raise ConfigError(f"init_from={run_id}: no {filename} in that MLflow run at {uri} "
                              f"({str(error).splitlines()[0][:120]}); give the id of a finished run with "
                              "tracking.log_model=true") from None
        return torch.load(path, map_location="cpu", weights_only=True)


def save_state_dict(tracker: NullTracker, state_dict: dict, filename: str = "model.pt") -> None:
    """Write a checkpoint to a temp dir and log it as an artifact of the run."""
    if tracker.run_id is None:
        return
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, filename)
        torch.save(state_dict, path)
        tracker.log_file(path)
