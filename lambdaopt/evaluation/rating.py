"""Rating accuracy on held-out ratings: RMSE = sqrt(mean (r̂ − r)²), MAE = mean |r̂ − r|, MSE."""
from __future__ import annotations

from typing import Optional

import torch

from lambdaopt.evaluation.completion import SpectrumTrajectory, norm_metrics, spectrum_metrics

METRICS = ("rmse", "mae", "mse")


class RatingEvaluator:
    """RMSE = sqrt(mean (r̂ − r)²), MAE = mean |r̂ − r|, MSE over the held-out ratings; with
    `spectrum_top_k` > 0 also the spectrum metrics of the model's full matrix (see
    evaluation/completion.py) and their trajectory, indexed by `objective.steps_taken`."""

    log_prefix = "valid"

    def __init__(self, heldout, objective, spectrum_top_k: int = 0, chunk: int = 65536,
                 steps_per_epoch: int | None = None):
        self.objective, self.chunk, self.spectrum_top_k = objective, chunk, spectrum_top_k
        self.heldout = objective._to_device(heldout)
        self.trajectory: Optional[SpectrumTrajectory] = (SpectrumTrajectory(spectrum_top_k, None, steps_per_epoch)
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
            spectrum, sigma = spectrum_metrics(model.matrix(), self.spectrum_top_k)
            metrics.update(spectrum)
            metrics.update(norm_metrics(model))
            self.trajectory.record(self.objective.steps_taken, sigma)
        return metrics
