"""λ's step from a hypergradient given per touched row, as a compiled look-ahead returns it.

The compiled look-ahead (tasks/bpr_lookahead.py) returns h_r = ∂L_val/∂λ_r for each user and item row
the two batches touched, {role: (row ids, h)}, rows unique per role. Two ways on from there:
- `set_row_grads`: h mapped to the shape of each raw λ parameter as `.grad` (through softplus/exp by
  autograd), for the λ optimizer's own `step()` — every λ optimizer, every parametrization;
- `FusedLambdaAdam`: for the default λ optimizer (torch's fused Adam, clamp), the gradient clip, the Adam
  step and the projection λ ≥ 0 in one pass that reads h where it is (compiled_adam.py) — the same
  bits as the first way followed by `clip_grad_norm_`, `step()` and `project_()` when the clip does not
  bind, and the same to float rounding of the norm when it does (tests/test_compiled_adam.py).
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np
import torch

from lambdaopt.compiled_adam import CompiledAdam, CompiledSparseAdam


def set_row_grads(lam, rows) -> None:
    """`.grad` of λ's raw parameters from the per-row hypergradient `rows`."""
    grads = clamp_grads(lam, rows) if lam.nonneg == "clamp" and not lam.sparse_rows else chain_grads(lam, rows)
    for name, tensor in lam.raw.items():
        tensor.grad = grads[name]


def chain_grads(lam, rows) -> dict:
    """{raw λ name: ∂/∂raw of Σ_roles Σ_rows λ_row ⊙ h_row}: autograd maps the per-row h to λ's shape and
    through its parametrization (softplus, exp), as `one_step_hypergrad` does."""
    with torch.enable_grad():
        values = lam.values()
        chain = sum((lam.for_rows(role, ids, values) * h).sum() for role, (ids, h) in rows.items())
        raw = list(lam.raw.values())
        grads = torch.autograd.grad(chain, raw, allow_unused=True)
    # row-sparse λ (lam.sparse_rows): no gradient = no update, not a dense zero its optimizer would reject
    return {name: g if g is not None or lam.sparse_rows else torch.zeros_like(tensor)
            for (name, tensor), g in zip(lam.raw.items(), grads)}


def clamp_grads(lam, rows) -> dict:
    """`chain_grads` where λ is its raw parameter (nonneg=clamp), without a graph: each row's part added into
    its entity's λ row (`lambda_rows`)."""
    grads = {name: torch.zeros_like(tensor) for name, tensor in lam.raw.items()}
    for name, (ids, part) in lambda_rows(lam, rows).items():
        if ids is None:
            grads[name] += part.view(grads[name].shape)
        else:
            grads[name].index_add_(0, ids, part)
    return grads


def lambda_rows(lam, rows) -> dict:
    """{raw λ name: (entity ids, ∂L/∂λ of those rows) for a per-entity λ; (None, the whole gradient as one
    row) for a λ shared by all rows}: h summed over d for one λ per entity, over rows for a shared λ (a
    λ shared by users and items gets the user part, then the item part added)."""
    out = {}
    for role, (ids, h) in rows.items():
        name = lam.param_of_role[role]
        raw = lam.raw[name]
        if h.dtype != raw.dtype:  # λ may be kept in another precision than the model (a no-op .to is a torch op too)
            h = h.to(raw.dtype)
        if lam.per_entity[role]:
            out[name] = (ids, h if raw.shape[1] == h.shape[1] else h.sum(1, keepdim=True))
        else:
            part = (h.sum(0) if raw.shape[0] == h.shape[1] else h.sum().reshape(1)).unsqueeze(0)
            out[name] = (None, part if name not in out else out[name][1] + part)
    return out


