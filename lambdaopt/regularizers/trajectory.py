"""λ trajectories: summary metrics per evaluation, parquet snapshots, and the end-of-run figures.

Snapshots are one parquet file per λ tensor per evaluated epoch, under the run's artifact folder
`lambda_trajectory/` (`user_epoch0003.parquet`, `item_...`, or `shared_...` when users and items
share λ). Each file is wide: a row per entity (`entity` = user/item id, −1 for a shared λ) and one
float column per λ entry (`l0`, `l1`, ...). One file per epoch keeps every write small and a run
that dies keeps what it wrote; `pandas.concat` of the files gives the long table.
"""
from __future__ import annotations

import os
import tempfile

import numpy as np
import pandas as pd
import torch


def lambda_summary(values: torch.Tensor) -> dict[str, float]:
    flat = values.detach().float().flatten().cpu()
    quantiles = torch.quantile(flat, torch.tensor([0.1, 0.5, 0.9])) if len(flat) > 1 else flat.repeat(3)
    return {"lambda_mean": float(flat.mean()), "lambda_median": float(quantiles[1]),
            "lambda_p10": float(quantiles[0]), "lambda_p90": float(quantiles[2]),
            "lambda_max": float(flat.max()), "lambda_frac_zero": float((flat == 0).float().mean())}


class LambdaTrajectory:
    def __init__(self, lam, dataset, snapshot_every: int = 1):
        self.lam, self.snapshot_every = lam, snapshot_every
        self.counts = {"user": np.bincount(dataset.train.users, minlength=dataset.n_users),
                       "item": np.bincount(dataset.train.items, minlength=dataset.n_items)}
        self.epochs: list[int] = []
        self.entity_means: dict[str, list[np.ndarray]] = {"user": [], "item": []}
        self.evaluations = 0

    def state_dict(self) -> dict:
        """What the end-of-run figures need from earlier evaluations (kept in checkpoints)."""
        return {"epochs": list(self.epochs), "evaluations": self.evaluations,
                "entity_means": {role: list(means) for role, means in self.entity_means.items()}}

    def load_state_dict(self, state: dict) -> None:
        self.epochs, self.evaluations = list(state["epochs"]), state["evaluations"]
        self.entity_means = {role: list(means) for role, means in state["entity_means"].items()}

    def summary(self) -> dict[str, float]:
        metrics = {}
        for role in ("user", "item"):
            values = self.lam.role_values(role)
            metrics.update({f"{role}/{k}": v for k, v in lambda_summary(values).items()})
            if self.lam.per_entity[role] and values.dim() == 2:
                # λ rows of entities with training data that are 0 in every dimension: with init 0 these are
                # the λ that never moved (no λ data) or sit at the bound in full; lambda_frac_zero counts entries
                trained = torch.as_tensor(self.counts[role] > 0, device=values.device)
                all_zero = (values.detach() == 0).all(dim=1) & trained
                metrics[f"{role}/lambda_frac_rows_zero"] = float(all_zero.sum() / trained.sum().clamp(min=1))
        return metrics

    def _entity_mean(self, role: str) -> np.ndarray:
        """Mean λ over dimensions for every entity of `role` (broadcast when λ is shared)."""
        values = self.lam.role_values(role).float().cpu()
        n = len(self.counts[role])
        per_entity = values.mean(dim=1) if self.lam.per_entity[role] else values.mean().expand(n)
        return per_entity.numpy().copy()

    def snapshot(self, epoch: int, tracker) -> None:
        self.evaluations += 1
        if (self.evaluations - 1) % self.snapshot_every:
            return
        self.epochs.append(epoch)
        for role in ("user", "item"):
            self.entity_means[role].append(self._entity_mean(role))
        if tracker.run_id is None:
            return
        with tempfile.TemporaryDirectory() as tmp:
            for name, tensor in self.lam.values().items():
                values = tensor.detach().float().cpu().numpy()
                values = values.reshape(values.shape[0], -1) if values.ndim == 2 else values.reshape(1, -1)
                frame = pd.DataFrame(values, columns=[f"l{k}" for k in range(values.shape[1])])
                frame.insert(0, "entity", np.arange(len(frame)) if tensor.dim() == 2 else -1)
                path = os.path.join(tmp, f"{name}_epoch{epoch:04d}.parquet")
                frame.to_parquet(path, index=False)
                tracker.log_file(path, "lambda_trajectory")

    def finish(self, tracker, selected_epoch: int | None = None) -> dict[str, float]:
        """Spearman ρ of mean λ vs interaction count per role at the selected epoch (the reported model's
        λ; the last snapshot when none was selected); the figures as PNG and PDF under figures/."""
        from scipy.stats import spearmanr  # here, not at import: scipy.stats alone adds ~1 s to every start

        from lambdaopt.figures import lambdas as figures

        results = {}
        at = figures.selected_snapshot(self.epochs, selected_epoch)
        for role in ("user", "item"):
            if self.lam.per_entity[role] and self.entity_means[role]:
                rho = spearmanr(self.counts[role], self.entity_means[role][at]).statistic
                results[f"{role}/lambda_count_spearman"] = float(rho) if np.isfinite(rho) else 0.0
        if tracker.run_id is None or not self.epochs:
            return results
        with tempfile.TemporaryDirectory() as tmp:
            for filename, draw in (("lambda_trajectories.png", figures.plot_trajectories),
                                   ("lambda_vs_frequency.png", figures.plot_lambda_vs_frequency)):
                path = draw(self.epochs, self.entity_means, self.counts, self.lam.per_entity,
                            os.path.join(tmp, filename), selected_epoch)
                tracker.log_file(path, "figures")
                tracker.log_file(path.with_suffix(".pdf"), "figures")
        return results
