"""The closed-form MF-BPR step under an L2 penalty as compiled loops (numba), for CPU.

The same step as `ClosedFormBPRStep` (its docstring has the derivation), written per triple so each row is
read while it is in cache: pass 1 adds every occurrence's gradient into per-row buffers, reading the
parameters as they were before the step (so a row that occurs twice gets the sum of both gradients, as
the mini-batch step does); under plain SGD, pass 2 moves each touched row by −lr·(its summed gradient) and
clears its buffer; any other optimizer gets the summed gradient as the tables' dense `.grad` and steps.
PyTorch runs the same step as ~30 kernels, each a pass over all the batch's rows plus a dispatch: several
times the time of this loop on ML-100K (bench/README.md, peers_speed.py).

Floating point: sums are reassociated (`fastmath` reassoc/contract, so the 128-wide dot products
vectorize); NaN and Inf propagate as usual (no `nnan`/`ninf`), so the trainer's finite-loss check still
sees a diverged step. Results agree with the autograd step to float rounding (tests/test_bpr_step.py).
"""
from __future__ import annotations

import math

import numba
import numpy as np
import torch

from lambdaopt.adam_kernel import adam_constants, adam_entry, adam_touched_step, fma
from lambdaopt.kernels import KeptViews

FASTMATH = {"reassoc", "contract"}


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
def bpr_l2_gradient(P, Q, bias, has_bias, users, positives, negatives, lam_P, lam_Q, grad_P, grad_Q, grad_bias,
                    touched_P, touched_Q):  # pragma: no cover  (compiled; its result is tested)
    """Adds the gradient of mean BPR loss + Σ_rows Σ_k λ_rk θ_rk² / B on tables P (users), Q (items) and the
    optional item bias into grad_P, grad_Q, grad_bias (zero on entry), flagging the rows it touched.
    λ per entry: lam_P is P's shape and lam_Q Q's, or both 1 × 1 for one λ per table (then the loop has
    no per-entry loads; a single branch either way, so each loop vectorizes).
    Returns (Σ −log σ(x), Σ λ ⊙ θ²) over the batch, for the loss value."""
    size, dim = users.shape[0], P.shape[1]
    two_over_size = np.float32(2.0 / size)  # float32 throughout the row loops, as the tables
    per_entry = lam_P.size > 1 or lam_Q.size > 1  # then both are their table's shape (CompiledBPRStep._weights)
    fit, squares = 0.0, 0.0
    for t in range(size):
        u, i, j = users[t], positives[t], negatives[t]
        x = bias[i] - bias[j] if has_bias else np.float32(0.0)
        for k in range(dim):
            x += P[u, k] * (Q[i, k] - Q[j, k])
        fit += max(-x, 0.0) + math.log1p(math.exp(-abs(x)))  # −log σ(x), stable for any x
        g = np.float32(-1.0 / (1.0 + math.exp(x)) / size)  # ∂(mean loss)/∂x = −σ(−x)/B
        row_squares = np.float32(0.0)
        if per_entry:
            for k in range(dim):
                p, qi, qj = P[u, k], Q[i, k], Q[j, k]
                wp, wi, wj = lam_P[u, k], lam_Q[i, k], lam_Q[j, k]
                row_squares += wp * p * p + wi * qi * qi + wj * qj * qj
                grad_P[u, k] += g * (qi - qj) + two_over_size * wp * p
                grad_Q[i, k] += g * p + two_over_size * wi * qi
                grad_Q[j, k] += two_over_size * wj * qj - g * p
        else:  # one λ per table (fixed λ): the same loop without per-entry loads, which vectorizes
            wp, wq = lam_P[0, 0], lam_Q[0, 0]
            cp, cq = two_over_size * wp, two_over_size * wq
            for k in range(dim):
                p, qi, qj = P[u, k], Q[i, k], Q[j, k]
                row_squares += wp * p * p + wq * (qi * qi + qj * qj)
                grad_P[u, k] += g * (qi - qj) + cp * p
                grad_Q[i, k] += g * p + cq * qi
                grad_Q[j, k] += cq * qj - g * p
        squares += row_squares
        if has_bias:
            grad_bias[i] += g
            grad_bias[j] -= g
        touched_P[u] = True
        touched_Q[i] = True
        touched_Q[j] = True
    return fit, squares


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
def row_l2(table, e, lam, per_entry):  # pragma: no cover  (compiled; its result is tested)
    """Σ_k λ θ² of row e of `table`: λ per entry (`lam` of the table's shape), or one λ (1 × 1: Σ θ² times it).
    One function for `l2_rows_gradient` and `adam_l2_rows_step`, so both sum it the same way (reassociated)."""
    squares = np.float32(0.0)
    if per_entry:
        for k in range(table.shape[1]):
            th = table[e, k]
            squares += lam[e, k] * th * th
    else:
        for k in range(table.shape[1]):
            th = table[e, k]
            squares += th * th
        squares *= lam[0, 0]
    return squares


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
def l2_rows_gradient(table, ids, fit, counts, lam, size, grad, touched):  # pragma: no cover  (compiled; tested)
    """grad[e] = fit[r] + (2·c_r/B)·λ_e ⊙ θ_e for each row e = ids[r] (fit: that row's fit gradient, c_r:
    its occurrences in the batch of B = `size` triples), flagging it in `touched`: the gradient
    `bpr_l2_gradient` adds up per occurrence, from a fit gradient already summed (`TrainFit`). λ per
    entry (`table`'s shape) or 1 × 1. Returns Σ_r c_r · Σ_k λ θ², the batch's Σ λ ⊙ θ² over occurrences.
    Each entry one fused multiply-add, fma((2·c_r/B)·λ, θ, fit), as `adam_l2_rows_step` computes it."""
    per_entry = lam.size > 1
    two_over_size = np.float32(2.0 / size)
    squares = 0.0
    for r in range(ids.shape[0]):
        e = ids[r]
        weight = two_over_size * counts[r]
        for k in range(table.shape[1]):
            grad[e, k] = fma(weight * (lam[e, k] if per_entry else lam[0, 0]), table[e, k], fit[r, k])
        squares += counts[r] * row_l2(table, e, lam, per_entry)
        touched[e] = True
    return squares


