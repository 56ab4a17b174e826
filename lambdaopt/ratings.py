"""Rating regression (`dataset.feedback=explicit`): MSE on (user, item, rating), RMSE/MAE on held-out.

Predictions are r̂(u, i) = μ + s(u, i), with μ the mean training rating and s the model's score
(⟨p_u, q_i⟩ + b_u + b_i for MF with biases): centering by μ means no model needs a global bias.
"""
from __future__ import annotations

from typing import Iterator, Optional

import numpy as np
import torch

from lambdaopt.completion.metrics import SpectrumTrajectory, norm_metrics, spectrum_metrics
from lambdaopt.completion.objective import full_matrix
from lambdaopt.data.interactions import Interactions, SplitDataset
from lambdaopt.models.rows import Rows, score_and_rows

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class RatingObjective:
    """mean over the batch of (μ + s(u, i) − r_ui)²: shuffled minibatches of `batch_size`, or, with
    `full_batch`, every training rating in each of `steps_per_epoch` steps per epoch."""

    def __init__(self, dataset: SplitDataset, batch_size: int, device: torch.device,
                 full_batch: bool = False, steps_per_epoch: int = 1):
        self.dataset, self.batch_size, self.device = dataset, batch_size, torch.device(device)
        self.full_batch, self.steps_per_epoch = full_batch, steps_per_epoch
        self.mean = float(dataset.train.ratings.mean()) if len(dataset.train) else 0.0
        self.train = self._to_device(dataset.train)
        self.steps_taken = 0
        self.trajectory = None  # the evaluator's SpectrumTrajectory with evaluation.track_spectrum (tasks.py)

    def _to_device(self, part: Interactions) -> Batch:
        return (torch.as_tensor(part.users, device=self.device), torch.as_tensor(part.items, device=self.device),
                torch.as_tensor(part.ratings, dtype=torch.float32, device=self.device))

    def batches(self, rng: np.random.Generator) -> Iterator[Batch]:
        if self.full_batch:
            for _ in range(self.steps_per_epoch):
                self.steps_taken += 1
                yield self.train
            return
        order = torch.as_tensor(rng.permutation(len(self.dataset.train)), device=self.device)
        for start in range(0, len(order), self.batch_size):
            index = order[start:start + self.batch_size]
            self.steps_taken += 1
            yield tuple(t[index] for t in self.train)

    def n_batches(self) -> int:
        return self.steps_per_epoch if self.full_batch else -(-len(self.dataset.train) // self.batch_size)

    def valid_batch(self, rng: np.random.Generator, size: int) -> Batch:
        """`size` validation ratings drawn with replacement (the look-ahead target of learned λ)."""
        index = rng.integers(0, len(self.dataset.valid), size)
        return self._to_device(self.dataset.valid.take(index))

    def loss(self, model, batch: Batch) -> torch.Tensor:
        users, items, ratings = batch
        return (model.score(users, items) + self.mean - ratings).square().mean()

    def loss_and_rows(self, model, batch: Batch) -> tuple[torch.Tensor, Rows]:
        """The same loss, and the factor rows it read, for the penalty."""
        if self.trajectory is not None:  # the model after steps_taken − 1 steps (this one is not taken yet)
            self.trajectory.observe(model, self.steps_taken - 1)
        users, items, ratings = batch
        scores, rows = score_and_rows(model, users, items)
        return (scores + self.mean - ratings).square().mean(), rows


class RatingEvaluator:
    """RMSE = sqrt(mean (r̂ − r)²), MAE = mean |r̂ − r|, MSE over the held-out ratings; with
    `spectrum_top_k` > 0 also the spectrum metrics of the model's full matrix (see
    completion/metrics.py) and their trajectory, indexed by `objective.steps_taken`."""

    def __init__(self, heldout: Interactions, objective: RatingObjective, spectrum_top_k: int = 0,
                 chunk: int = 65536):
        self.objective, self.chunk, self.spectrum_top_k = objective, chunk, spectrum_top_k
        self.heldout = objective._to_device(heldout)
        self.trajectory: Optional[SpectrumTrajectory] = (SpectrumTrajectory(spectrum_top_k, None, objective.n_batches())
                                                         if spectrum_top_k else None)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        users, items, ratings = self.heldout
        predictions = torch.cat([model.score(users[s:s + self.chunk], items[s:s + self.chunk])
                                 for s in range(0, len(users), self.chunk)]) + self.objective.mean
        error = (predictions - ratings).double()
        mse = float(error.square().mean()) if len(error) else float("nan")
        metrics = {"rmse": mse ** 0.5, "mae": float(error.abs().mean()) if len(error) else float("nan"), "mse": mse}
        if self.trajectory is not None:
            spectrum, sigma = spectrum_metrics(full_matrix(model), self.spectrum_top_k)
            metrics.update(spectrum)
            metrics.update(norm_metrics(model))
            self.trajectory.record(self.objective.steps_taken, sigma)
        return metrics
