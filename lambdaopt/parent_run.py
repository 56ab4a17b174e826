"""One MLflow parent run per multirun (a Hydra callback, registered in conf/config.yaml).

    on_multirun_start  (launcher process) create the tracking DB and experiment once, before any job
                       starts (concurrent first-time creation of a SQLite DB crashes in alembic), and
                       open the parent run
    on_job_start       (each job's process: in-process, joblib worker or submitit job alike) export the
                       parent's id, so `tracked_run` tags the job's run `mlflow.parentRunId`
    on_job_end         (each job's process) write the job's status to <sweep dir>/job_status/<num>.json:
                       a job can fail before it opens an MLflow run (a value out of range)
    on_multirun_end    log the report (table + figures) to the parent and close it FINISHED, or FAILED
                       when a job failed (tag `failed_jobs`)

Hydra does not call on_multirun_end when the sweep itself stops early (a job's exception, Ctrl-C), so the
same closing step is also registered with `atexit`: the parent then ends FAILED, and a sweep that stopped
before any job ran (a typo in a swept key) deletes its parent instead of leaving an empty one.
A single run (without -m) is unaffected: the callback holds no parent and does nothing.
"""
from __future__ import annotations

import atexit
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from hydra.core.utils import JobStatus
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from lambdaopt.errors import LambdaoptError
from lambdaopt.tracking import PARENT_RUN_ENV, ensure_experiment, git_commit, store_uri

log = logging.getLogger(__name__)


class MlflowParentRun(Callback):
    def __init__(self) -> None:
        # Set in the launcher process; the launchers pickle the callback into every job with these.
        self.parent_run_id: str | None = None
        self.sweep_dir: str | None = None
        self.tracking: dict[str, Any] = {}
        self._closed = False

    # ------------------------------------------------------------------ launcher process
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        tracking = config.get("tracking")
        if tracking is None or not tracking.enabled:
            return
        import mlflow
        from mlflow.tracking import MlflowClient

        self.tracking = OmegaConf.to_container(tracking, resolve=True)
        self.sweep_dir = str(Path(config.hydra.sweep.dir).resolve())
        self.tracking["uri"] = store_uri(tracking.uri)
        mlflow.set_tracking_uri(self.tracking["uri"])
        try:  # a dead server or unusable store stops the sweep before any job (Hydra only warns on a raise)
            experiment_id = ensure_experiment(tracking.uri, tracking.experiment, tracking.artifact_location)
        except LambdaoptError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        sweep_name = config.hydra.runtime.choices.get("sweep") or "cli"
        overrides = list(config.hydra.overrides.task)
        client = MlflowClient(self.tracking["uri"])
        run = client.create_run(experiment_id, run_name=f"sweep-{sweep_name}-{Path(self.sweep_dir).name}", tags={
            "sweep_role": "parent", "sweep": sweep_name, "sweep_dir": self.sweep_dir,
            "overrides": " ".join(overrides) or "(none)", "git_commit": git_commit(),
            "launcher": str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1],
        })
        self.parent_run_id = run.info.run_id
        client.log_text(self.parent_run_id, OmegaConf.to_yaml({"overrides": overrides, "sweeper": config.hydra.sweeper,
                                                               "launcher": config.hydra.launcher}), "sweep.yaml")
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        (Path(self.sweep_dir) / "mlflow_parent_run_id").write_text(self.parent_run_id + "\n")
        os.environ[PARENT_RUN_ENV] = self.parent_run_id
        atexit.register(self._close, True)
        log.info("MLflow parent run %s (experiment '%s')", self.parent_run_id, tracking.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close(aborted=False)

    # ------------------------------------------------------------------ job process
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is not None:
            os.environ[PARENT_RUN_ENV] = self.parent_run_id

    def on_job_end(self, config: DictConfig, job_return, **kwargs: Any) -> None:
        if self.parent_run_id is None:
            return
        value = job_return._return_value
        if job_return.status == JobStatus.FAILED:
            status, error = "FAILED", f"{type(value).__name__}: {value}"
        elif isinstance(value, dict) and value.get("status") == "FAILED":  # a user error (hydra_task)
            status, error = "FAILED", str(value.get("error"))
        else:
            status, error = "COMPLETED", None
        num = config.hydra.job.get("num", 0)
        record = {"job_num": num, "overrides": " ".join(config.hydra.overrides.task), "status": status, "error": error}
        try:  # on a cluster the sweep dir must be on a shared file system; never fail the job over it
            folder = Path(self.sweep_dir) / "job_status"
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{num}.json").write_text(json.dumps(record))
        except OSError as error:
            log.warning("could not record job %s's status in %s: %s", num, self.sweep_dir, error)

    # ------------------------------------------------------------------ closing
    def _close(self, aborted: bool) -> None:
        """Tag the parent with its children's outcome, log the report, and end it."""
        if self._closed or self.parent_run_id is None:
            return
        self._closed = True
        os.environ.pop(PARENT_RUN_ENV, None)
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.tracking["uri"])
        parent = client.get_run(self.parent_run_id)
        children = client.search_runs([parent.info.experiment_id],
                                      filter_string=f"tags.`mlflow.parentRunId` = '{self.parent_run_id}'",
                                      max_results=50000)
        jobs = {}
        for path in sorted((Path(self.sweep_dir) / "job_status").glob("*.json")):
            record = json.loads(path.read_text())
            jobs[str(record["job_num"])] = record
        failed = [f"job {num} ({r['overrides']}): {r['error']}" for num, r in jobs.items() if r["status"] == "FAILED"]
        for child in children:
            num = child.data.tags.get("job_num", "?")
            if child.info.status != "FINISHED" and jobs.get(num, {}).get("status") != "FAILED":
                failed.append(f"job {num} ({child.data.tags.get('overrides', '')}): run {child.info.status}")
        if aborted and not children and not jobs:
            client.set_terminated(self.parent_run_id, "FAILED")
            client.delete_run(self.parent_run_id)
            log.info("the sweep stopped before any job ran: deleted its MLflow parent run")
            return
        client.set_tag(self.parent_run_id, "n_jobs", str(max(len(jobs), len(children))))
        client.set_tag(self.parent_run_id, "n_failed", str(len(failed)))
        if failed:
            client.set_tag(self.parent_run_id, "failed_jobs", "\n".join(failed)[:5000])
        if aborted:
            client.set_tag(self.parent_run_id, "failure_reason",
                           "the sweep stopped before all jobs ended (a job raised, or Ctrl-C)")
        if children:
            self._log_report(client)
        status = "FAILED" if failed or aborted else "FINISHED"
        client.set_terminated(self.parent_run_id, status)
        log.info("MLflow parent run %s: %d child runs, %d failed → %s", self.parent_run_id, len(children),
                 len(failed), status)

    def _log_report(self, client) -> None:
        """The paper-style table and figures of the children, as artifacts of the parent. Never fails the sweep."""
        try:
            from lambdaopt.report import write_report

            written = write_report(self.tracking["uri"], self.tracking["experiment"], parent=self.parent_run_id,
                                   out=Path(self.sweep_dir) / "report", quiet=True)
            log.info("report: %s (also under report/ in the parent run)", written["table_md"])
        except Exception as error:  # noqa: BLE001 - a report problem must not fail the sweep
            log.warning("sweep report skipped: %s: %s", type(error).__name__, error)
