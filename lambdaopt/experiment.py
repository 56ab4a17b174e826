"""One experiment, end to end: config → data → model → training → test metrics → MLflow."""
from __future__ import annotations

import logging
import os
import random
import signal
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lambdaopt import checkpoint, naming
from lambdaopt.config import validate
from lambdaopt.console import number, result_rows, show, table_columns
from lambdaopt.errors import ConfigError, LambdaoptError
from lambdaopt.interrupts import TrainingInterrupted
from lambdaopt.models.base import SolvedModel
from lambdaopt.models.rows import check_sparse_grad
from lambdaopt.search import TrialReporter
from lambdaopt.startup import collect_garbage_rarely, skip_dynamo_guards
from lambdaopt.store import check_store
from lambdaopt.tasks import task_class
from lambdaopt.tracking import (PARENT_RUN_ENV, browse_hint, flatten, git_commit, load_run_state_dict, save_state_dict,
                                tracked_run)
from lambdaopt.trainer import Trainer

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name} but no CUDA device is available: use device=cpu or device=auto")
    return torch.device(name)


def build(node: DictConfig, **kwargs):
    """`hydra.utils.instantiate`, but a user error raised inside the target surfaces as itself
    (Hydra wraps it in an InstantiationException with a multi-line message)."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as error:
        if isinstance(error.__cause__, LambdaoptError):
            raise error.__cause__ from None
        raise


def warm_start(model, run_id: str, uri: str) -> None:
    """Initialize `model` from the best weights another run logged (e.g. AMF from a trained MF)."""
    state = load_run_state_dict(uri, run_id)
    try:
        model.load_state_dict(state)
    except RuntimeError as error:
        raise ConfigError(f"init_from={run_id}: its model.pt does not fit {type(model).__name__} here "
                          f"({str(error).splitlines()[1].strip()[:160]}); use a run with the same model and data") from None
    log.info("initialized the model from run %s", run_id)


def _warn_oversubscribed(threads: int) -> None:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads > cores:
        log.warning("num_threads=%d is more than the %d CPU core(s) this process may use: threads then wait "
                    "on each other and every step slows down; use num_threads<=%d", threads, cores, cores)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _hydra_context() -> tuple[list[str], dict[str, str]]:
    """(task overrides, extra tags) of the running Hydra job; empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return [], {}
    hydra_cfg = HydraConfig.get()
    overrides = list(hydra_cfg.overrides.task)
    tags = {"overrides": " ".join(overrides) or "(none)"}
    if hydra_cfg.mode is not None and hydra_cfg.mode.name == "MULTIRUN":
        tags.update({"sweep_dir": str(hydra_cfg.sweep.dir), "job_num": str(hydra_cfg.job.num)})
    return overrides, tags


def format_table(rows: dict[str, dict[str, float]]) -> str:
    """A small fixed-width table: one row per entry of `rows`, one column per metric (blank where a row
    lacks it, e.g. spectrum metrics tracked on validation only); σ_i and the smoothed monitor stay in MLflow."""
    columns = table_columns(rows)
    width = max(10, *(len(c) + 1 for c in columns))
    lines = [" " * 12 + "".join(f"{c:>{width}}" for c in columns)]
    for label, values in rows.items():
        lines.append(f"{label:<12}" + "".join(f"{number(values[c]):>{width}}" if c in values else " " * width
                                              for c in columns))
    return "\n".join(lines)


@dataclass
class ExperimentResult:
    test: dict[str, float]
    valid: dict[str, float]  # at the selected epoch, on the selection part of validation
    best_epoch: int
    run_id: str | None
    monitor: str = ""  # the validation metric the epoch was selected on (trainer.monitor resolved)
    model: torch.nn.Module | None = None  # the selected model (weights of the best epoch), in eval mode
    pruned_at: int | None = None  # the epoch an Optuna study's pruner stopped training at

    @property
    def selection_value(self) -> float:
        """The validation value the epoch was selected on (smoothed where `trainer.smoothing` > 1)."""
        return self.valid.get(f"{self.monitor}_smoothed", self.valid[self.monitor])


