"""One experiment, end to end: config → data → model → training → test metrics → MLflow."""
from __future__ import annotations

import logging
import random
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from lambdaopt.config import validate
from lambdaopt.errors import ConfigError, LambdaoptError
from lambdaopt.tasks import select_task, solve_convex
from lambdaopt.tracking import flatten, git_commit, load_run_state_dict, save_state_dict, tracked_run
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
    lacks it, e.g. spectrum metrics tracked on validation only); σ_i stay in MLflow."""
    columns = list(dict.fromkeys(c for values in rows.values() for c in values if not c.startswith("sigma_")))
    width = max(10, *(len(c) + 1 for c in columns))
    lines = [" " * 12 + "".join(f"{c:>{width}}" for c in columns)]
    for label, values in rows.items():
        lines.append(f"{label:<12}" + "".join(f"{values[c]:>{width}.4g}" if c in values else " " * width
                                              for c in columns))
    return "\n".join(lines)


@dataclass
class ExperimentResult:
    test: dict[str, float]
    valid: dict[str, float]  # at the selected epoch, on the selection part of validation
    best_epoch: int
    run_id: str | None


def run(cfg: DictConfig) -> ExperimentResult:
    """Train and evaluate one configuration: the test metrics at the validation-selected epoch."""
    validate(cfg)
    torch.set_num_threads(cfg.num_threads)
    device = resolve_device(cfg.device)
    seed_everything(cfg.seed)

    dataset = build(cfg.dataset)
    regularizer = build(cfg.regularizer)
    # objective + evaluators for ranking, ratings or completion (with the validation share λ may learn from)
    task = select_task(cfg, dataset, device, validation_share=regularizer.validation_share)
    overrides, hydra_tags = _hydra_context()
    tags = {"git_commit": git_commit(), "dataset": dataset.name, "dataset_hash": dataset.fingerprint,
            "model": OmegaConf.select(cfg, "model._target_").rsplit(".", 1)[-1],
            "regularizer": OmegaConf.select(cfg, "regularizer._target_").rsplit(".", 1)[-1],
            "monitor": task.monitor, **hydra_tags}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_name = cfg.tracking.run_name or f"{tags['model']}-{tags['regularizer']}-{dataset.name}"

    with tracked_run(cfg.tracking, run_name, flatten(resolved), tags) as tracker:
        tracker.log_dict(resolved, "config.yaml")
        tracker.log_dict({"overrides": overrides}, "overrides.yaml")
        tracker.log_metrics({f"data/{k}": v for k, v in dataset.statistics().items()})

        model = build(cfg.model, n_users=dataset.n_users, n_items=dataset.n_items)
        if cfg.init_from:
            warm_start(model, cfg.init_from, cfg.tracking.uri)
        model.to(device)
        objective = task.objective
        regularizer.setup(model, objective)
        regularizer.to(device)
        optimizer = build(cfg.optimizer)(model.parameters())
        valid_evaluator, test_evaluator = task.valid_evaluator, task.test_evaluator
        log.info("%s: %s | %s + %s on %s", dataset.name, task.description, tags["model"], tags["regularizer"], device)

        trainer = Trainer(model, regularizer, optimizer, objective, valid_evaluator, tracker,
                          seed=cfg.seed, **{**cfg.trainer, "monitor": task.monitor, "mode": task.mode})
        # A convex solver (model=nuclear_norm) is solved once; the optimizer built above goes unused.
        fit = solve_convex(model, task, tracker) if hasattr(model, "solve") else trainer.fit()
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            test = test_evaluator(model)
        tracker.log_metrics({f"test/{k}": v for k, v in test.items()})
        tracker.log_metrics({"best_epoch": fit.best_epoch, "train_seconds": fit.train_seconds,
                             "test_eval_seconds": time.perf_counter() - started,
                             **{f"best_valid/{k}": v for k, v in fit.best_valid.items()}})
        task.finish(tracker, title=run_name)
        if cfg.tracking.log_model:
            save_state_dict(tracker, model.state_dict())

    print(f"\nbest epoch {fit.best_epoch} of {fit.epochs_run} (selected on {task.monitor}, {task.mode}), "
          f"{fit.train_seconds:.1f}s training")
    print(format_table({getattr(valid_evaluator, "log_prefix", "valid"): fit.best_valid, "test": test}))
    if tracker.run_id is not None:
        print(f"MLflow run {tracker.run_id} in experiment '{cfg.tracking.experiment}'; browse with:\n"
              f"  mlflow ui --backend-store-uri {cfg.tracking.uri} -w 1")
    return ExperimentResult(test, fit.best_valid, fit.best_epoch, tracker.run_id)


def _sweeper_optimizes() -> bool:
    """True under a sweeper that optimizes the job's return value (Optuna): it gets one number, the
    validation value of `trainer.monitor`, so a search never selects on test."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and "optuna" in str(HydraConfig.get().sweeper.get("_target_", ""))


def hydra_task(cfg: DictConfig):
    """The function `run.py` hands to Hydra: user errors become one line on stderr.

    A single run exits with status 2; inside `-m` the job reports FAILED and the sweep goes on.
    Returns the test metrics, or under an optimizing sweeper the validation value of `trainer.monitor`.
    """
    try:
        result = run(cfg)
        if _sweeper_optimizes():
            return result.valid[cfg.trainer.monitor]
        return result.test
    except LambdaoptError as error:
        print(f"error: {error}", file=sys.stderr)
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized() and HydraConfig.get().mode.name == "MULTIRUN":
            return {"status": "FAILED", "error": str(error)}
        sys.exit(2)
