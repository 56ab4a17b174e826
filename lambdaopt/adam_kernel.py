"""torch's fused Adam step of one table as a compiled pass that reads the gradient where it is (numba, CPU).

Where a gradient is non-zero only on some rows — the λ rows a one-step look-ahead touched
(regularizers/lambda_step.py), the rows of a BPR batch (tasks/bpr_kernel.py `adam_step`) — torch's route to
an Adam step is a dense `.grad` (for λ: a zero table per λ parameter with the rows scattered in, then
`clip_grad_norm_`'s norm and scaling passes, then `clamp_`) and `optimizer.step()` with its wrapper. Here
each entry is read and written once, the gradient taken from row t of `grad_rows` for row ids[t] and zero
elsewhere: still the dense Adam step (moments decay and parameters move everywhere, as the paper's λ
optimizer does), with the projection λ ≥ 0 folded in for λ (compiled_adam.py drives it).

The arithmetic is that of torch's fused CPU Adam kernel (ATen's FusedAdamKernel.cpp), operation for
operation and with its fused multiply-adds where it has them, so the result is the same bits
(tests/test_compiled_adam.py compares every state tensor with `torch.equal`):

    m ← lerp(m, g, w) = fma(w, g − m, m)  for w = 1 − β₁ < ½,  else fma(w − 1, g − m, g)
    v ← fma(c·g, g, v·β₂) over the vectorized body,  fma(v, β₂, c·g·g) over the scalar tail  (c = 1 − β₂)
    v̂ ← max(v̂, v) with amsgrad;   θ ← θ − (s·m) / (√v̂ / √(1 − β₂ᵗ) + ε),   s = lr / (1 − β₁ᵗ)

The body/tail split is that of the flattened tensor (`vector_end`: the last multiple of torch's vector
width, which `compiled_adam.torch_adam_lanes` finds by a probe); the fma is LLVM's intrinsic and nothing else
may be contracted (no fastmath), so the compiler cannot pick another rounding. Found by comparing with
torch 2.13 bit for bit; another torch or CPU kernel that rounds otherwise fails the probe, and the step
then goes through torch's own route.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic

# constants (one array in the tables' dtype): step size s, the lerp coefficient (w, or w − 1 when lerping
# from the gradient), β₂, 1 − β₂, √(1 − β₂ᵗ), ε, 0
STEP_SIZE, LERP_COEFFICIENT, BETA2, ONE_MINUS_BETA2, CORRECTION2_SQRT, EPS, ZERO = range(7)


@intrinsic
def fma(typingctx, a, b, c):
    """a·b + c rounded once (llvm.fma)."""
    if not (isinstance(a, types.Float) and a == b == c):
        return None

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return a(a, b, c), codegen


@numba.njit(inline="always")
def adam_constants(c):  # pragma: no cover  (compiled; inlined)
    """The constants array as the tuple `adam_entry` takes: values, so the loop holds them in registers."""
    return c[STEP_SIZE], c[LERP_COEFFICIENT], c[BETA2], c[ONE_MINUS_BETA2], c[CORRECTION2_SQRT], c[EPS], c[ZERO]


@numba.njit(inline="always", error_model="numpy")
def adam_entry(value, m0, v0, x0, g, constants, tail, from_grad, amsgrad, clamp):  # pragma: no cover  (inlined)
    """(θ, m, v, v̂) of one entry after its step with gradient g (the module docstring's arithmetic) from
    θ = value, m0, v0 and v̂ = x0 (read only with amsgrad); `constants`: `adam_constants`; `tail`: the entry takes
    the scalar tail's rounding. Values in and out, not indices, and inlined into each kernel's loop (numba IR, so
    under the kernel's flags: no fastmath): written with indices, numba's negative-index checks kept the loop
    from vectorizing."""
    step_size, coefficient, beta2, grad_weight, correction2_sqrt, eps, zero = constants
    m = fma(coefficient, g - m0, g if from_grad else m0)
    scaled = grad_weight * g
    body, scalar_tail = fma(scaled, g, v0 * beta2), fma(v0, beta2, scaled * g)
    v = scalar_tail if tail else body
    second = max(x0, v) if amsgrad else v
    value = value - step_size * m / (math.sqrt(second) / correction2_sqrt + eps)
    return max(value, zero) if clamp else value, m, v, second


@numba.njit(cache=True, nogil=True, error_model="numpy")
def adam_rows_step(param, exp_avg, exp_avg_sq, max_exp_avg_sq, ids, grad_rows, slot, c, vector_end, from_grad,
                   amsgrad, clamp):  # pragma: no cover  (compiled; its result is tested)
    """One Adam step of every entry of `param` (2-D, rows × width, as are the state tables; contiguous) with
    the gradient grad_rows[t] on row ids[t] (ids unique) and zero on every other row; then λ ≥ 0 when
    `clamp`. `slot`: one int per row, −1 everywhere on entry and on return (scratch: row → t).
    `max_exp_avg_sq` is read and written only when `amsgrad`; `from_grad`: w ≥ ½; entries from flat index
    `vector_end` on take the scalar tail's rounding (a select, so that the loop vectorizes)."""
    (rows, width), constants = param.shape, adam_constants(c)
    zero = constants[-1]
    for t in range(ids.shape[0]):
        slot[ids[t]] = t
    for r in range(rows):
        s = slot[r]
        for k in range(width):
            g = grad_rows[s, k] if s >= 0 else zero
            param[r, k], exp_avg[r, k], exp_avg_sq[r, k], second = adam_entry(
                param[r, k], exp_avg[r, k], exp_avg_sq[r, k], max_exp_avg_sq[r, k] if amsgrad else zero, g, constants,
                r * width + k >= vector_end, from_grad, amsgrad, clamp)
            if amsgrad:
                max_exp_avg_sq[r, k] = second
    for t in range(ids.shape[0]):
        slot[ids[t]] = -1


@numba.njit(cache=True, nogil=True, error_model="numpy")
def adam_touched_step(param, exp_avg, exp_avg_sq, max_exp_avg_sq, grad, touched, slot, c, vector_end, from_grad,
                      amsgrad):  # pragma: no cover  (compiled; its result is tested)
    """`adam_rows_step` from a gradient table `grad` (param's shape) that is non-zero only on the rows `touched`
    flags: those rows are read, then zeroed with their flags in the same pass (the buffers left cleared for the
    next step); every other row steps with a zero gradient without reading its gradient row. `slot`: unused
    (the calling convention's)."""
    (rows, width), constants = param.shape, adam_constants(c)
    zero = constants[-1]
    for r in range(rows):
        hit = touched[r]
        for k in range(width):
            g = grad[r, k] if hit else zero
            param[r, k], exp_avg[r, k], exp_avg_sq[r, k], second = adam_entry(
                param[r, k], exp_avg[r, k], exp_avg_sq[r, k], max_exp_avg_sq[r, k] if amsgrad else zero, g, constants,
                r * width + k >= vector_end, from_grad, amsgrad, False)
            if amsgrad:
                max_exp_avg_sq[r, k] = second
        if hit:
            grad[r, :] = zero
            touched[r] = False


# constants of `sparse_adam_rows` (one array in the tables' dtype): 1 − β₁, 1 − β₂, ε, −step size
ONE_MINUS_BETA1_S, ONE_MINUS_BETA2_S, EPS_S, NEG_STEP_SIZE_S = range(4)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def sparse_adam_rows(param, exp_avg, exp_avg_sq, grad, touched, ids, c, clamp):  # pragma: no cover  (compiled; tested)
    """torch.optim.SparseAdam's step (torch/optim/_functional.py `sparse_adam`) on the rows `touched` flags,
    each once, visited in the order of `ids` (a row may appear there several times), reading its gradient
    row from `grad`; the row's gradient is zeroed and its flag cleared after; then max(·, 0) on those rows when
    `clamp` (λ ≥ 0, as `LambdaTables.project_` after torch's step). Operation for operation as
    torch's on the coalesced gradient values, in the tables' precision and without fused multiply-adds:

        u = (g − m)·(1 − β₁);  m ← m + u;  w = (g·g − v)·(1 − β₂);  v ← v + w
        θ ← θ + (−s)·((u + m_old) / (√(w + v_old) + ε)),   s = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)

    so the same gradient gives the same moments, bit for bit, as `SparseAdam.step()`, and the same parameters
    up to one rounding: √ here is correctly rounded, torch's vectorized one (Sleef) is not always — 2 of ~200
    entries 1 ulp apart in a test (tests/test_compiled_adam.py)."""
    one_minus_beta1, one_minus_beta2 = c[ONE_MINUS_BETA1_S], c[ONE_MINUS_BETA2_S]
    eps, neg_step = c[EPS_S], c[NEG_STEP_SIZE_S]
    zero = c[0] - c[0]
    for t in range(ids.shape[0]):
        r = ids[t]
        if not touched[r]:
            continue
        for k in range(param.shape[1]):
            g, m0, v0 = grad[r, k], exp_avg[r, k], exp_avg_sq[r, k]
            u = (g - m0) * one_minus_beta1
            exp_avg[r, k] = m0 + u
            w = (g * g - v0) * one_minus_beta2
            exp_avg_sq[r, k] = v0 + w
            # np.sqrt keeps the tables' precision (math.sqrt of a float32 is a float64 in numba): every
            # operation rounds to it, as torch's tensor ops do (its √ may differ by 1 ulp: docstring)
            value = param[r, k] + neg_step * ((u + m0) / (np.sqrt(w + v0) + eps))
            param[r, k] = max(value, zero) if clamp else value
            grad[r, k] = zero
        touched[r] = False