@dataclass
class Parts:
    """What one configuration trains: data, task (objective + evaluators), model, regularizer, optimizer."""
    dataset: object
    task: object
    model: torch.nn.Module
    regularizer: object
    optimizer: torch.optim.Optimizer


def build_parts(cfg: DictConfig, device: torch.device, init_from: str | None = None) -> Parts:
    """Seed, then build everything `cfg` names, on `device`; `init_from`: an MLflow run whose weights
    start the model."""
    seed_everything(cfg.seed)
    dataset = build(cfg.dataset)
    regularizer = build(cfg.regularizer)
    # objective + evaluators for ranking, ratings or completion (with the data λ may learn from)
    task = task_class(cfg).build(cfg, dataset, device, regularizer)
    if task.feedback not in regularizer.feedback:
        hint = "use an implicit-feedback dataset (dataset.feedback=implicit) or " if regularizer.feedback == ("implicit",) else "use "
        raise ConfigError(f"regularizer={regularizer.option_name} works with {' or '.join(regularizer.feedback)} feedback, "
                          f"not {task.feedback}: {hint}regularizer=fixed")
    if cfg.trainer.per_sample and not task.per_sample:
        raise ConfigError(f"trainer.per_sample=true updates per BPR triple and {task.feedback} feedback trains on "
                          "other batches: leave trainer.per_sample=false")
    if cfg.trainer.per_sample and (cfg.trainer.check_finite_grads or not cfg.trainer.closed_form_step):
        raise ConfigError("trainer.per_sample=true is a closed-form step: it needs trainer.closed_form_step=true and "
                          "trainer.check_finite_grads=false")
    # optimizer=sparse_adam steps sparse gradients: factor rows are gathered with them (models/rows.py)
    sparse = OmegaConf.select(cfg, "optimizer._target_") == "torch.optim.SparseAdam"
    if sparse and not task.minibatch:
        raise ConfigError(f"optimizer=sparse_adam updates the rows of a minibatch and {task.feedback} feedback "
                          "trains on the full matrix: use optimizer=adam or group_rmsprop")
    model = build(cfg.model, n_users=dataset.n_users, n_items=dataset.n_items, sparse_grad=sparse)
    if isinstance(model, SolvedModel) and not task.solves_models:
        raise ConfigError(f"model={model.option_name} completes a matrix from entries: use dataset=lowrank "
                          f"(got {task.feedback} feedback)")
    if init_from:
        warm_start(model, init_from, cfg.tracking.uri)
    model.to(device)
    regularizer.setup(model, task.objective)
    regularizer.to(device)
    optimizer = build(cfg.optimizer)(model.parameters())
    if sparse:
        check_sparse_grad(model, regularizer)
    return Parts(dataset, task, model, regularizer, optimizer)


# trainer options read by the objective (batching) and by the experiment (checkpoint files), not the loop
NOT_LOOP_OPTIONS = {"batch_size", "full_batch", "steps_per_epoch", "checkpoint", "keep_checkpoint", "per_sample"}


def build_trainer(cfg: DictConfig, parts: Parts, tracker, checkpointer=None, trial=None) -> Trainer:
    """The one training loop over `parts`, with cfg.trainer's settings and the task's monitored metric;
    `trial`: the Optuna trial it reports its evaluations to (lambdaopt/search.py)."""
    loop = {k: v for k, v in cfg.trainer.items() if k not in NOT_LOOP_OPTIONS}
    return Trainer(parts.model, parts.regularizer, parts.optimizer, parts.task.objective, parts.task.valid_evaluator,
                   tracker, seed=cfg.seed, checkpointer=checkpointer, trial=trial,
                   **{**loop, "monitor": parts.task.monitor, "mode": parts.task.mode})


