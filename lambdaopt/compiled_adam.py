"""torch's fused Adam, stepped from row gradients in one compiled pass per table (adam_kernel.py): λ's
default optimizer (regularizers/lambda_step.py) and the model's under `optimizer=adam` (tasks/bpr_step.py).

`CompiledAdam.build(optimizer, tensors)` gives one where the pass reproduces `optimizer.step()` bit for bit —
a `torch.optim.Adam(fused=True)` of one group holding exactly `tensors`, without weight decay or maximize,
on CPU float tables, numba importable, and torch's rounding recognized (`torch_adam_lanes`) — else None, and
the caller keeps torch's route. The state lives in `optimizer.state` in torch's own layout (made as torch
makes it), so checkpoints, `state_dict()` and a later `optimizer.step()` carry on from it.
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Optional

import numpy as np
import torch

from lambdaopt.kernels import KeptViews, compiled_kernels


class CompiledAdam:
    """`step_table(tensor, ids, grad_rows)`: torch's Adam step of `tensor` with gradient grad_rows[t] on row
    ids[t] and zero on every other row."""

    def __init__(self, optimizer: torch.optim.Adam, kernel):
        self.optimizer, self.kernel = optimizer, kernel
        self.kept = KeptViews()  # per tensor: the kernel's views of it and its state, a slot map

    @classmethod
    def build(cls, optimizer, tensors: list[torch.Tensor]) -> Optional["CompiledAdam"]:
        if type(optimizer) is not torch.optim.Adam or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        held = {id(p) for p in group["params"]}
        if (not group["fused"] or group["weight_decay"] or group["maximize"] or torch.is_tensor(group["lr"])
                or group["differentiable"] or group["capturable"] or held != {id(t) for t in tensors}
                or len(held) != len(tensors) or any(t.device.type != "cpu" for t in tensors)
                or len({t.dtype for t in tensors}) != 1 or tensors[0].dtype not in (torch.float32, torch.float64)):
            return None
        if any(torch_adam_lanes(dtype) is None for dtype in (torch.float32, torch.float64)):
            return None  # (both: a table's dtype may change after this, e.g. `.double()` before training)
        return cls(optimizer, compiled_kernels("adam_kernel", "lambdaopt").adam_rows_step)

    def _views(self, tensor: torch.Tensor, state: dict) -> tuple:
        """(the arrays the kernel steps — `tensor` and its state as rows × width: 2-D as they are, 1-D as one
        row —, a slot map, the step count as a 1-element array), kept while the tensor's storage and its
        state tensors are the same (`KeptViews`: a checkpoint load replaces the state; `.data =` or a dtype
        change, the storage)."""
        def make():
            tables = [t.detach().view(-1, t.shape[-1]) if t.dim() == 2 else t.detach().view(1, -1)
                      for t in (tensor, state["exp_avg"], state["exp_avg_sq"],
                                state.get("max_exp_avg_sq", state["exp_avg_sq"]))]
            arrays = [t.numpy() for t in tables]
            return arrays, np.full(len(arrays[0]), -1, np.int64), state["step"].detach().numpy().reshape(1)

        return self.kept(str(id(tensor)), (tensor, state["exp_avg"], state["exp_avg_sq"],
                                           state.get("max_exp_avg_sq"), state["step"]), make)

    def step_table(self, tensor: torch.Tensor, ids: np.ndarray, grad_rows: np.ndarray, clamp: bool = False,
                   lanes: Optional[int] = None) -> None:
        """One step of `tensor` from `grad_rows` (len(ids) × width) on rows `ids` (unique, of the rows × width
        view); then max(·, 0) when `clamp`. `lanes`: torch's vector width, found once per dtype unless given
        (the probe that finds it)."""
        arrays, settings = self.prepare(tensor, lanes)
        self.kernel(*arrays, ids, grad_rows, *settings, clamp)

    def prepare(self, tensor: torch.Tensor, lanes: Optional[int] = None) -> tuple[list, tuple]:
        """Count this step of `tensor` and give the arguments around a kernel's own (its gradient) in
        adam_kernel.py's calling convention: (the views of `tensor`, exp_avg, exp_avg_sq, max_exp_avg_sq),
        then (slot map, constants, vector end, from_grad, amsgrad)."""
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        state = self.optimizer.state[tensor]
        if not state:  # torch's lazy initialization (fused: the step count a float32 tensor)
            state["step"] = torch.zeros((), dtype=torch.float32, device=tensor.device)
            for key in ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ()):
                state[key] = torch.zeros_like(tensor, memory_format=torch.preserve_format)
        arrays, slot, count = self._views(tensor, state)
        # the step count through its NumPy view: the same float32 add as torch's `+= 1`, without a torch op,
        # whose dispatch costs ~20 µs when a table-sized pass has just evicted its code from the caches
        # (~2 µs warm; bench/README.md, λOpt epoch time)
        count[0] += 1
        step = float(count[0])
        weight = 1.0 - beta1
        from_grad = abs(weight) >= 0.5
        dtype = arrays[0].dtype
        constants = np.array([group["lr"] / (1 - beta1 ** step), 0.0, beta2, 1 - beta2,
                              math.sqrt(1 - beta2 ** step), group["eps"], 0.0], dtype)
        constants[1] = dtype.type(weight) - dtype.type(1) if from_grad else weight  # as ATen rounds it
        numel, lanes = tensor.numel(), lanes or torch_adam_lanes(tensor.dtype)
        return arrays, (slot, constants, numel - numel % lanes, from_grad, bool(group["amsgrad"]))


class CompiledSparseAdam:
    """`step_rows(tensor, grad, touched, ids)`: torch.optim.SparseAdam's step of `tensor` on its rows flagged
    in `touched` (listed, with repeats, in `ids`) with their gradient rows in `grad` — SparseAdam's arithmetic
    (adam_kernel.sparse_adam_rows: its moments bit for bit, the parameters up to 1 ulp of √), its state made
    and kept as SparseAdam keeps it (`step` an int, dense moments), so checkpoints and a later `step()` carry on.

    `build(optimizer, tensors)` gives one where that holds — a SparseAdam of one group holding exactly
    `tensors`, 2-D CPU float tables, no `maximize`, a float lr, numba importable — else None."""

    def __init__(self, optimizer: torch.optim.SparseAdam, kernel):
        self.optimizer, self.kernel = optimizer, kernel
        self.kept = KeptViews()  # each table's and its moments' NumPy views

    @classmethod
    def build(cls, optimizer, tensors: list[torch.Tensor]) -> Optional["CompiledSparseAdam"]:
        if type(optimizer) is not torch.optim.SparseAdam or len(optimizer.param_groups) != 1:
            return None
        group = optimizer.param_groups[0]
        if (group.get("maximize", False) or torch.is_tensor(group["lr"])
                or {id(p) for p in group["params"]} != {id(t) for t in tensors} or len(group["params"]) != len(tensors)
                or any(t.device.type != "cpu" or t.dim() != 2 or t.dtype not in (torch.float32, torch.float64)
                       for t in tensors)):
            return None
        kernels = compiled_kernels("adam_kernel", "lambdaopt")
        return None if kernels is None else cls(optimizer, kernels.sparse_adam_rows)

    def step_rows(self, tensor: torch.Tensor, grad: np.ndarray, touched: np.ndarray, ids: np.ndarray,
                  clamp: bool = False) -> None:
        """One step of the rows `touched` flags (then max(·, 0) on them when `clamp`); `grad` and `touched` are
        left cleared."""
        group = self.optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        state = self.optimizer.state[tensor]
        if not state:  # as SparseAdam.step initializes it
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(tensor, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(tensor, memory_format=torch.preserve_format)
        state["step"] += 1
        step = state["step"]
        # torch multiplies float tensors by Python scalars rounded to the tensors' dtype
        step_size = group["lr"] * math.sqrt(1 - beta2 ** step) / (1 - beta1 ** step)
        constants = np.array([1 - beta1, 1 - beta2, group["eps"], -step_size], grad.dtype)
        tables = (tensor, state["exp_avg"], state["exp_avg_sq"])
        arrays = self.kept(str(id(tensor)), tables, lambda: [t.detach().numpy() for t in tables])
        self.kernel(*arrays, grad, touched, ids, constants, clamp)


torch_adam_step = inspect.unwrap(torch.optim.Adam.step)


@functools.lru_cache(maxsize=None)
def torch_adam_lanes(dtype: torch.dtype) -> Optional[int]:
    """The vector width (entries of `dtype`) over which torch's fused CPU Adam runs its vectorized body, found
    by stepping a probe both ways (the body and the scalar tail round differently: adam_kernel.py) — or None
    when no width gives torch's bits (another CPU kernel: the compiled step is not used). With torch 2.13 on
    this project's AVX-512 machines it is 32 bytes: its fused Adam runs the AVX2 kernel there."""
    kernels = compiled_kernels("adam_kernel", "lambdaopt")
    if kernels is None:
        return None
    generator = torch.Generator().manual_seed(0)
    start = torch.rand(61, generator=generator, dtype=dtype) * 1e-3
    grads = [torch.randn(1, 61, generator=generator, dtype=dtype) * 1e-4 for _ in range(5)]
    first_row = np.zeros(1, np.int64)
    for vector_bytes in (32, 64, 16, 128):
        lanes = vector_bytes // start.element_size()
        reference, twin = (torch.nn.Parameter(start.clone()) for _ in range(2))
        optimizer, compiled = (torch.optim.Adam([p], lr=1e-3, amsgrad=True, fused=True) for p in (reference, twin))
        step = CompiledAdam(compiled, kernels.adam_rows_step)
        for grad in grads:
            reference.grad = grad.view(-1).clone()
            with torch.no_grad():  # Adam.step itself without its wrapper, which imports torch._dynamo (startup.py)
                torch_adam_step(optimizer)
            step.step_table(twin, first_row, grad.numpy(), lanes=lanes)
        if torch.equal(reference, twin) and all(torch.equal(optimizer.state[reference][key], compiled.state[twin][key])
                                                 for key in optimizer.state[reference]):
            return lanes
    return None