class FusedLambdaAdam:
    """Clip, Adam step and projection of λ from the per-row hypergradient (module docstring), through
    `CompiledAdam`: the state is the λ optimizer's own, in torch's layout."""

    def __init__(self, lam, adam: CompiledAdam):
        self.lam, self.adam = lam, adam
        self.first_row = np.zeros(1, np.int64)  # a shared λ: its gradient is one row

    @classmethod
    def build(cls, lam, optimizer) -> Optional["FusedLambdaAdam"]:
        """One where it applies — λ ≥ 0 by projection, dense λ rows, and `CompiledAdam.build`'s conditions on
        the λ optimizer (the default: fused Adam, amsgrad) — else None (torch's route)."""
        if lam.nonneg != "clamp" or lam.sparse_rows:
            return None
        adam = CompiledAdam.build(optimizer, list(lam.raw.values()))
        return None if adam is None else cls(lam, adam)

    @staticmethod
    def clip_(parts: dict, max_norm: Optional[float]) -> float:
        """The gradient's norm (rows are unique, so that of the dense gradient; summed by BLAS dot products,
        so its last bits may differ from torch's), and `parts` scaled in place as `clip_grad_norm_` scales the
        dense gradient, by max_norm / (norm + 1e-6) in the parts' dtype, when that is below 1 (`parts`:
        `lambda_rows`; they may share memory with the rows they came from)."""
        arrays = [part.numpy().reshape(-1) for _, part in parts.values()]
        norm = math.sqrt(sum(float(np.dot(a, a)) for a in arrays))
        if max_norm and math.isfinite(norm):
            dtype = arrays[0].dtype.type
            coefficient = dtype(max_norm) / (dtype(norm) + dtype(1e-6))
            if coefficient < 1:  # else clip_grad_norm_'s ×1 changes no bit
                for a in arrays:
                    a *= coefficient
        return norm

    def step(self, parts: dict) -> None:
        """One λ step: Adam on every entry (zero gradient off the rows in `parts`), then λ ≥ 0."""
        for name, tensor in self.lam.raw.items():
            ids, rows = parts[name]
            self.adam.step_table(tensor, self.first_row if ids is None else ids.numpy(), rows.numpy(), clamp=True)


class FusedLambdaSparseAdam:
    """`regularizer.lambda_optimizer=sparse_adam` from the per-row hypergradient: the clip (`FusedLambdaAdam.clip_`),
    SparseAdam on the λ rows the look-ahead touched and λ ≥ 0 on them, in one compiled pass per λ table
    (`CompiledSparseAdam`: SparseAdam's arithmetic, its state SparseAdam's own) — instead of a row-sparse `.grad`
    through autograd, its coalescing, `SparseAdam.step()` and a clamp of every λ entry. λ rows the batches did
    not reach are left as they are, as SparseAdam leaves them."""

    def __init__(self, lam, sparse_adam: CompiledSparseAdam):
        self.lam, self.sparse_adam = lam, sparse_adam
        # per λ table: a gradient buffer of its shape and a flag per row, left cleared by every step
        self.buffers = {name: (np.zeros(tuple(t.shape), t.detach().numpy().dtype), np.zeros(len(t), np.bool_))
                        for name, t in lam.raw.items()}

    @classmethod
    def build(cls, lam, optimizer) -> Optional["FusedLambdaSparseAdam"]:
        """One where it applies — λ ≥ 0 by projection, row-sparse λ (per user and per item) and
        `CompiledSparseAdam.build`'s conditions on the λ optimizer — else None (torch's route)."""
        if lam.nonneg != "clamp" or not lam.sparse_rows or not all(lam.per_entity.values()):
            return None
        adam = CompiledSparseAdam.build(optimizer, list(lam.raw.values()))
        return None if adam is None else cls(lam, adam)

    clip_ = staticmethod(FusedLambdaAdam.clip_)

    def step(self, parts: dict) -> None:
        """One λ step on the rows in `parts` (`lambda_rows`: unique ids per λ table)."""
        for name, tensor in self.lam.raw.items():
            ids, rows = parts[name]
            grad, touched = self.buffers[name]
            ids = ids.numpy()
            grad[ids] = rows.numpy()
            touched[ids] = True
            self.sparse_adam.step_rows(tensor, grad, touched, ids, clamp=True)
