"""Rating regression (`dataset.feedback=explicit`): MSE on (user, item, rating), RMSE/MAE on held-out.

Predictions are r̂(u, i) = μ + s(u, i), with μ the mean training rating and s the model's score
(⟨p_u, q_i⟩ + b_u + b_i for MF with biases): centering by μ means no model needs a global bias.
"""
from __future__ import annotations

import functools
from typing import Iterator

import numpy as np
import torch
from omegaconf import DictConfig

from lambdaopt.contracts import Rows
from lambdaopt.data.interactions import Interactions, SplitDataset
from lambdaopt.errors import ConfigError
from lambdaopt.evaluation.rating import METRICS, RatingEvaluator
from lambdaopt.models.rows import score_and_rows
from lambdaopt.tasks.base import ObservesSpectrum, Task, lambda_data, register_task

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class RatingObjective(ObservesSpectrum):
    """mean over the batch of (μ + s(u, i) − r_ui)²: shuffled minibatches of `batch_size`, or, with
    `full_batch`, every training rating in each of `steps_per_epoch` steps per epoch. `fit`: the ratings
    it trains on (default the training split); `lambda_valid`: learned λ's look-ahead target, drawn by
    `valid_batch` (default the validation split; RatingTask passes λ's share, base.lambda_data)."""

    def __init__(self, dataset: SplitDataset, batch_size: int, device: torch.device,
                 full_batch: bool = False, steps_per_epoch: int = 1, lambda_valid=None, fit=None):
        self.dataset, self.batch_size, self.device = dataset, batch_size, torch.device(device)
        self.full_batch, self.steps_per_epoch = full_batch, steps_per_epoch
        self.fit = dataset.train if fit is None else fit
        self.lambda_valid = dataset.valid if lambda_valid is None else lambda_valid
        self.mean = float(self.fit.ratings.mean()) if len(self.fit) else 0.0
        self.train = self._to_device(self.fit)
        self.steps_taken = 0

    def _to_device(self, part: Interactions) -> Batch:
        return (torch.as_tensor(part.users, device=self.device), torch.as_tensor(part.items, device=self.device),
                torch.as_tensor(part.ratings, dtype=torch.float32, device=self.device))

    def batches(self, rng: np.random.Generator) -> Iterator[Batch]:
        if self.full_batch:
            for _ in range(self.steps_per_epoch):
                self.steps_taken += 1
                yield self.train
            return
        order = torch.as_tensor(rng.permutation(len(self.fit)), device=self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            self.steps_taken += 1
            yield tuple(t[index] for t in self.train)

    def n_batches(self) -> int:
        return self.steps_per_epoch if self.full_batch else -(-len(self.fit) // self.batch_size)

    @staticmethod
    def closed_form_step(model, regularizer, optimizer) -> None:
        return None  # every step through autograd

    @staticmethod
    def closed_form_grads(model, params, batch) -> None:
        return None

    @staticmethod
    def compiled_lookahead(model, kind, hp) -> None:
        return None  # λ's look-ahead through hypergrad.py

    def state_dict(self) -> dict:
        return {"steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        self.steps_taken = state["steps_taken"]

    @functools.cached_property
    def valid_ratings(self) -> Batch:
        """`lambda_valid` on the device, moved on the first draw: a run without learned λ never draws."""
        return self._to_device(self.lambda_valid)

    def valid_batch(self, rng: np.random.Generator, size: int) -> Batch:
        """`size` ratings of `lambda_valid` drawn with replacement (the look-ahead target of learned λ)."""
        index = torch.as_tensor(rng.integers(0, len(self.lambda_valid), size), device=self.device)
        return tuple(t[index] for t in self.valid_ratings)

    @staticmethod
    def batch_ids(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        users, items, _ = batch
        return users, items

    @staticmethod
    def with_ids(batch: Batch, users: torch.Tensor, items: torch.Tensor) -> Batch:
        return users, items, batch[2]

    def loss(self, model, batch: Batch) -> torch.Tensor:
        users, items, ratings = batch
        return (model.score(users, items) + self.mean - ratings).square().mean()

    def loss_and_rows(self, model, batch: Batch) -> tuple[torch.Tensor, Rows]:
        """The same loss, and the factor rows it read, for the penalty."""
        self.observe(model)
        users, items, ratings = batch
        scores, rows = score_and_rows(model, users, items)
        return (scores + self.mean - ratings).square().mean(), rows


@register_task("explicit")
class RatingTask(Task):
    """Rating MSE on the training ratings; RMSE / MAE on validation and test."""

    METRICS, DEFAULT_MONITOR = METRICS, "rmse"
    LOWER_IS_BETTER = frozenset(METRICS) | {"nuclear_norm", "effective_rank"}

    @classmethod
    def build(cls, cfg: DictConfig, dataset, device, regularizer) -> "RatingTask":
        if not isinstance(dataset, SplitDataset):
            raise ConfigError(f"dataset '{dataset.name}' is a completion dataset: dataset.feedback must be completion")
        trainer, parts = cfg.trainer, lambda_data(cfg, dataset, regularizer)  # learned λ's share (base.py)
        objective = RatingObjective(dataset, trainer.batch_size, device, full_batch=trainer.full_batch,
                                    steps_per_epoch=trainer.steps_per_epoch, lambda_valid=parts.learn, fit=parts.fit)
        top_k = cfg.evaluation.spectrum_top_k if cfg.evaluation.track_spectrum else 0
        valid = RatingEvaluator(parts.select, objective, spectrum_top_k=top_k, steps_per_epoch=objective.n_batches())
        test = RatingEvaluator(dataset.test, objective)
        objective.trajectory = valid.trajectory  # σ snapshots between evaluations, from step 0 (log-spaced)
        description = (f"{dataset.n_users} users, {dataset.n_items} items, {len(dataset.train)}/{len(dataset.valid)}/"
                       f"{len(dataset.test)} train/valid/test, ratings{parts.note}")
        return cls(objective, valid, test, *cls.resolve_monitor(cfg), description)