@numba.njit(cache=True, nogil=True, error_model="numpy")
def adam_l2_rows_step(param, exp_avg, exp_avg_sq, max_exp_avg_sq, ids, fit, counts, lam, size, slot, c, vector_end,
                      from_grad, amsgrad, row_squares):  # pragma: no cover  (compiled; its result is tested)
    """`l2_rows_gradient` and then `adam_rows_step` on its gradient, in one pass: torch's Adam step of every entry
    of `param` (adam_kernel.py, bit for bit) with the gradient fma((2·c_t/B)·λ, θ, fit[t]) on row ids[t] —
    computed where the step reads it, before the row moves — and zero on every other row, instead of a
    gradient table written and read again and then cleared. Returns Σ_t c_t · Σ_k λ θ² as `l2_rows_gradient`
    does (`row_squares`: scratch, at least len(ids) entries; `slot`: as in `adam_rows_step`)."""
    rows, width = param.shape
    per_entry = lam.size > 1
    two_over_size = np.float32(2.0 / size)
    constants = adam_constants(c)
    zero = constants[-1]
    for t in range(ids.shape[0]):
        slot[ids[t]] = t
    for r in range(rows):
        s = slot[r]
        weight = zero
        if s >= 0:
            row_squares[s] = row_l2(param, r, lam, per_entry)
            weight = two_over_size * counts[s]
        for k in range(width):
            g = fma(weight * (lam[r, k] if per_entry else lam[0, 0]), param[r, k], fit[s, k]) if s >= 0 else zero
            param[r, k], exp_avg[r, k], exp_avg_sq[r, k], second = adam_entry(
                param[r, k], exp_avg[r, k], exp_avg_sq[r, k], max_exp_avg_sq[r, k] if amsgrad else zero, g, constants,
                r * width + k >= vector_end, from_grad, amsgrad, False)
            if amsgrad:
                max_exp_avg_sq[r, k] = second
    squares = 0.0
    for t in range(ids.shape[0]):
        slot[ids[t]] = -1
        squares += counts[t] * row_squares[t]
    return squares


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
def sgd_on_touched_rows(P, Q, bias, has_bias, users, positives, negatives, lr, grad_P, grad_Q, grad_bias,
                        touched_P, touched_Q):  # pragma: no cover  (compiled; its result is tested)
    """θ_r ← θ_r − lr · grad_r for every row `bpr_l2_gradient` touched, leaving the buffers and flags cleared."""
    step = np.float32(lr)
    for t in range(users.shape[0]):
        u = users[t]
        if touched_P[u]:
            for k in range(P.shape[1]):
                P[u, k] -= step * grad_P[u, k]
                grad_P[u, k] = 0.0
            touched_P[u] = False
        for r in (positives[t], negatives[t]):
            if touched_Q[r]:
                for k in range(Q.shape[1]):
                    Q[r, k] -= step * grad_Q[r, k]
                    grad_Q[r, k] = 0.0
                if has_bias:
                    bias[r] -= step * grad_bias[r]
                    grad_bias[r] = 0.0
                touched_Q[r] = False


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True)
def bpr_l2_per_sample_sgd(P, Q, bias, has_bias, users, positives, negatives, lam_P, lam_Q,
                          step_size):  # pragma: no cover  (compiled; its result is tested)
    """Per-sample SGD through the batch (`trainer.per_sample`): triple t moves p_u, q_i, q_j (and the item
    biases) by −step_size·∇ℓ_t, ℓ_t = −log σ(x_t) + Σ_rows Σ_k λ_rk θ_rk², reading the rows as the
    triples before it left them — the mini-batch step's terms applied one at a time (step_size = lr/B:
    at B = 1 it is the same step). λ as in `bpr_l2_gradient`. Returns (Σ −log σ(x), Σ λ ⊙ θ²), each term
    at its triple's turn."""
    size, dim = users.shape[0], P.shape[1]
    step, two = np.float32(step_size), np.float32(2.0)  # float32 throughout the row loops, as the tables
    per_entry = lam_P.size > 1 or lam_Q.size > 1  # then both are their table's shape (CompiledBPRStep._weights)
    fit, squares = 0.0, 0.0
    for t in range(size):
        u, i, j = users[t], positives[t], negatives[t]
        x = bias[i] - bias[j] if has_bias else np.float32(0.0)
        for k in range(dim):
            x += P[u, k] * (Q[i, k] - Q[j, k])
        fit += max(-x, 0.0) + math.log1p(math.exp(-abs(x)))
        g = np.float32(-1.0 / (1.0 + math.exp(x)))  # ∂ℓ_t/∂x = −σ(−x)
        row_squares = np.float32(0.0)
        if per_entry:
            for k in range(dim):
                p, qi, qj = P[u, k], Q[i, k], Q[j, k]
                wp, wi, wj = lam_P[u, k], lam_Q[i, k], lam_Q[j, k]
                row_squares += wp * p * p + wi * qi * qi + wj * qj * qj
                P[u, k] = p - step * (g * (qi - qj) + two * wp * p)
                Q[i, k] = qi - step * (g * p + two * wi * qi)
                Q[j, k] -= step * (two * wj * qj - g * p)  # −=: were j = i, both terms apply
        else:  # one λ per table (fixed λ): the same loop without per-entry loads, which vectorizes
            cp, cq = two * lam_P[0, 0], two * lam_Q[0, 0]
            for k in range(dim):
                p, qi, qj = P[u, k], Q[i, k], Q[j, k]
                row_squares += lam_P[0, 0] * p * p + lam_Q[0, 0] * (qi * qi + qj * qj)
                P[u, k] = p - step * (g * (qi - qj) + cp * p)
                Q[i, k] = qi - step * (g * p + cq * qi)
                Q[j, k] -= step * (cq * qj - g * p)
        squares += row_squares
        if has_bias:
            bias[i] -= step * g
            bias[j] += step * g
    return fit, squares


