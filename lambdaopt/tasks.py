"""Task selection: from the dataset to (training objective, validation and test evaluators, monitor).

| dataset                                  | objective                    | evaluators                         |
|------------------------------------------|------------------------------|------------------------------------|
| implicit `SplitDataset` (default)        | BPR triples                  | full ranking (AUC, HR@K, NDCG@K)   |
| `feedback: explicit` `SplitDataset`      | rating MSE (minibatch/full)  | RMSE, MAE (+ spectrum on request)  |
| `feedback: completion` (`dataset=lowrank`)| full-batch MSE on all obs.  | reconstruction vs W* + spectrum    |
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from lambdaopt.completion.data import CompletionData
from lambdaopt.completion.metrics import CompletionEvaluator, SpectrumTrajectory
from lambdaopt.completion.objective import FullBatchMSE
from lambdaopt.config.monitor import resolve_monitor, task_kind
from lambdaopt.data.splits import carve_holdout, lambda_data_split, split_validation
from lambdaopt.errors import ConfigError
from lambdaopt.metrics import RankingEvaluator
from lambdaopt.objectives import BPRObjective
from lambdaopt.ratings import RatingEvaluator, RatingObjective
from lambdaopt.trainer import FitResult

log = logging.getLogger(__name__)


@dataclass
class Task:
    kind: str  # implicit | explicit | completion
    objective: object
    valid_evaluator: Callable
    test_evaluator: Callable
    monitor: str
    mode: str  # max | min
    description: str
    trajectory: Optional[SpectrumTrajectory] = None
    data: object = None

    def finish(self, tracker, title: str = "") -> None:
        """Artifacts written once at the end: the singular-value trajectory (parquet + PNG) and, for
        completion, the ground truth and the observations (`completion_data.npz`)."""
        if self.trajectory is not None:
            self.trajectory.log_to(tracker, title)
        if isinstance(self.data, CompletionData) and tracker.run_id is not None:
            import os
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = os.path.join(tmp, "completion_data.npz")
                arrays = {k: getattr(self.data, k) for k in ("rows", "cols", "values", "truth", "measurements")
                          if getattr(self.data, k) is not None}
                np.savez_compressed(path, **arrays)
                tracker.log_file(path)


def select_task(cfg: DictConfig, dataset, device: torch.device, regularizer=None) -> Task:
    """The objective and evaluators for `dataset`, as named by `dataset.feedback` (see the table above).

    For ranking, a regularizer that learns λ from held-out data (`regularizer.lambda_data`) gets it as
    `objective.valid_batch` (data/splits.py): with "split", per user a share of the validation
    interactions, or the latest training interaction of a user with one (carved out of the training
    triples); with "holdout", a share of each user's training interactions carved out of the training
    triples (sized per split method), and model selection uses the whole validation split; with
    "validation", a random share of the validation interactions. Selection uses the validation
    interactions λ does not see, with λ's share excluded like training items (known to the user).
    """
    kind = task_kind(cfg)
    monitor, mode = resolve_monitor(cfg)
    trainer = cfg.trainer
    if kind == "completion":
        if not isinstance(dataset, CompletionData):
            raise ConfigError(f"dataset.feedback=completion needs a completion dataset (dataset=lowrank), "
                              f"got {type(dataset).__name__}")
        objective = FullBatchMSE(dataset, device, steps_per_epoch=trainer.steps_per_epoch)
        evaluator = CompletionEvaluator(dataset, objective, top_k=cfg.evaluation.spectrum_top_k)
        evaluator.log_prefix = "eval"  # these are test quantities vs W*, tracked along the way, never selected on
        objective.trajectory = evaluator.trajectory  # σ snapshots between evaluations, from step 0 (log-spaced)
        final = CompletionEvaluator(dataset, objective, top_k=cfg.evaluation.spectrum_top_k)
        what = "sensing measurements" if dataset.measurements is not None else "observed entries"
        description = (f"{dataset.n_users} × {dataset.n_items} rank {dataset.rank}, "
                       f"{dataset.n_train_samples} {what}, full batch")
        return Task(kind, objective, evaluator, final, monitor, mode, description, evaluator.trajectory, dataset)
    if isinstance(dataset, CompletionData):
        raise ConfigError(f"dataset '{dataset.name}' is a completion dataset: dataset.feedback must be completion")
    counts = f"{len(dataset.train)}/{len(dataset.valid)}/{len(dataset.test)} train/valid/test"
    description = f"{dataset.n_users} users, {dataset.n_items} items, {counts}"
    if kind == "explicit":
        objective = RatingObjective(dataset, trainer.batch_size, device, full_batch=trainer.full_batch,
                                    steps_per_epoch=trainer.steps_per_epoch)
        top_k = cfg.evaluation.spectrum_top_k if cfg.evaluation.track_spectrum else 0
        valid = RatingEvaluator(dataset.valid, objective, spectrum_top_k=top_k)
        test = RatingEvaluator(dataset.test, objective)
        objective.trajectory = valid.trajectory  # σ snapshots between evaluations, from step 0 (log-spaced)
        return Task(kind, objective, valid, test, monitor, mode, description + ", ratings", valid.trajectory)
    if max(cfg.evaluation.ks) > dataset.n_items:
        raise ConfigError(
            f"evaluation.ks={list(cfg.evaluation.ks)} asks for K > {dataset.n_items} items in "
            f"dataset '{dataset.name}': use values ≤ {dataset.n_items}"
        )
    source = getattr(regularizer, "lambda_data", None)
    fit, learn, select_valid, select_excluded = dataset.train, None, dataset.valid, dataset.train
    method = OmegaConf.select(cfg, "dataset.split.method", default="temporal")
    data_seed = OmegaConf.select(cfg, "dataset.seed", default=0)
    if source == "split":
        fit, learn_valid, holdout, select_valid = lambda_data_split(
            dataset.train, dataset.valid, dataset.n_users, method, regularizer.validation_share, data_seed)
        learn, select_excluded = learn_valid.concat(holdout), dataset.train.concat(learn_valid)
        description += (f", λ learns from {len(learn_valid)} validation + {len(holdout)} held-out training "
                        f"interactions, {len(select_valid)} select the epoch")
    elif source == "holdout":
        fit, learn = carve_holdout(dataset.train, dataset.n_users, method, regularizer.holdout_ratio, data_seed)
        description += f", λ learns from {len(learn)} held-out training interactions"
    elif source == "validation":
        learn, select_valid = split_validation(dataset.valid, regularizer.validation_share, cfg.seed)
        select_excluded = dataset.train if select_valid is learn else dataset.train.concat(learn)
    objective = BPRObjective(dataset, trainer.batch_size, device, lambda_valid=learn, fit=fit)
    evaluation = dict(ks=cfg.evaluation.ks, chunk_users=cfg.evaluation.chunk_users, device=device)
    valid = RankingEvaluator(dataset.n_users, dataset.n_items, select_valid, select_excluded, **evaluation)
    test = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test, dataset.train.concat(dataset.valid),
                            **evaluation)
    return Task(kind, objective, valid, test, monitor, mode, description)


def solve_convex(model, task: Task, tracker) -> FitResult:
    """For models solved once rather than trained (`model=nuclear_norm`): solve, evaluate, log."""
    if task.kind != "completion":
        raise ConfigError(f"model=nuclear_norm completes a matrix from entries: use dataset=lowrank "
                          f"(got a {task.kind} dataset)")
    started = time.perf_counter()
    info = model.solve(task.data)
    with torch.no_grad():
        metrics = task.valid_evaluator(model)
    tracker.log_metrics({**{f"{task.valid_evaluator.log_prefix}/{k}": v for k, v in metrics.items()},
                         **{f"solver/{k}": v for k, v in info.items()}}, step=0)
    return FitResult(0, metrics, 0, [], time.perf_counter() - started)
