"""Matrix completion and sensing (`dataset.feedback=completion`, dataset=lowrank): full-batch MSE on
every observation at every step, evaluated against the known W* (evaluation/completion.py).

With 2000 observed numbers a minibatch pipeline costs more than the math, so one step here is:
form the end-to-end matrix W once (n × m), gather the observed entries through a precomputed flat
index (or apply the stacked sensing matrices), and take the mean squared error.
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Iterator

import numpy as np
import torch
from omegaconf import DictConfig

from lambdaopt.contracts import Rows
from lambdaopt.data.lowrank import CompletionData
from lambdaopt.errors import ConfigError
from lambdaopt.evaluation.completion import METRICS, CompletionEvaluator
from lambdaopt.models.rows import gather_rows
from lambdaopt.tasks.base import ObservesSpectrum, Task, register_task
from lambdaopt.tasks.completion_step import ClosedFormProductStep

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class FullBatchMSE(ObservesSpectrum):
    """loss(W) = (1/K) Σ_k (pred_k(W) − y_k)², pred_k = W[r_k, c_k] (completion) or ⟨A_k, W⟩ (sensing).

    One "epoch" of the trainer is `steps_per_epoch` full-batch steps, so the trainer's per-epoch
    bookkeeping (loss logging, evaluation every `eval_every` epochs) is amortized over many steps.
    `steps_taken` counts the gradient steps, the x-axis of the singular-value trajectory.
    """

    def __init__(self, data: CompletionData, device: torch.device, steps_per_epoch: int = 1, gather_rows: bool = True):
        self.data, self.device, self.steps_per_epoch = data, torch.device(device), steps_per_epoch
        self.gather_rows = gather_rows  # False when the penalty reads no rows (regularizer=none): a third of a deep-MF step
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

    def batches(self, rng: np.random.Generator) -> Iterator[Batch]:
        """The same full batch `steps_per_epoch` times (no shuffling: there is nothing to shuffle)."""
        for _ in range(self.steps_per_epoch):
            self.steps_taken += 1
            yield self.batch

    def n_batches(self) -> int:
        return self.steps_per_epoch

    def closed_form_step(self, model, regularizer, optimizer) -> ClosedFormProductStep | None:
        """The step without autograd (completion_step.py) for a product of factors (deep MF) on observed
        entries with no row penalty; None for everything else (sensing, penalties, other models)."""
        if model.product_of_factors and not self.sensing and not regularizer.reads_rows:
            return ClosedFormProductStep(model, self, optimizer)
        return None

    @staticmethod
    def closed_form_grads(model, params, batch) -> None:
        return None

    def state_dict(self) -> dict:
        return {"steps_taken": self.steps_taken}

    def load_state_dict(self, state: dict) -> None:
        self.steps_taken = state["steps_taken"]

    def predictions(self, matrix: torch.Tensor) -> torch.Tensor:
        """pred_k(W) for every observation, (K,)."""
        if self.sensing:
            return self.measurements @ matrix.reshape(-1)
        return matrix.reshape(-1)[self.flat_index]

    def loss(self, model, batch: Batch) -> torch.Tensor:
        return (self.predictions(model.matrix()) - batch[2]).square().mean()

    def loss_and_rows(self, model, batch: Batch) -> tuple[torch.Tensor, Rows]:
        """The loss, and the factor rows the observed entries touch, for row-penalty regularizers (off
        by default here: dataset=lowrank selects regularizer=none). Sensing touches every row: none are
        singled out."""
        self.observe(model)
        rows = gather_rows(model, batch[0], batch[1]) if self.gather_rows and not self.sensing else {}
        return self.loss(model, batch), rows


@register_task("completion")
class CompletionTask(Task):
    """Full-batch MSE on the observations; reconstruction and spectrum metrics against W*, logged under
    `eval/` at every evaluation: test quantities tracked along the way, never selected on."""

    METRICS, DEFAULT_MONITOR = METRICS, "train_mse"
    LOWER_IS_BETTER = frozenset(METRICS)
    minibatch = False
    solves_models = True

    def __init__(self, *args, data: CompletionData, **kwargs):
        super().__init__(*args, **kwargs)
        self.data = data

    @classmethod
    def build(cls, cfg: DictConfig, dataset, device, regularizer) -> "CompletionTask":
        if not isinstance(dataset, CompletionData):
            raise ConfigError(f"dataset.feedback=completion needs a completion dataset (dataset=lowrank), "
                              f"got {type(dataset).__name__}")
        objective = FullBatchMSE(dataset, device, steps_per_epoch=cfg.trainer.steps_per_epoch,
                                 gather_rows=regularizer.reads_rows)
        evaluator = CompletionEvaluator(dataset, objective, top_k=cfg.evaluation.spectrum_top_k)
        evaluator.log_prefix = "eval"  # test quantities vs W*, tracked along the way, never selected on
        objective.trajectory = evaluator.trajectory  # σ snapshots between evaluations, from step 0 (log-spaced)
        final = CompletionEvaluator(dataset, objective, top_k=cfg.evaluation.spectrum_top_k)
        what = "sensing measurements" if dataset.measurements is not None else "observed entries"
        description = (f"{dataset.n_users} × {dataset.n_items} rank {dataset.rank}, "
                       f"{dataset.n_train_samples} {what}, full batch")
        return cls(objective, evaluator, final, *cls.resolve_monitor(cfg), description, data=dataset)

    def solve(self, model, tracker):
        """For models solved once rather than trained (`model=nuclear_norm`): solve, evaluate, log."""
        from lambdaopt.trainer import FitResult

        started = time.perf_counter()
        info = model.solve(self.data)
        with torch.no_grad():
            metrics = self.valid_evaluator(model)
        tracker.log_metrics({**{f"{self.valid_evaluator.log_prefix}/{k}": v for k, v in metrics.items()},
                             **{f"solver/{k}": v for k, v in info.items()}}, step=0)
        return FitResult(0, metrics, 0, [], time.perf_counter() - started)

    def finish(self, tracker, title: str = "") -> None:
        """The singular-value trajectory (parquet + PNG), and the ground truth and the observations
        (`completion_data.npz`)."""
        super().finish(tracker, title)
        if tracker.run_id is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "completion_data.npz")
            arrays = {k: getattr(self.data, k) for k in ("rows", "cols", "values", "truth", "measurements")
                      if getattr(self.data, k) is not None}
            np.savez_compressed(path, **arrays)
            tracker.log_file(path)