def run(cfg: DictConfig, overrides: list[str] | None = None) -> ExperimentResult:
    """Train and evaluate one configuration: the test metrics at the validation-selected epoch.

    With `resume=<run id>` (or `last`), the run's checkpoint is loaded and the same MLflow run goes on
    from the next step, with the config stored in the checkpoint (see `checkpoint.resume_config`), and
    each override must agree with it. `overrides`: those `cfg` was composed with (default: the running
    Hydra job's; `lambdaopt.run` passes its list)."""
    validate(cfg)
    # a dead server or an unusable store fails now, before any data work
    client = check_store(cfg.tracking.uri) if cfg.tracking.enabled else None
    hydra_overrides, hydra_tags = _hydra_context()
    if overrides is None:
        overrides = hydra_overrides
    else:
        hydra_tags = {**hydra_tags, "overrides": " ".join(overrides) or "(none)"}
    resume_id, resume_state = None, None
    if cfg.get("resume"):
        cfg, resume_id, resume_state = checkpoint.resume_config(cfg, overrides)
    torch.set_num_threads(cfg.num_threads)
    _warn_oversubscribed(cfg.num_threads)
    # Adam's moments of rows a batch does not touch decay geometrically into subnormal floats, which x86
    # computes slowly (a fused Adam step on 1500 × 1500 subnormal moments: 4.29 ms vs 1.73 ms flushed).
    torch.set_flush_denormal(True)
    device = resolve_device(cfg.device)
    # Built before the MLflow run exists, so a model/regularizer/task mismatch creates no run; a resumed
    # run's checkpoint holds the weights, so init_from applies to a new run only.
    parts = build_parts(cfg, device, init_from=cfg.init_from if resume_id is None else None)
    dataset, task, model = parts.dataset, parts.task, parts.model
    trial = TrialReporter.from_environment()  # a trial of an Optuna search (hydra/sweeper=optuna_study)
    tags = {**(trial.tags() if trial else {}), "git_commit": git_commit(), "dataset": dataset.name, "dataset_hash": dataset.fingerprint,
            "model": OmegaConf.select(cfg, "model._target_").rsplit(".", 1)[-1],
            "regularizer": OmegaConf.select(cfg, "regularizer._target_").rsplit(".", 1)[-1],
            "monitor": task.monitor, **hydra_tags}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_name = cfg.tracking.run_name or naming.run_name(cfg, dataset.name)
    log.info("%s: %s | %s + %s on %s", dataset.name, task.description, tags["model"], tags["regularizer"], device)

    new_tags = tags
    if resume_id is not None:  # the run keeps its params and tags; only mark that it was resumed
        new_tags = {"resumed_at_epoch": str(resume_state["trainer"]["epoch"])}

    with tracked_run(cfg.tracking, run_name, flatten(resolved), new_tags, run_id=resume_id, client=client) as tracker:
        if resume_id is None and tracker.run_id is not None:
            tracker.log_dict(resolved, "config.yaml")
            tracker.log_dict({"overrides": overrides}, "overrides.yaml")
            # imported only when a run is tracked: tracking.enabled=false needs no MLflow installed
            from lambdaopt.mlflow_data import log_dataset

            log_dataset(tracker, dataset, cfg.dataset)  # MLflow's Dataset column; statistics in its profile

        checkpointer = None
        if cfg.trainer.get("checkpoint", True) and tracker.run_id is not None:
            directory, in_artifacts = checkpoint.checkpoint_dir(tracker.artifact_uri, tracker.run_id)
            checkpointer = checkpoint.Checkpointer(directory, in_artifacts, {"run_id": tracker.run_id,
                                                                              "config": {**resolved, "resume": None}})
        trainer = build_trainer(cfg, parts, tracker, checkpointer, trial)
        if resume_state is not None:
            trainer.load_state_dict(resume_state)
        # A convex solver (model=nuclear_norm) is solved once; the optimizer built above goes unused.
        fit = task.solve(model, tracker) if isinstance(model, SolvedModel) else trainer.fit()
        if fit.pruned_at:
            tracker.set_tags({"optuna_pruned_at_epoch": str(fit.pruned_at)})
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            test = task.test_evaluator(model)
        # at the selected epoch's step, so a chart marks them there; the per-epoch curves stay valid/*
        tracker.log_metrics({**{f"test/{k}": v for k, v in test.items()},
                             **{f"best_valid/{k}": v for k, v in fit.best_valid.items()}}, step=fit.best_epoch)
        tracker.log_metrics({"best_epoch": fit.best_epoch, "train_seconds": fit.train_seconds,
                             "test_eval_seconds": time.perf_counter() - started})
        tracker.set_tags({"mlflow.note.content": naming.description(
            run_name, dataset, task.monitor, fit.best_epoch, fit.epochs_run, fit.best_valid, test,
            task.valid_evaluator.log_prefix)})
        task.finish(tracker, title=run_name)
        if cfg.tracking.log_model and tracker.run_id is not None:
            save_state_dict(tracker, model.state_dict())  # for init_from=
            from lambdaopt.mlflow_model import log_model

            log_model(tracker, model, resolved["model"], dataset)
        if checkpointer is not None:
            checkpointer.finish(tracker, keep=cfg.trainer.get("keep_checkpoint", False))

    summary = [f"best epoch {fit.best_epoch} of {fit.epochs_run} (selected on {task.monitor}, {task.mode}), "
               f"{fit.train_seconds:.1f} s training",
               format_table(result_rows(task.valid_evaluator.log_prefix, fit.best_valid, test))]
    if tracker.run_id is not None:
        in_sweep = bool(os.environ.get(PARENT_RUN_ENV))  # the sweep prints how to serve the UI once, at its end
        summary.append(f"MLflow run '{run_name}' ({tracker.run_id}) in experiment '{cfg.tracking.experiment}':\n  "
                       + browse_hint(cfg.tracking.uri, tracker.experiment_id, tracker.run_id, serve=not in_sweep))
    show("\n" + "\n".join(summary))  # the console, and the Hydra job log
    return ExperimentResult(test, fit.best_valid, fit.best_epoch, tracker.run_id, task.monitor, model, fit.pruned_at)


