"""λ's step from a hypergradient given per touched row, as a compiled look-ahead returns it.

The compiled look-ahead (tasks/bpr_lookahead.py) returns h_r = ∂L_val/∂λ_r for each user and item row
the two batches touched, {role: (row ids, h)}, rows unique per role. Two ways on from there:
- `set_row_grads`: h mapped to the shape of each raw λ parameter as `.grad` (through softplus/exp by
  autograd), for the λ optimizer's own `step()` — every λ optimizer, every parametrization;
- `FusedLambdaAdam`: for the default λ optimizer (torch's fused Adam, clamp), the gradient clip, the Adam
  step and the projection λ ≥ 0 in one pass that reads h where it is (lambda_adam_kernel.py) — the same
  bits as the first way followed by `clip_grad_norm_`, `step()` and `project_()` when the clip does not
  bind, and the same to float rounding of the norm when it does (tests/test_lambda_step.py).
"""
from __future__ import annotations

import functools
import math
from typing import Optional

import numpy as np
import torch

from lambdaopt.tasks.bpr_step import compiled_kernels


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
        h = h.to(raw.dtype)  # λ may be kept in another precision than the model
        if lam.per_entity[role]:
            out[name] = (ids, h if raw.shape[1] == h.shape[1] else h.sum(1, keepdim=True))
        else:
            part = (h.sum(0) if raw.shape[0] == h.shape[1] else h.sum().reshape(1)).unsqueeze(0)
            out[name] = (None, part if name not in out else out[name][1] + part)
    return out


class FusedLambdaAdam:
    """Clip, Adam step and projection of λ from the per-row hypergradient (module docstring). The state
    lives in `optimizer.state` in torch's own layout, so checkpoints and `optimizer.step()` carry on from it."""

    def __init__(self, lam, optimizer: torch.optim.Adam, kernel, lanes: int):
        self.lam, self.optimizer, self.kernel, self.lanes = lam, optimizer, kernel, lanes
        self.slots: dict[int, np.ndarray] = {}  # per λ table: row → its row in the gradient's rows, or −1

    @classmethod
    def build(cls, lam, optimizer) -> Optional["FusedLambdaAdam"]:
        """One where it applies — λ ≥ 0 by projection, dense λ rows, torch's fused Adam without weight decay
        or maximize on CPU float tables whose rounding the kernel reproduces — else None (torch's route)."""
        if lam.nonneg != "clamp" or lam.sparse_rows or type(optimizer) is not torch.optim.Adam:
            return None
        group = optimizer.param_groups[0]
        tensors = list(lam.raw.values())
        if (len(optimizer.param_groups) != 1 or not group["fused"] or group["weight_decay"] or group["maximize"]
                or torch.is_tensor(group["lr"]) or group["differentiable"] or group["capturable"]
                or any(t.device.type != "cpu" for t in tensors) or len({t.dtype for t in tensors}) != 1
                or tensors[0].dtype not in (torch.float32, torch.float64)):
            return None
        lanes = torch_adam_lanes(tensors[0].dtype)
        if lanes is None:
            return None
        return cls(lam, optimizer, compiled_kernels("lambda_adam_kernel", "lambdaopt.regularizers").adam_rows_step,
                   lanes)

    @staticmethod
    def clip_(parts: dict, max_norm: Optional[float]) -> torch.Tensor:
        """The gradient's norm (rows are unique, so that of the dense gradient), and `parts` scaled in place
        as `clip_grad_norm_` scales the dense gradient (`parts`: `lambda_rows`; they may share memory with
        the rows they came from)."""
        norms = [torch.linalg.vector_norm(part) for _, part in parts.values()]
        norm = torch.linalg.vector_norm(torch.stack(norms))
        if max_norm:
            coefficient = torch.clamp(max_norm / (norm + 1e-6), max=1.0)
            for _, part in parts.values():
                part.mul_(coefficient)
        return norm

    def step(self, parts: dict) -> None:
        """One λ step: Adam on every entry (zero gradient off the rows in `parts`), then λ ≥ 0."""
        for name, tensor in self.lam.raw.items():
            self.step_table(tensor, parts[name], clamp=True)

    @torch.no_grad()
    def step_table(self, tensor: torch.Tensor, part: tuple, clamp: bool) -> None:
        """The step of one λ table from its (row ids or None, gradient rows)."""
        group = self.optimizer.param_groups[0]
        beta1, beta2 = (float(b) for b in group["betas"])
        state = self.optimizer.state[tensor]
        if not state:  # torch's lazy initialization (fused: the step count a float32 tensor)
            state["step"] = torch.zeros((), dtype=torch.float32, device=tensor.device)
            for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ()):
                state[key] = torch.zeros_like(tensor, memory_format=torch.preserve_format)
        state["step"] += 1
        step = float(state["step"])
        weight = 1.0 - beta1
        from_grad = abs(weight) >= 0.5
        dtype = np.dtype(np.float32 if tensor.dtype == torch.float32 else np.float64)
        constants = np.array([group["lr"] / (1 - beta1 ** step), 0.0, beta2, 1 - beta2,
                              math.sqrt(1 - beta2 ** step), group["eps"], 0.0], dtype)
        constants[1] = dtype.type(weight) - dtype.type(1) if from_grad else weight  # as ATen rounds it
        ids, rows = part
        tables = [t.detach().view(-1, t.shape[-1]) if t.dim() == 2 else t.detach().view(1, -1)
                  for t in (tensor, state["exp_avg"], state["exp_avg_sq"],
                            state.get("max_exp_avg_sq", state["exp_avg_sq"]))]
        slot = self.slots.get(id(tensor))
        if slot is None or len(slot) != tables[0].shape[0]:
            slot = self.slots[id(tensor)] = np.full(tables[0].shape[0], -1, np.int64)
        touched = np.arange(1) if ids is None else ids.numpy()
        slot[touched] = np.arange(len(touched))
        numel = tensor.numel()
        self.kernel(*(t.numpy() for t in tables), slot, rows.numpy(), constants, numel - numel % self.lanes,
                    from_grad, bool(group["amsgrad"]), clamp)
        slot[touched] = -1


