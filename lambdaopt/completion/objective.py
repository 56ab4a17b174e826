"""Full-batch MSE on every observation at every step (matrix completion and matrix sensing).

With 2000 observed numbers a minibatch pipeline costs more than the math, so one step here is:
form the end-to-end matrix W once (n × m), gather the observed entries through a precomputed flat
index (or apply the stacked sensing matrices), and take the mean squared error.
"""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from lambdaopt.completion.data import CompletionData
from lambdaopt.errors import ConfigError
from lambdaopt.models.rows import Rows, gather_rows

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def full_matrix(model) -> torch.Tensor:
    """The model's end-to-end n × m matrix: `model.matrix()` when it has one (deep / SVD MF, the
    nuclear-norm solution), else every row through `score_all` (plain MF)."""
    if hasattr(model, "matrix"):
        return model.matrix()
    users = torch.arange(model.n_users, device=next(model.parameters()).device)
    return model.score_all(users)


class FullBatchMSE:
    """loss(W) = (1/K) Σ_k (pred_k(W) − y_k)², pred_k = W[r_k, c_k] (completion) or ⟨A_k, W⟩ (sensing).

    One "epoch" of the trainer is `steps_per_epoch` full-batch steps, so the trainer's per-epoch
    bookkeeping (loss logging, evaluation every `eval_every` epochs) is amortized over many steps.
    `steps_taken` counts the gradient steps, the x-axis of the singular-value trajectory.
    """

    def __init__(self, data: CompletionData, device: torch.device, steps_per_epoch: int = 1):
        self.data, self.device, self.steps_per_epoch = data, torch.device(device), steps_per_epoch
        self.n_items = data.n_items
        self.values = torch.as_tensor(data.values, dtype=torch.float32, device=self.device)
        self.sensing = data.measurements is not None
        if self.sensing:
            self.measurements = torch.as_tensor(data.measurements, device=self.device)  # (K, n·m)
            ids = torch.arange(len(self.values), device=self.device)
            self.batch: Batch = (ids, ids, self.values)
        else:
            rows = torch.as_tensor(data.rows, device=self.device)
            cols = torch.as_tensor(data.cols, device=self.device)
            self.flat_index = rows * data.n_items + cols  # W.view(-1)[flat_index] = W[rows, cols]
            self.batch = (rows, cols, self.values)
        self.steps_taken = 0
        self.trajectory = None  # the evaluator's SpectrumTrajectory (tasks.py): snapshots between evaluations

    def batches(self, rng: np.random.Generator) -> Iterator[Batch]:
        """The same full batch `steps_per_epoch` times (no shuffling: there is nothing to shuffle)."""
        for _ in range(self.steps_per_epoch):
            self.steps_taken += 1
            yield self.batch

    def n_batches(self) -> int:
        return self.steps_per_epoch

    def predictions(self, matrix: torch.Tensor) -> torch.Tensor:
        """pred_k(W) for every observation, (K,)."""
        if self.sensing:
            return self.measurements @ matrix.reshape(-1)
        return matrix.reshape(-1)[self.flat_index]

    def loss(self, model, batch: Batch) -> torch.Tensor:
        return (self.predictions(full_matrix(model)) - batch[2]).square().mean()

    def loss_and_rows(self, model, batch: Batch) -> tuple[torch.Tensor, Rows]:
        """The loss, and the factor rows the observed entries touch, for row-penalty regularizers (off
        by default here: dataset=lowrank selects regularizer=none). Sensing touches every row: none are
        singled out."""
        if self.trajectory is not None:  # the model after steps_taken − 1 steps (this one is not taken yet)
            self.trajectory.observe(model, self.steps_taken - 1)
        return self.loss(model, batch), {} if self.sensing else gather_rows(model, batch[0], batch[1])

    def valid_batch(self, rng: np.random.Generator, size: int) -> Batch:
        raise ConfigError("dataset=lowrank has no validation split for learned λ: use regularizer=none or fixed")
