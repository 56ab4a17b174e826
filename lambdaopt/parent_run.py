"""One MLflow parent run per multirun (a Hydra callback, registered in lambdaopt/conf/config.yaml).

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
from lambdaopt.naming import SWEPT_KEYS_ENV
from lambdaopt.tracking import PARENT_RUN_ENV, browse_hint, ensure_experiment, git_commit, store_uri

log = logging.getLogger(__name__)


def swept_keys(config: DictConfig) -> list[str]:
    """The keys a sweep varies: command-line overrides with several values (`a=1,2`, `range(...)`,
    `choice(...)`) and the keys of the sweeper's `params` and `grids` (presets, search spaces)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides([str(o) for o in config.hydra.overrides.task])
    keys = [o.get_key_element().lstrip("+~") for o in parsed if o.is_sweep_override()]  # `[5,10]` is one list
    sweeper = config.hydra.sweeper
    grids = list(sweeper.get("grids") or [])
    for params in [sweeper.get("params") or {}, *grids]:  # in a union of grids every grid key varies
        # a mapping is an Optuna search space (hydra/sweeper=optuna_study): its key varies too
        keys += [str(k) for k, v in params.items() if "," in str(v) or len(grids) > 1 or OmegaConf.is_dict(v)]
    return list(dict.fromkeys(keys))


class MlflowParentRun(Callback):
    def __init__(self) -> None:
        # Set in the launcher process; the launchers pickle the callback into every job with these.
        self.parent_run_id: str | None = None
        self.sweep_dir: str | None = None
        self.tracking: dict[str, Any] = {}
        self._closed = False
        self.swept: list[str] = []
        self.launcher = ""

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
        self.swept = swept_keys(config)
        self.launcher = str(config.hydra.launcher.get("_target_", "")).rsplit(".", 1)[-1]
        os.environ[SWEPT_KEYS_ENV] = ",".join(self.swept)
        atexit.register(self._close, True)
        log.info("MLflow parent run %s (experiment '%s')", self.parent_run_id, tracking.experiment)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        self._close(aborted=False)

    # ------------------------------------------------------------------ job process
    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        if self.parent_run_id is not None:
            os.environ[PARENT_RUN_ENV] = self.parent_run_id
            os.environ[SWEPT_KEYS_ENV] = ",".join(self.swept)

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
            best = self._log_summary(client, children)
            self._log_report(client, parent.info.experiment_id, best)
        status = "FAILED" if failed or aborted else "FINISHED"
        client.set_terminated(self.parent_run_id, status)
        log.info("MLflow parent run %s: %d child runs, %d failed → %s", self.parent_run_id, len(children),
                 len(failed), status)

    def _log_summary(self, client, children) -> str | None:
        """What the sweep varied (params), and the best child's selected metrics on the parent, so sweeps
        sort by result in the run list: best = the best validation value of the monitored metric. Returns
        the best child's name and id (None if there is none)."""
        try:
            from lambdaopt.tasks import lower_is_better
            from lambdaopt.tracking import mlflow_key

            client.log_param(self.parent_run_id, "swept_keys", ",".join(self.swept) or "(none)")
            client.log_param(self.parent_run_id, "launcher", self.launcher)
            finished = [c for c in children if c.info.status == "FINISHED" and c.data.tags.get("monitor")]
            if not finished:
                return None
            monitor = finished[0].data.tags["monitor"]
            key = f"best_valid/{mlflow_key(monitor)}"
            scored = [c for c in finished if c.data.tags["monitor"] == monitor and key in c.data.metrics]
            if not scored:
                return None
            if all(key + "_smoothed" in c.data.metrics for c in scored):
                key += "_smoothed"  # what the epochs (and the report's grid points) were selected on
            scored.sort(key=lambda c: int(c.data.tags.get("job_num", 0)))  # ties: the first job, as the report
            pick = min if lower_is_better(monitor) else max
            best = pick(scored, key=lambda c: c.data.metrics[key])
            metrics = {k: v for k, v in best.data.metrics.items() if k.startswith(("best_valid/", "test/"))}
            for name, value in metrics.items():
                client.log_metric(self.parent_run_id, name, value)
            label = f"{best.info.run_name} ({best.info.run_id})"
            client.set_tag(self.parent_run_id, "best_child", label)
            return label
        except Exception as error:  # noqa: BLE001 - the summary must not fail the sweep
            log.warning("sweep summary skipped: %s: %s", type(error).__name__, error)
            return None

    def _log_report(self, client, experiment_id: str, best: str | None) -> None:
        """The paper-style table and figures of the children, as artifacts of the parent and as its
        description (shown on the run's Overview). Never fails the sweep."""
        try:
            from lambdaopt.report import write_report

            written = write_report(self.tracking["uri"], self.tracking["experiment"], parent=self.parent_run_id,
                                   out=Path(self.sweep_dir) / "report", quiet=True)
            note = (f"Sweep over {', '.join(self.swept) or 'its jobs'}"
                    + (f"; best on validation: {best}" if best else "") + ".\n\n" + written["table_md"].read_text())
            client.set_tag(self.parent_run_id, "mlflow.note.content", note[:60000])
            log.info("report: %s (also under report/ in the parent run)", written["table_md"])
            print(f"\n{note}\nBrowse the sweep: {browse_hint(self.tracking['uri'], experiment_id, self.parent_run_id)}")
        except Exception as error:  # noqa: BLE001 - a report problem must not fail the sweep
            log.warning("sweep report skipped: %s: %s", type(error).__name__, error)
