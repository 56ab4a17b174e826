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
        self.buffers = None

    def _buffers(self, factors: list[torch.Tensor]) -> dict:
        """Output buffers for every product, made on the first step (shapes never change): a fresh
        allocation per matmul cost about a sixth of a step at n = 100 (bench/README.md). The gradients
        handed to the optimizer are these buffers, overwritten at the next step (no optimizer here keeps a
        reference to `.grad`)."""
        if self.buffers is None:
            def empty(rows, cols):
                return torch.empty(rows, cols, dtype=factors[0].dtype, device=factors[0].device)

            widths = [f.shape[1] for f in factors]
            n = factors[0].shape[0]
            self.buffers = {
                "right": [empty(f.shape[0], widths[-1]) for f in reversed(factors[:-1])],
                "flat": torch.empty(n * widths[-1], dtype=factors[0].dtype, device=factors[0].device),
                "grads": [empty(*f.shape) for f in factors[:-1]],
                "upstream": [empty(f.shape[1], widths[-1]) for f in factors[:-1]],
            }
        return self.buffers

    def __call__(self, batch) -> torch.Tensor:
        objective, model = self.objective, self.model
        objective.observe(model)  # as FullBatchMSE.loss_and_rows: σ snapshots before the step
        with torch.no_grad():
            factors = [f.detach() for f in model.factors()]
            buffers = self._buffers(factors)
            right = [factors[-1]]  # R_{N−1}, R_{N−2}, ..., R_0 = W, into buffers kept between steps
            for factor, out in zip(reversed(factors[:-1]), buffers["right"]):
                right.append(torch.mm(factor, right[-1], out=out))
            right.reverse()
            matrix = right[0]
            residual = matrix.reshape(-1)[objective.flat_index] - batch[2]
            loss = residual.square().mean()
            upstream = buffers["flat"].zero_().index_put_((objective.flat_index,), residual * (2.0 / len(residual)),
                                                          accumulate=True).view_as(matrix)
            grads = []
            for j, factor in enumerate(factors[:-1]):
                grads.append(torch.mm(upstream, right[j + 1].T, out=buffers["grads"][j]))
                upstream = torch.mm(factor.T, upstream, out=buffers["upstream"][j])
            grads.append(upstream)
        model.set_factor_grads(grads)
        self.update()
        return loss