class CompiledBPRStep:
    """The two loops on numpy views of the model's CPU float32 tables (no copies). `sgd_step` keeps its
    own gradient buffers between steps (left zeroed); `gradient` writes the dense gradient into the
    tables' `.grad` for the model's optimizer to step on."""

    def __init__(self, model):
        self.model = model
        self.grad_P = np.zeros(tuple(model.user_embedding.shape), np.float32)
        self.grad_Q = np.zeros(tuple(model.item_embedding.shape), np.float32)
        self.grad_bias = np.zeros(model.n_items, np.float32)
        self.touched_P = np.zeros(model.n_users, np.bool_)
        self.touched_Q = np.zeros(model.n_items, np.bool_)
        # the kernels' trailing arguments: the gradient rows of the batch and which rows they are
        self.buffers = (self.grad_P, self.grad_Q, self.grad_bias, self.touched_P, self.touched_Q)
        self.no_bias = np.zeros(1, np.float32)
        self.first_row = np.zeros(1, np.int64)  # a bias's one-row view (compiled_adam.step_table's ids)
        self.row_squares = np.zeros(max(model.n_users, model.n_items), np.float32)  # adam_l2_rows_step's scratch
        self.kept = KeptViews()  # the tables' and λ's NumPy views, kept between steps

    def _tables(self):
        model = self.model
        return self.kept("tables", (model.user_embedding, model.item_embedding, model.item_bias), lambda: (
            model.user_embedding.detach().numpy(), model.item_embedding.detach().numpy(),
            model.item_bias.detach().numpy() if model.item_bias is not None else self.no_bias,
            model.item_bias is not None))

    def _weights(self, weights: dict[str, torch.Tensor]):
        """λ per role as the kernels read it: both 1 × 1 when each is one value, else both the full shape
        of their table (a single λ expanded: a copy per step, only for λOpt's `user` / `item` granularities).
        Kept while they are views of the same λ storage (a copy is made again at every step: λ may have
        moved in place since)."""
        tables = {"user": self.model.user_embedding, "item": self.model.item_embedding}
        per_entry = any(weights[role].numel() > 1 for role in tables)
        return self.kept(
            "lambda", (weights["user"], weights["item"]),
            lambda: [(weights[role].detach().expand(table.shape) if per_entry else weights[role].detach().reshape(1, 1))
                     .to(torch.float32).contiguous().numpy() for role, table in tables.items()],
            views=lambda arrays: all(a.ctypes.data == weights[role].data_ptr() for a, role in zip(arrays, tables)))

    def sgd_step(self, users, positives, negatives, weights, lr: float) -> tuple[float, float]:
        tables, batch = self._tables(), (users.numpy(), positives.numpy(), negatives.numpy())
        sums = bpr_l2_gradient(*tables, *batch, *self._weights(weights), *self.buffers)
        sgd_on_touched_rows(*tables, *batch, lr, *self.buffers)
        return sums

    def per_sample_sgd_step(self, users, positives, negatives, weights, step_size: float) -> tuple[float, float]:
        return bpr_l2_per_sample_sgd(*self._tables(), users.numpy(), positives.numpy(), negatives.numpy(),
                                     *self._weights(weights), step_size)

    def adam_step(self, users, positives, negatives, weights, adam) -> tuple[float, float]:
        """The gradient into this step's own buffers (zero off the batch's rows), then `adam` (a `CompiledAdam`
        of the model's optimizer: torch's fused Adam, bit for bit) steps every table from them — the user
        bias, whose gradient is zero, too — and the touched rows are zeroed again: no `.grad` tables, and
        no torch `Optimizer.step` around the update (≈ 9 % of an ML-100K Adam epoch, bench/README.md)."""
        sums = bpr_l2_gradient(*self._tables(), users.numpy(), positives.numpy(), negatives.numpy(),
                               *self._weights(weights), *self.buffers)
        self._adam_from_buffers(adam)
        return sums

    def step_from_fit(self, fit, weights, adam=None, lr: float | None = None) -> tuple[float, float]:
        """The step `sgd_step` (with `lr`) or `adam_step` (with `adam`) takes on `fit.batch`, from the fit
        gradient λOpt's look-ahead already summed on its rows (`bpr_lookahead.TrainFit`): only the penalty's
        gradient under the current λ is added, per distinct row instead of per triple — under Adam where the
        step reads it (`adam_l2_rows_step`: no gradient table written, read and cleared). The same step up to
        float rounding (the fit and penalty terms of a row summed in another order;
        tests/test_bpr_lookahead.py)."""
        P, Q, bias, has_bias = self._tables()
        lam_P, lam_Q = self._weights(weights)
        if adam is not None:
            return fit.loss_sum, self._adam_from_fit(adam, fit, lam_P, lam_Q)
        squares = (l2_rows_gradient(P, fit.user_ids, fit.user_rows, fit.user_counts, lam_P, fit.size, self.grad_P,
                                    self.touched_P)
                   + l2_rows_gradient(Q, fit.item_ids, fit.item_rows, fit.item_counts, lam_Q, fit.size, self.grad_Q,
                                      self.touched_Q))
        if has_bias:
            self.grad_bias[fit.item_ids] = fit.bias_rows
        sgd_on_touched_rows(P, Q, bias, has_bias, *(t.numpy() for t in fit.batch), lr, *self.buffers)
        return fit.loss_sum, squares

    def _adam_from_fit(self, adam, fit, lam_P, lam_Q) -> float:
        """`adam` steps every table: the factor tables from the fit rows plus the penalty's gradient in one pass
        each, the biases as `_adam_from_buffers` steps them. Returns the batch's Σ λ ⊙ θ² over occurrences."""
        model, squares = self.model, 0.0
        for table, ids, rows, counts, lam in ((model.user_embedding, fit.user_ids, fit.user_rows, fit.user_counts, lam_P),
                                              (model.item_embedding, fit.item_ids, fit.item_rows, fit.item_counts, lam_Q)):
            arrays, settings = adam.prepare(table)
            squares += adam_l2_rows_step(*arrays, ids, rows, counts, lam, fit.size, *settings, self.row_squares)
        if model.item_bias is not None:
            self.grad_bias[fit.item_ids] = fit.bias_rows
        self._adam_biases(adam)
        return squares

    def sparse_adam_step(self, users, positives, negatives, weights, sparse_adam) -> tuple[float, float]:
        """The gradient into this step's own buffers, then `sparse_adam` (a `CompiledSparseAdam`: torch's
        SparseAdam on those rows) steps each touched row once and zeroes it again — no sparse COO gradient,
        no coalescing. The model has no biases (optimizer=sparse_adam refuses them)."""
        batch = (users.numpy(), positives.numpy(), negatives.numpy())
        sums = bpr_l2_gradient(*self._tables(), *batch, *self._weights(weights), *self.buffers)
        model = self.model
        sparse_adam.step_rows(model.user_embedding, self.grad_P, self.touched_P, batch[0])
        sparse_adam.step_rows(model.item_embedding, self.grad_Q, self.touched_Q, np.concatenate(batch[1:]))
        return sums

    def _adam_from_buffers(self, adam) -> None:
        """`adam` steps every table from the gradient buffers, leaving them zeroed and their flags cleared."""
        model = self.model
        for table, grad, touched in ((model.user_embedding, self.grad_P, self.touched_P),
                                     (model.item_embedding, self.grad_Q, self.touched_Q)):
            arrays, settings = adam.prepare(table)
            adam_touched_step(*arrays, grad, touched, *settings)  # reads the touched rows only, and clears them
        self._adam_biases(adam)

    def _adam_biases(self, adam) -> None:
        """`adam` steps the item bias from its gradient buffer, left zeroed, and the user bias from a zero
        gradient."""
        model = self.model
        bias_row = self.grad_bias.reshape(1, -1)  # a 1-D table is one row of the kernel's view
        if model.item_bias is not None:
            adam.step_table(model.item_bias, self.first_row, bias_row)
            self.grad_bias[:] = 0  # one float per item
        if model.user_bias is not None:
            adam.step_table(model.user_bias, self.first_row[:0], bias_row)  # no rows: a zero gradient

    def gradient(self, users, positives, negatives, weights) -> tuple[float, float]:
        model, grads = self.model, []
        for table in (model.user_embedding, model.item_embedding, model.item_bias):
            if table is None:
                grads.append(self.grad_bias)  # written to, never read
                continue
            if table.grad is None:
                table.grad = torch.zeros_like(table)
            else:  # the optimizer may have read the last one: a fresh zero gradient each step
                table.grad.zero_()
            grads.append(table.grad.numpy())
        sums = bpr_l2_gradient(*self._tables(), users.numpy(), positives.numpy(), negatives.numpy(),
                               *self._weights(weights), *grads,
                               self.touched_P, self.touched_Q)
        self.touched_P[:] = False
        self.touched_Q[:] = False
        return sums


def loss_and_grads(params: dict[str, torch.Tensor], users, positives, negatives) -> tuple[torch.Tensor, dict]:
    """`bpr_step.dot_bpr_loss_and_grads` through `bpr_l2_gradient` (λ = 0): the mean BPR loss at
    `params` (CPU float32 tables) and its gradient for every entry of `params`."""
    P, Q = params["user_embedding"], params["item_embedding"]
    bias = params.get("item_bias")
    grads = {name: torch.zeros_like(value) for name, value in params.items()}
    no_bias = np.zeros(1, np.float32)
    zero = np.zeros((1, 1), np.float32)
    fit, _ = bpr_l2_gradient(P.numpy(), Q.numpy(), no_bias if bias is None else bias.numpy(), bias is not None,
                             users.numpy(), positives.numpy(), negatives.numpy(), zero, zero,
                             grads["user_embedding"].numpy(), grads["item_embedding"].numpy(),
                             no_bias if bias is None else grads["item_bias"].numpy(),
                             np.zeros(len(P), np.bool_), np.zeros(len(Q), np.bool_))
    return torch.tensor(fit / len(users), dtype=torch.float32), grads
