"""Reconstruction and spectrum metrics of an end-to-end matrix W (n × m), and their trajectory.

With σ_1 ≥ σ_2 ≥ ... the singular values of W and W* the ground truth:

    test_mse        = (1/(n·m)) ‖W − W*‖_F²         (all entries, observed or not)
    relative_error  = ‖W − W*‖_F² / ‖W*‖_F²         (= test_mse when ‖W*‖_F² = n·m, as generated)
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
METRICS = ("train_mse", "test_mse", "relative_error", "nuclear_norm", "effective_rank")


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


class SpectrumTrajectory:
    """The top singular values at every evaluation: a long table (step, index, value), written at the
    end as a parquet artifact and a log-scale PNG figure."""

    def __init__(self, top_k: int):
        self.top_k, self.steps, self.values = top_k, [], []

    def record(self, step: int, sigma: torch.Tensor) -> None:
        self.steps.append(step)
        self.values.append(sigma[:self.top_k].cpu().numpy())

    def table(self):
        import pandas as pd

        k = min((len(v) for v in self.values), default=0)
        return pd.DataFrame({
            "step": np.repeat(np.asarray(self.steps, np.int64), k),
            "index": np.tile(np.arange(1, k + 1, dtype=np.int64), len(self.steps)),
            "value": np.concatenate([v[:k] for v in self.values]) if self.values else np.zeros(0),
        })

    def log_to(self, tracker, title: str = "") -> None:
        """Log `singular_values.parquet` and `singular_values.png` as artifacts of the run."""
        if tracker.run_id is None or not self.steps:
            return
        import matplotlib

        matplotlib.use("Agg")  # no display on servers
        import matplotlib.pyplot as plt

        table = self.table()
        with tempfile.TemporaryDirectory() as tmp:
            parquet = os.path.join(tmp, "singular_values.parquet")
            table.to_parquet(parquet, index=False)
            figure, axes = plt.subplots(figsize=(6, 4))
            for index, part in table.groupby("index"):
                axes.plot(part["step"], part["value"], label=f"σ{index}" if index <= 5 else None)
            axes.set(xlabel="step", ylabel="singular value", yscale="log", title=title)
            axes.legend(loc="best", fontsize=8)
            png = os.path.join(tmp, "singular_values.png")
            figure.savefig(png, dpi=120, bbox_inches="tight")
            plt.close(figure)
            tracker.log_file(parquet)
            tracker.log_file(png)


class CompletionEvaluator:
    """Called by the trainer every evaluation: train_mse on the observations, the metrics above vs the
    ground truth, and a record of the top singular values at `objective.steps_taken`."""

    log_prefix = "valid"

    def __init__(self, data: CompletionData, objective, top_k: int = 10):
        self.objective, self.top_k = objective, top_k
        self.truth = None if data.truth is None else torch.as_tensor(data.truth, device=objective.device)
        self.trajectory = SpectrumTrajectory(top_k)

    @torch.no_grad()
    def __call__(self, model) -> dict[str, float]:
        matrix = model.matrix()
        values = self.objective.values
        metrics = {"train_mse": float((self.objective.predictions(matrix) - values).square().mean())}
        if self.truth is not None:
            error = (matrix - self.truth).square().sum()
            metrics["test_mse"] = float(error) / self.truth.numel()
            metrics["relative_error"] = float(error / self.truth.square().sum())
        spectrum, sigma = spectrum_metrics(matrix, self.top_k)
        metrics.update(spectrum)
        metrics.update(norm_metrics(model))
        self.trajectory.record(self.objective.steps_taken, sigma)
        return metrics
