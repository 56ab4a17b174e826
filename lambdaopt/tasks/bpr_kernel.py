"""The closed-form MF-BPR step under plain SGD and an L2 penalty as one compiled loop (numba), for CPU.

The same step as `ClosedFormBPRStep` (its docstring has the derivation), written per triple so each row is
read while it is in cache: pass 1 adds every occurrence's gradient into per-row buffers, reading the
parameters as they were before the step (so a row that occurs twice gets the sum of both gradients, as
the mini-batch step does); pass 2 moves each touched row by −lr·(its summed gradient) and clears its buffer.
PyTorch runs the same step as ~30 kernels, each a pass over all the batch's rows plus a dispatch: on
ML-100K (d = 128, batch 1024) that is ~3× the time of this loop (bench/peers_speed.py).

Floating point: sums are reassociated (`fastmath` reassoc/contract, so the 128-wide dot products
vectorize); NaN and Inf propagate as usual (no `nnan`/`ninf`), so the trainer's finite-loss check still
sees a diverged step. Results agree with the autograd step to float rounding (tests/test_bpr_step.py).
"""
from __future__ import annotations

import math

import numba
import numpy as np

FASTMATH = {"reassoc", "contract"}


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
def bpr_l2_sgd_step(P, Q, bias, has_bias, users, positives, negatives, lam, lr, grad_P, grad_Q, grad_bias,
                    touched_P, touched_Q):  # pragma: no cover  (compiled; its result is tested)
    """One SGD step of mean BPR loss + lam · Σ_rows ‖θ_r‖² / B on tables P (users), Q (items) and the
    optional item bias, in place. Returns (Σ −log σ(x), Σ ‖θ_r‖²) over the batch, for the loss value."""
    size, dim = users.shape[0], P.shape[1]
    penalty_scale = np.float32(2.0 * lam / size)  # float32 throughout the row loops, as the tables
    fit, squares = 0.0, 0.0
    for t in range(size):
        u, i, j = users[t], positives[t], negatives[t]
        x = bias[i] - bias[j] if has_bias else np.float32(0.0)
        for k in range(dim):
            x += P[u, k] * (Q[i, k] - Q[j, k])
        fit += max(-x, 0.0) + math.log1p(math.exp(-abs(x)))  # −log σ(x), stable for any x
        g = np.float32(-1.0 / (1.0 + math.exp(x)) / size)  # ∂(mean loss)/∂x = −σ(−x)/B
        row_squares = np.float32(0.0)
        for k in range(dim):
            p, qi, qj = P[u, k], Q[i, k], Q[j, k]
            row_squares += p * p + qi * qi + qj * qj
            grad_P[u, k] += g * (qi - qj) + penalty_scale * p
            grad_Q[i, k] += g * p + penalty_scale * qi
            grad_Q[j, k] += penalty_scale * qj - g * p
        squares += row_squares
        if has_bias:
            grad_bias[i] += g
            grad_bias[j] -= g
        touched_P[u] = True
        touched_Q[i] = True
        touched_Q[j] = True
    step = np.float32(lr)
    for t in range(size):
        u = users[t]
        if touched_P[u]:
            for k in range(dim):
                P[u, k] -= step * grad_P[u, k]
                grad_P[u, k] = 0.0
            touched_P[u] = False
        for r in (positives[t], negatives[t]):
            if touched_Q[r]:
                for k in range(dim):
                    Q[r, k] -= step * grad_Q[r, k]
                    grad_Q[r, k] = 0.0
                if has_bias:
                    bias[r] -= step * grad_bias[r]
                    grad_bias[r] = 0.0
                touched_Q[r] = False
    return fit, squares


class CompiledBPRStep:
    """Calls `bpr_l2_sgd_step` on numpy views of the model's CPU float32 tables (no copies), keeping its
    gradient buffers between steps (they are left zeroed)."""

    def __init__(self, model):
        self.model = model
        self.grad_P = np.zeros(tuple(model.user_embedding.shape), np.float32)
        self.grad_Q = np.zeros(tuple(model.item_embedding.shape), np.float32)
        self.grad_bias = np.zeros(model.n_items, np.float32)
        self.touched_P = np.zeros(model.n_users, np.bool_)
        self.touched_Q = np.zeros(model.n_items, np.bool_)
        self.no_bias = np.zeros(1, np.float32)

    def __call__(self, users, positives, negatives, lam: float, lr: float) -> tuple[float, float]:
        model = self.model
        bias = model.item_bias.detach().numpy() if model.item_bias is not None else self.no_bias
        return bpr_l2_sgd_step(model.user_embedding.detach().numpy(), model.item_embedding.detach().numpy(), bias,
                               model.item_bias is not None, users.numpy(), positives.numpy(), negatives.numpy(),
                               lam, lr, self.grad_P, self.grad_Q, self.grad_bias, self.touched_P, self.touched_Q)
