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
from lambdaopt.data.splits import split_validation
from lambdaopt.errors import ConfigError, LambdaoptError
from lambdaopt.metrics import RankingEvaluator
from lambdaopt.objectives import BPRObjective
from lambdaopt.tracking import flatten, git_commit, save_state_dict, tracked_run
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
    """A small fixed-width table: one row per entry of `rows`, one column per metric."""
    columns = list(next(iter(rows.values())).keys())
    width = max(10, *(len(c) for c in columns))
    lines = [" " * 12 + "".join(f"{c:>{width}}" for c in columns)]
    for label, values in rows.items():
        lines.append(f"{label:<12}" + "".join(f"{values[c]:>{width}.4f}" for c in columns))
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
    if max(cfg.evaluation.ks) > dataset.n_items:
        raise ConfigError(
            f"evaluation.ks={list(cfg.evaluation.ks)} asks for K > {dataset.n_items} items in "
            f"dataset '{dataset.name}': use values ≤ {dataset.n_items}"
        )
    overrides, hydra_tags = _hydra_context()
    tags = {"git_commit": git_commit(), "dataset": dataset.name, "dataset_hash": dataset.fingerprint,
            "model": OmegaConf.select(cfg, "model._target_").rsplit(".", 1)[-1],
            "regularizer": OmegaConf.select(cfg, "regularizer._target_").rsplit(".", 1)[-1], **hydra_tags}
    resolved = OmegaConf.to_container(cfg, resolve=True)
    run_name = cfg.tracking.run_name or f"{tags['model']}-{tags['regularizer']}-{dataset.name}"

    with tracked_run(cfg.tracking, run_name, flatten(resolved), tags) as tracker:
        tracker.log_dict(resolved, "config.yaml")
        tracker.log_dict({"overrides": overrides}, "overrides.yaml")
        tracker.log_metrics({f"data/{k}": v for k, v in dataset.statistics().items()})

        model = build(cfg.model, n_users=dataset.n_users, n_items=dataset.n_items).to(device)
        regularizer = build(cfg.regularizer)
        learn_valid, select_valid = split_validation(dataset.valid, regularizer.validation_share, cfg.seed)
        objective = BPRObjective(dataset, cfg.trainer.batch_size, device, lambda_valid=learn_valid)
        regularizer.setup(model, objective)
        regularizer.to(device)
        optimizer = build(cfg.optimizer)(model.parameters())
        evaluation = dict(ks=cfg.evaluation.ks, chunk_users=cfg.evaluation.chunk_users, device=device)
        # selection never counts what λ learned from as a negative: those items are known to the user
        select_excluded = dataset.train if select_valid is learn_valid else dataset.train.concat(learn_valid)
        valid_evaluator = RankingEvaluator(dataset.n_users, dataset.n_items, select_valid, select_excluded, **evaluation)
        test_evaluator = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test,
                                          dataset.train.concat(dataset.valid), **evaluation)
        log.info("%s: %d users, %d items, %d/%d/%d train/valid/test | %s + %s on %s", dataset.name,
                 dataset.n_users, dataset.n_items, len(dataset.train), len(dataset.valid), len(dataset.test),
                 tags["model"], tags["regularizer"], device)

        trainer = Trainer(model, regularizer, optimizer, objective, valid_evaluator, tracker,
                          seed=cfg.seed, **cfg.trainer)
        fit = trainer.fit()
        model.eval()
        started = time.perf_counter()
        with torch.no_grad():
            test = test_evaluator(model)
        tracker.log_metrics({f"test/{k}": v for k, v in test.items()})
        tracker.log_metrics({"best_epoch": fit.best_epoch, "train_seconds": fit.train_seconds,
                             "test_eval_seconds": time.perf_counter() - started,
                             **{f"best_valid/{k}": v for k, v in fit.best_valid.items()}})
        if cfg.tracking.log_model:
            save_state_dict(tracker, model.state_dict())

    print(f"\nbest epoch {fit.best_epoch} of {fit.epochs_run} (selected on validation {cfg.trainer.monitor}), "
          f"{fit.train_seconds:.1f}s training")
    print(format_table({"valid": fit.best_valid, "test": test}))
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
