"""The full-batch completion step of a product of factors (deep MF) with its gradient in closed form.

For W = F_0 F_1 ⋯ F_{N−1} (`model.factors()`, left to right) and the loss L = (1/K) Σ_k (W[r_k, c_k] − y_k)²:

    G := ∂L/∂W = (2/K) Σ_k (W[r_k, c_k] − y_k) e_{r_k} e_{c_k}ᵀ       (zero off the observed entries)
    ∂L/∂F_j = (F_0 ⋯ F_{j−1})ᵀ G (F_{j+1} ⋯ F_{N−1})ᵀ

computed right to left as autograd would — the products R_j = F_j ⋯ F_{N−1} on the way forward (N − 1
matmuls, R_0 = W), then D_0 = G, ∂L/∂F_j = D_j R_{j+1}ᵀ, D_{j+1} = F_jᵀ D_j (2(N − 1) matmuls) — but
without building a graph. Why: at the deep-MF papers' size (n = 100, depth 3) a step is six 100 × 100
matmuls, and autograd's bookkeeping around them cost about as much again (bench/README.md, deep MF).
The model's own optimizer takes the step from the `.grad` this sets.

On the CPU with numba (depth ≥ 2), the three products that involve G — W itself (needed only at the
observed entries), ∂L/∂F_0 = G R_1ᵀ and D_1 = F_0ᵀ G — are one pass over the K observed entries
(completion_kernel.py), and the rest runs on transposes so that no product needs a copy:

    R_jᵀ = R_{j+1}ᵀ F_jᵀ,   ∂L/∂F_j = (D_jᵀ)ᵀ R_{j+1}ᵀ,   D_{j+1}ᵀ = D_jᵀ F_j,
    ∂L/∂(item table) = D_{N−1}ᵀ

(the item table is W_1ᵀ, so its gradient is D_{N−1}ᵀ as it comes): 3(N − 2) dense products where the
tensor path takes 3(N − 1) — three instead of six at depth 3, none at depth 2.
"""
from __future__ import annotations

import numpy as np
import torch

from lambdaopt.optimizers import GroupRMSprop
from lambdaopt.kernels import compiled_kernels


class ClosedFormProductStep:
    """One training step of `model` (`product_of_factors`) on `objective` (FullBatchMSE of entries, no
    penalty on rows): loss as a 0-dim tensor, parameters updated by `optimizer`."""

    def __init__(self, model, objective, optimizer: torch.optim.Optimizer):
        self.model, self.objective, self.optimizer = model, objective, optimizer
        # GroupRMSprop (the deep-MF papers' optimizer) updates without torch's step wrapper; others step
        self.update = optimizer.apply_gradients if isinstance(optimizer, GroupRMSprop) else optimizer.step
        self.buffers = self.sparse_buffers = self.tables = None  # of the tensor path, of the compiled one
        # the compiled path holds the parameters (never replaced during a run; the optimizer holds them too)
        self.parameters = model.factor_parameters()
        table, kernels = self.parameters[0], compiled_kernels("completion_kernel")
        self.kernel = (kernels.observed_residual_grads if kernels is not None and len(self.parameters) > 1
                       and table.device.type == "cpu" and table.dtype in (torch.float32, torch.float64) else None)
        # per optimizer group, the positions of its parameters in self.parameters — when GroupRMSprop holds
        # exactly the factor tables (so `apply_to` can take the step's own lists); else None
        position = {id(p): i for i, p in enumerate(self.parameters)}
        groups = [[position.get(id(p)) for p in group["params"]] for group in optimizer.param_groups]
        held = [i for group in groups for i in group]
        exact = None not in held and sorted(held) == list(range(len(self.parameters)))
        self.groups = groups if isinstance(optimizer, GroupRMSprop) and exact else None

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
        if self.kernel is not None:
            if self.tables is None or any(t.data_ptr() != p.data_ptr() for t, p in zip(self.tables, self.parameters)):
                self.tables = [p.detach() for p in self.parameters]  # views: the optimizer updates in place
            loss, grads = self._sparse_grads(self.tables, batch)
            for param, grad in zip(self.parameters, grads):
                if param.grad is not grad:  # after the first step they are the same buffers
                    param.grad = grad
            if self.groups is not None:  # GroupRMSprop on exactly these parameters: straight to its update
                self.optimizer.apply_to([[self.tables[i] for i in group] for group in self.groups],
                                        [[grads[i] for i in group] for group in self.groups])
            else:
                self.update()
            return loss
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

    def _sparse_grads(self, tables: list[torch.Tensor], batch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(loss, the gradient of each of `tables` — `factors()` but the last as the item table stores it,
        W_1ᵀ) by the transposed recursion of the module docstring, into buffers kept between steps."""
        *factors, item = tables
        if self.sparse_buffers is None:
            m, dtype = item.shape[0], item.dtype
            self.sparse_buffers = {"right": [torch.empty(m, f.shape[0], dtype=dtype) for f in reversed(factors[1:])],
                            "first": torch.empty_like(factors[0]),
                            "upstream": [torch.empty(m, f.shape[1], dtype=dtype) for f in factors],  # D_jᵀ
                            "grads": [torch.empty_like(f) for f in factors[1:]],
                            "scale": np.array(2.0 / len(batch[2]), dtype=item.numpy().dtype)[()]}
            self.sparse_buffers["arrays"] = [t.numpy() for t in (self.sparse_buffers["first"],
                                                                 self.sparse_buffers["upstream"][0])]
        buffers = self.sparse_buffers
        if buffers.get("batch") is not batch[0]:  # the entries by row: each row's updates adjacent, in cache
            order = np.lexsort((batch[1].numpy(), batch[0].numpy()))
            buffers["entries"] = [np.ascontiguousarray(t.numpy()[order]) for t in batch]
            buffers["batch"] = batch[0]
        right = [item]  # R_{N−1}ᵀ = the item table, then R_jᵀ = R_{j+1}ᵀ F_jᵀ
        for factor, out in zip(reversed(factors[1:]), buffers["right"]):
            right.append(torch.mm(right[-1], factor.T, out=out))
        right.reverse()  # right[j − 1] = R_jᵀ
        upstream = buffers["upstream"][0]  # D_1ᵀ
        loss = self.kernel(factors[0].numpy(), right[0].numpy(), *buffers["entries"], buffers["scale"],
                           *buffers["arrays"])
        grads = [buffers["first"]]
        for j, factor in enumerate(factors[1:], start=1):
            grads.append(torch.mm(upstream.T, right[j], out=buffers["grads"][j - 1]))  # D_j R_{j+1}ᵀ
            upstream = torch.mm(upstream, factor, out=buffers["upstream"][j])  # D_{j+1}ᵀ = D_jᵀ F_j
        grads.append(upstream)
        return torch.scalar_tensor(loss, dtype=item.dtype), grads
