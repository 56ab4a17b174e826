"""The full-batch completion step of a product of factors (deep MF) with its gradient in closed form.

For W = F_0 F_1 ⋯ F_{N−1} (`model.factors()`, left to right) and the loss L = (1/K) Σ_k (W[r_k, c_k] − y_k)²:

    G := ∂L/∂W = (2/K) Σ_k (W[r_k, c_k] − y_k) e_{r_k} e_{c_k}ᵀ       (zero off the observed entries)
    ∂L/∂F_j = (F_0 ⋯ F_{j−1})ᵀ G (F_{j+1} ⋯ F_{N−1})ᵀ

computed right to left as autograd would — the products R_j = F_j ⋯ F_{N−1} on the way forward (N − 1
matmuls, R_0 = W), then D_0 = G, ∂L/∂F_j = D_j R_{j+1}ᵀ, D_{j+1} = F_jᵀ D_j (2(N − 1) matmuls) — but
without building a graph. Why: at the deep-MF papers' size (n = 100, depth 3) a step is six 100 × 100
matmuls, and autograd's bookkeeping around them cost about as much again (bench/README.md, deep MF). The model's own optimizer takes the step from the `.grad` this sets.
"""
from __future__ import annotations

import torch

from lambdaopt.optimizers import GroupRMSprop


class ClosedFormProductStep:
    """One training step of `model` (`product_of_factors`) on `objective` (FullBatchMSE of entries, no
    penalty on rows): loss as a 0-dim tensor, parameters updated by `optimizer`."""

    def __init__(self, model, objective, optimizer: torch.optim.Optimizer):
        self.model, self.objective, self.optimizer = model, objective, optimizer
        # GroupRMSprop (the deep-MF papers' optimizer) updates without torch's step wrapper; others step
        self.update = optimizer.apply_gradients if isinstance(optimizer, GroupRMSprop) else optimizer.step

    def __call__(self, batch) -> torch.Tensor:
        objective, model = self.objective, self.model
        if objective.trajectory is not None:  # as FullBatchMSE.loss_and_rows: σ snapshots before the step
            objective.trajectory.observe(model, objective.steps_taken - 1)
        with torch.no_grad():
            factors = [f.detach() for f in model.factors()]
            right = [factors[-1]]  # R_{N−1}, R_{N−2}, ..., R_0 = W
            for factor in reversed(factors[:-1]):
                right.append(factor @ right[-1])
            right.reverse()
            matrix = right[0]
            residual = matrix.reshape(-1)[objective.flat_index] - batch[2]
            loss = residual.square().mean()
            flat = torch.zeros(matrix.numel(), dtype=matrix.dtype, device=matrix.device)
            upstream = flat.index_put_((objective.flat_index,), residual * (2.0 / len(residual)),
                                       accumulate=True).view_as(matrix)
            grads = []
            for j, factor in enumerate(factors[:-1]):
                grads.append(upstream @ right[j + 1].T)
                upstream = factor.T @ upstream
            grads.append(upstream)
        model.set_factor_grads(grads)
        self.update()
        return loss