OPTIMIZING_SWEEPERS = {"hydra_plugins.lambdaopt_sweeper.optuna_sweeper.OptunaSweeper"}


def _sweeper_optimizes() -> bool:
    """True under a sweeper that optimizes the job's return value (hydra/sweeper=optuna_study): it gets
    the validation value of `trainer.monitor` the run was selected on, so a search never selects on test."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and HydraConfig.get().sweeper.get("_target_") in OPTIMIZING_SWEEPERS


def hydra_task(cfg: DictConfig):
    """The function `run.py` hands to Hydra: user errors become one line on stderr.

    A single run exits with status 2; inside `-m` the job returns {"status": "FAILED", "error", "run_id"}
    (its MLflow run, None if none was created) and the sweep goes on.
    SIGTERM is handled like Ctrl-C (the MLflow run ends KILLED); both exit with 128 + the signal number
    and stop a sweep. Returns the test metrics, or under an optimizing sweeper {"status": "COMPLETE" or
    "PRUNED", "value": the validation value the run was selected on, "run_id"}.
    """
    skip_dynamo_guards()  # ~1.2 s of this process's start (startup.py)
    collect_garbage_rarely()  # a job process started by a launcher (joblib, submitit): ~0.8 s (startup.py)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        result = run(cfg)
        if _sweeper_optimizes():  # the resolved metric (trainer.monitor may say `auto`), as the parent run selects
            return {"status": "PRUNED" if result.pruned_at else "COMPLETE", "value": result.selection_value,
                    "run_id": result.run_id}
        return result.test
    except TrainingInterrupted as interrupted:
        print(f"error: {interrupted}", file=sys.stderr)
        sys.exit(interrupted.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted outside the training loop; the MLflow run (if any) is marked KILLED", file=sys.stderr)
        sys.exit(130)
    except LambdaoptError as error:
        print(f"error: {error}", file=sys.stderr)
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
            return {"status": "FAILED", "error": str(error), "run_id": getattr(error, "mlflow_run_id", None)}
        sys.exit(2)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate_as_interrupt(signum, frame):
    """SIGTERM outside the training loop: unwind like Ctrl-C so the run is marked KILLED, not left RUNNING."""
    raise TrainingInterrupted("interrupted by SIGTERM outside the training loop (no checkpoint of this point)", signum)