@functools.lru_cache(maxsize=None)
def torch_adam_lanes(dtype: torch.dtype) -> Optional[int]:
    """The vector width (entries of `dtype`) over which torch's fused CPU Adam runs its vectorized body, found
    by stepping a probe both ways (the body and the scalar tail round differently: lambda_adam_kernel.py) —
    or None when no width gives torch's bits (another CPU kernel: the one-pass step is not used). With torch
    2.13 on this project's AVX-512 machines it is 32 bytes: its fused Adam runs the AVX2 kernel there."""
    kernels = compiled_kernels("lambda_adam_kernel", package="lambdaopt.regularizers")
    if kernels is None:
        return None
    generator = torch.Generator().manual_seed(0)
    start = torch.rand(61, generator=generator, dtype=dtype) * 1e-3
    grads = [torch.randn(61, generator=generator, dtype=dtype) * 1e-4 for _ in range(5)]
    for vector_bytes in (32, 64, 16, 128):
        lanes = vector_bytes // start.element_size()
        reference, twin = (torch.nn.Parameter(start.clone()) for _ in range(2))
        optimizer, fused = (torch.optim.Adam([p], lr=1e-3, amsgrad=True, fused=True) for p in (reference, twin))
        step = FusedLambdaAdam(None, fused, kernels.adam_rows_step, lanes)
        for grad in grads:
            reference.grad = grad.clone()
            optimizer.step()
            step.step_table(twin, (None, grad.view(1, -1)), clamp=False)
        if torch.equal(reference, twin) and all(torch.equal(optimizer.state[reference][key], fused.state[twin][key])
                                                 for key in optimizer.state[reference]):
            return lanes
    return None
