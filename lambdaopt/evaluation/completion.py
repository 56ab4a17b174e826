"""Reconstruction and spectrum metrics of an end-to-end matrix W (n × m), and their trajectory.

With σ_1 ≥ σ_2 ≥ ... the singular values of W and W* the ground truth:

    relative_error  = ‖W − W*‖_F² / ‖W*‖_F²         (all entries, observed or not; W* is generated with
                                                      ‖W*‖_F² = n·m, so this is also the all-entries MSE)
    nuclear_norm    = Σ_i σ_i
    effective_rank  = exp(−Σ_i p_i log p_i),  p_i = σ_i / Σ_j σ_j   (Roy & Vetterli 2007)
    sigma_i         = σ_i for i ≤ top_k
    grad_norm       = sqrt(Σ_p ‖∂L/∂p‖²) of the last step;  param_norm = sqrt(Σ_p ‖p‖²)
"""
from __future__ import annotations

import math
import os
import tempfile

import numpy as np
import torch

from lambdaopt.data.lowrank import CompletionData

# what the evaluator reports (besides sigma_i, param_norm and grad_norm); all smaller-better: errors, and
# the descriptors where smaller means simpler (rank, nuclear norm)
METRICS = ("train_mse", "relative_error", "nuclear_norm", "effective_rank")


def effective_rank(singular_values: torch.Tensor) -> float:
    """exp of the Shannon entropy of σ / Σσ (0 · log 0 = 0); 0 for the zero matrix."""
    total = singular_values.sum()
    if total <= 0:
        return 0.0
    p = singular_values / total
    entropy = -torch.where(p > 0, p * torch.log(p), torch.zeros_like(p)).sum()
    return float(torch.exp(entropy))


def spectrum_metrics(matrix: torch.Tensor, top_k: int) -> tuple[dict[str, float], torch.Tensor]:
    """({nuclear_norm, effective_rank, sigma_1..sigma_k}, all singular values as float64, descending)."""
    sigma = torch.linalg.svdvals(matrix.detach().to(torch.float64))
    metrics = {"nuclear_norm": float(sigma.sum()), "effective_rank": effective_rank(sigma)}
    metrics.update({f"sigma_{i + 1}": float(value) for i, value in enumerate(sigma[:top_k])})
    return metrics, sigma


def norm_metrics(model) -> dict[str, float]:
    """Parameter norm, and the gradient norm of the last optimizer step (when gradients are kept)."""
    params = [p for p in model.parameters()]
    grads = [p.grad for p in params if p.grad is not None]
    metrics = {"param_norm": math.sqrt(sum(float(p.detach().square().sum()) for p in params))}
    if grads:
        metrics["grad_norm"] = math.sqrt(sum(float(g.square().sum()) for g in grads))
    return metrics


SNAPSHOTS_PER_DECADE = 8


def on_log_grid(step: int) -> bool:
    """Step 0 and round(10^(j/8)) for j = 0, 1, ...: 1, 2, 3, 4, 6, 7, 10, 13, 18, 24, 32, ... ."""
    if step == 0:
        return True
    j = round(SNAPSHOTS_PER_DECADE * math.log10(step))
    return any(round(10 ** (i / SNAPSHOTS_PER_DECADE)) == step for i in (j - 1, j, j + 1))


def next_on_log_grid(step: int) -> int:
    """The first step after `step` that `on_log_grid` accepts."""
    i = max(0, math.floor(SNAPSHOTS_PER_DECADE * math.log10(max(step, 1))) - 2)  # its grid step is ≤ step
    while round(10 ** (i / SNAPSHOTS_PER_DECADE)) <= step:
        i += 1
    return round(10 ** (i / SNAPSHOTS_PER_DECADE))


class SpectrumTrajectory:
    """The top singular values at every evaluation and, between evaluations, at gradient steps on a
    log-spaced grid from step 0 (`observe`, called by the objective before each step): the early
    dynamics happen within the first epoch. A long table (step, index, value), written at the end as a
    parquet artifact and a figure (PNG + PDF) with the ground truth's singular values when known."""

    def __init__(self, top_k: int, truth_sigma: np.ndarray | None = None, steps_per_epoch: int | None = None):
        self.top_k, self.steps, self.values = top_k, [], []
        self.truth_sigma, self.steps_per_epoch = truth_sigma, steps_per_epoch
        self.skip_below = 0  # steps before this one are off the grid (`observe` runs before every step)

    def record(self, step: int, sigma: torch.Tensor) -> None:
        if self.steps and self.steps[-1] == step:  # an evaluation and the next step's snapshot: one model
            return
        self.steps.append(step)
        self.values.append(sigma[:self.top_k].cpu().numpy())

    def observe(self, model, step: int) -> None:
        """Record the model after `step` gradient steps when the step is on the log grid (no RNG drawn)."""
        if step < self.skip_below:  # most steps: returns before the cost of a no_grad context
            return
        if on_log_grid(step):
            with torch.no_grad():
                self.record(step, torch.linalg.svdvals(model.matrix().detach().to(torch.float64)))
        self.skip_below = next_on_log_grid(step)

    def table(self):
        import pandas as pd

        k = min((len(v) for v in self.values), default=0)
        return pd.DataFrame({
            "step": np.repeat(np.asarray(self.steps, np.int64), k),
            "index": np.tile(np.arange(1, k + 1, dtype=np.int64), len(self.steps)),
            "value": np.concatenate([v[:k] for v in self.values]) if self.values else np.zeros(0),
        })

    def log_to(self, tracker, title: str = "") -> None:
        """Log `singular_values.parquet`, `singular_values.png` and `.pdf` as artifacts of the run."""
        if tracker.run_id is None or not self.steps:
            return
        from lambdaopt.figures.spectrum import singular_values_figure
        from lambdaopt.figures.style import save

        table = self.table()
        with tempfile.TemporaryDirectory() as tmp:
            parquet = os.path.join(tmp, "singular_values.parquet")
            table.to_parquet(parquet, index=False)
            png = save(singular_values_figure(table, self.truth_sigma, self.steps_per_epoch, title),
                       os.path.join(tmp, "singular_values.png"))
            for path in (parquet, png, png.with_suffix(".pdf")):
                tracker.log_file(path)


class CompletionEvaluator:
    """Called by the trainer every evaluation: train_mse on the observations, the metrics above vs the
    ground truth, and a record of the top singular values at `objective.steps_taken`."""

    log_prefix = "valid"

    def __init__(self, data: CompletionData, objective, top_k: int = 10):
        self.objective, self.top_k = objective, top_k
        self.truth = None if data.truth is None else torch.as_tensor(data.truth, device=objective.device)
        truth_sigma = None if data.truth is None else np.linalg.svd(data.truth.astype(np.float64), compute_uv=False)
        self.trajectory = SpectrumTrajectory(top_k, truth_sigma, objective.steps_per_epoch)

    @torch.no_grad()
    def relative_error(self, matrix: torch.Tensor) -> float:
        """‖W − W*‖_F² / ‖W*‖_F² — one number, not also the all-entries MSE: with ‖W*‖_F² = n·m they are equal."""
        return float((matrix - self.truth).square().sum() / self.truth.square().sum())

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        matrix = model.matrix()
        values = self.objective.values
        metrics = {"train_mse": float((self.objective.predictions(matrix) - values).square().mean())}
        if self.truth is not None:
            metrics["relative_error"] = self.relative_error(matrix)
        spectrum, sigma = spectrum_metrics(matrix, self.top_k)
        metrics.update(spectrum)
        metrics.update(norm_metrics(model))
        self.trajectory.record(self.objective.steps_taken, sigma)
        return metrics
