"""λOpt's one-step hypergradient for MF-BPR as one compiled pass (numba, CPU float32/float64).

The same quantity as `regularizers/hypergrad.one_step_hypergrad` (its docstring has the derivation), for a
dot-product model (`model.dot_scores`) looking ahead through plain SGD or Adam (amsgrad or not, no weight
decay). With θ the rows the two batches touch, c_r the occurrences of row r in the train batch and B its
size:

    g_r  = ∇_r L_fit(θ) + 2·c_r·λ_r ⊙ θ_r / B          (the training step's gradient)
    θ'_r = step(θ_r, g_r),  J_r = ∂θ'_r/∂g_r            (lookahead.py's rules, written per entry)
    G'_r = ∇_r L_val(θ')                                (BPR on the validation batch at θ')
    h_r  = (2·c_r/B)·θ_r ⊙ J_r ⊙ G'_r   =  ∂L_val(θ')/∂λ_r   (λ_r the λ entry each θ entry is scaled by)

The kernel returns h for every touched row; mapping it to λ's shape (per dimension, user, item, …) and
through its parametrization is left to the λ step (regularizers/lambda_step.py). It also keeps the train
batch's fit gradient ∇L_fit(θ) per row (`TrainFit`): the model step on that batch, taken next at the same θ,
adds the penalty's gradient under the new λ to it instead of summing the fit over the triples again. An
item bias steps too (it moves the validation scores) but is not penalized (h has no bias term); a user
bias cancels out of every BPR margin and is left out.

Why: the tensor path runs ~130 elementwise ops over the ~2,300 touched rows × d per λ step, each a pass
over memory plus a dispatch (bench/README.md, λOpt epoch time); here every row is read once per phase
while in cache. tests/test_bpr_lookahead.py checks it against `one_step_hypergrad` in float64 to 1e-10.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
import torch

from lambdaopt.kernels import KeptViews
from lambdaopt.tasks.bpr_kernel import FASTMATH

# the constants array (one per table, in the tables' dtype so no loop promotes to float64):
TWO_OVER_B, STEP, ONE_MINUS_BETA1, BETA2, ONE_MINUS_BETA2, EPS, CORRECTION2, ONE, HALF, ZERO = range(10)


@numba.njit(cache=True, nogil=True)
def _assign_slots(ids, slot, order, n):  # pragma: no cover  (compiled; its result is tested)
    """Give every id of `ids` not seen yet the next compact row number n (slot[id] = n, order[n] = id)."""
    for t in range(ids.shape[0]):
        e = ids[t]
        if slot[e] < 0:
            slot[e] = n
            order[n] = e
            n += 1
    return n


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def _step_rows(theta, order, n, fit, counts, in_valid, lam, adam, amsgrad, m0, v0, x0, c, ahead,
               sens):  # pragma: no cover  (compiled; its result is tested)
    """θ' into ahead[:n] and (2·c_r/B)·θ ⊙ J into sens[:n] for compact rows r < n of `theta` (rows
    order[r] of the full table, as are λ's rows `lam` and the optimizer state m0 / v0 / x0 = exp_avg /
    exp_avg_sq / max_exp_avg_sq — zeros where the optimizer has none yet, which gives torch's first
    step). Adam as lookahead.AdamRule.update_and_derivative, with selects in place of branches so that
    the inner loop vectorizes.

    Only what h = sens ⊙ G' needs: a row the validation batch does not read (`in_valid` false) has G' = 0,
    so neither θ' nor the derivative is computed (sens = 0, θ' left unset: never read); a row only the
    validation batch reads has c_r = 0, so only θ' (sens = 0) — a quarter to a half of the rows each on
    ML-100K batches of 1024."""
    dim = theta.shape[1]
    step, one_minus_beta1, beta2, one_minus_beta2 = c[STEP], c[ONE_MINUS_BETA1], c[BETA2], c[ONE_MINUS_BETA2]
    eps, inverse_correction2, one, half, zero = c[EPS], c[ONE] / c[CORRECTION2], c[ONE], c[HALF], c[ZERO]
    for r in range(n):
        e = order[r]
        weight = c[TWO_OVER_B] * counts[r]
        if not in_valid[r] or counts[r] == zero:
            sens[r, :] = zero
            if not in_valid[r]:
                continue
        if not adam:
            if counts[r] == zero:
                for k in range(dim):
                    ahead[r, k] = theta[e, k] - step * fit[r, k]
                continue
            for k in range(dim):
                th = theta[e, k]
                ahead[r, k] = th - step * (fit[r, k] + weight * lam[e, k] * th)
                sens[r, k] = -step * weight * th
            continue
        if counts[r] == zero:  # θ' only: g = the fit gradient (zero here: the row is not in the train batch)
            for k in range(dim):
                g = fit[r, k]
                m = m0[e, k] + one_minus_beta1 * (g - m0[e, k])
                second = one_minus_beta2 * g * g + beta2 * v0[e, k]
                if amsgrad:
                    second = max(x0[e, k], second)
                inverse = one / (math.sqrt(second) * inverse_correction2 + eps)
                ahead[r, k] = theta[e, k] - step * m * inverse
            continue
        for k in range(dim):
            th = theta[e, k]
            g = fit[r, k] + weight * lam[e, k] * th
            m = m0[e, k] + one_minus_beta1 * (g - m0[e, k])
            v = one_minus_beta2 * g * g + beta2 * v0[e, k]
            second, w = v, one
            if amsgrad:  # w: torch.maximum's derivative in v (½ at a tie)
                previous = x0[e, k]
                second = max(previous, v)
                w = one if v > previous else (half if v == previous else zero)
            root = math.sqrt(second)
            inverse = one / (root * inverse_correction2 + eps)
            ahead[r, k] = th - step * m * inverse
            d_root = one_minus_beta2 * g * w / root if root > zero else zero  # safe_sqrt's slope at 0
            sens[r, k] = -step * weight * th * (one_minus_beta1 - m * d_root * inverse * inverse_correction2) * inverse


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def _step_bias(bias, order, n, fit, adam, amsgrad, m0, v0, x0, c, ahead):  # pragma: no cover  (compiled)
    """b' for the compact item rows, state as in `_step_rows` (the bias is not penalized: no derivative)."""
    for r in range(n):
        e, g = order[r], fit[r]
        if adam:
            m = m0[e] + c[ONE_MINUS_BETA1] * (g - m0[e])
            v = c[ONE_MINUS_BETA2] * g * g + c[BETA2] * v0[e]
            if amsgrad:
                v = max(v, x0[e])
            ahead[r] = bias[e] - c[STEP] * m / (math.sqrt(v) / c[CORRECTION2] + c[EPS])
        else:
            ahead[r] = bias[e] - c[STEP] * g


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def _bpr_grads(P, Q, bias, has_bias, users, positives, negatives, slot_P, slot_Q, grad_P, grad_Q, grad_bias,
               one):  # pragma: no cover  (compiled; its result is tested)
    """Σ −log σ(x) over the triples (ids through slot_*: full-table ids into rows of P, Q, bias) and the
    gradient of the mean loss added into the compact buffers grad_P, grad_Q, grad_bias."""
    size, dim = users.shape[0], P.shape[1]
    rounded = np.empty(1, P.dtype)  # g in the tables' dtype, rounded once from float64
    fit = 0.0
    for t in range(size):
        u, i, j = users[t], positives[t], negatives[t]
        cu, ci, cj = slot_P[u], slot_Q[i], slot_Q[j]
        x = bias[i] - bias[j] if has_bias else one - one
        for k in range(dim):
            x += P[u, k] * (Q[i, k] - Q[j, k])
        fit += max(-x, 0.0) + math.log1p(math.exp(-abs(x)))  # −log σ(x), stable for any x
        # ∂(mean loss)/∂x = −σ(−x)/B, by the model step's formula (bpr_kernel.bpr_l2_gradient), so the
        # fit gradient it reuses (`TrainFit`) is the one it would have computed, bit for bit per triple
        rounded[0] = -1.0 / (1.0 + math.exp(x)) / size
        g = rounded[0]
        for k in range(dim):
            p = P[u, k]
            grad_P[cu, k] += g * (Q[i, k] - Q[j, k])
            grad_Q[ci, k] += g * p
            grad_Q[cj, k] -= g * p
        if has_bias:
            grad_bias[ci] += g
            grad_bias[cj] -= g
    return fit


@numba.njit(cache=True, fastmath=FASTMATH, nogil=True, error_model="numpy")
def one_step_sensitivities(P, Q, bias, has_bias, users, positives, negatives, v_users, v_positives, v_negatives,
                           lam_P, lam_Q, adam, amsgrad, state_P, state_Q, state_bias, c_P, c_Q, c_bias, slot_P,
                           slot_Q):  # pragma: no cover  (compiled; its result is tested)
    """(validation loss at θ', user ids, h of those user rows, item ids, h of those item rows, the train
    batch's fit); see the module docstring. The fit: (Σ −log σ(x) over the train triples, ∇L_fit(θ) of
    the user rows it touches — the first rows of the user ids —, their occurrence counts, the same two
    for the item rows, ∇L_fit of their item bias), what the model step on that batch needs again
    (`TrainFit`). lam_*: λ for every entry of P, Q; state_*: (exp_avg, exp_avg_sq, max_exp_avg_sq) of
    each table (zeros where absent, any arrays for SGD); c_*: the constants; slot_*: −1 everywhere, left
    so on return."""
    dim, dtype = P.shape[1], P.dtype
    order_P = np.empty(users.shape[0] + v_users.shape[0], np.int64)
    order_Q = np.empty(2 * (positives.shape[0] + v_positives.shape[0]), np.int64)
    n_P = _assign_slots(users, slot_P, order_P, 0)
    n_Q = _assign_slots(negatives, slot_Q, order_Q, _assign_slots(positives, slot_Q, order_Q, 0))
    train_P, train_Q = n_P, n_Q  # the compact rows the train batch touches come first
    n_P = _assign_slots(v_users, slot_P, order_P, n_P)
    n_Q = _assign_slots(v_negatives, slot_Q, order_Q, _assign_slots(v_positives, slot_Q, order_Q, n_Q))
    counts_P, counts_Q = np.zeros(n_P, dtype), np.zeros(n_Q, dtype)
    for t in range(users.shape[0]):
        counts_P[slot_P[users[t]]] += 1
        counts_Q[slot_Q[positives[t]]] += 1
        counts_Q[slot_Q[negatives[t]]] += 1
    # the fit gradient at θ, then the step: θ' and the sensitivities, per compact row
    fit_P, fit_Q, fit_bias = np.zeros((n_P, dim), dtype), np.zeros((n_Q, dim), dtype), np.zeros(n_Q, dtype)
    train_loss = _bpr_grads(P, Q, bias, has_bias, users, positives, negatives, slot_P, slot_Q, fit_P, fit_Q,
                            fit_bias, c_P[ONE])
    # the validation triples' compact rows, and which rows they read
    cu, ci, cj = np.empty_like(v_users), np.empty_like(v_positives), np.empty_like(v_negatives)
    valid_P, valid_Q = np.zeros(n_P, np.bool_), np.zeros(n_Q, np.bool_)
    for t in range(v_users.shape[0]):
        cu[t], ci[t], cj[t] = slot_P[v_users[t]], slot_Q[v_positives[t]], slot_Q[v_negatives[t]]
        valid_P[cu[t]], valid_Q[ci[t]], valid_Q[cj[t]] = True, True, True
    ahead_P, sens_P = np.empty((n_P, dim), dtype), np.empty((n_P, dim), dtype)
    ahead_Q, sens_Q = np.empty((n_Q, dim), dtype), np.empty((n_Q, dim), dtype)
    ahead_bias = np.zeros(n_Q, dtype)
    _step_rows(P, order_P, n_P, fit_P, counts_P, valid_P, lam_P, adam, amsgrad, *state_P, c_P, ahead_P, sens_P)
    _step_rows(Q, order_Q, n_Q, fit_Q, counts_Q, valid_Q, lam_Q, adam, amsgrad, *state_Q, c_Q, ahead_Q, sens_Q)
    if has_bias:
        _step_bias(bias, order_Q, n_Q, fit_bias, adam, amsgrad, *state_bias, c_bias, ahead_bias)
    # G' = ∇L_val(θ') on the compact rows (the slots now index the look-ahead tables), then h = sens ⊙ G'
    identity_P, identity_Q = np.arange(n_P), np.arange(n_Q)
    outer_P, outer_Q, outer_bias = np.zeros((n_P, dim), dtype), np.zeros((n_Q, dim), dtype), np.zeros(n_Q, dtype)
    loss = _bpr_grads(ahead_P, ahead_Q, ahead_bias, has_bias, cu, ci, cj, identity_P, identity_Q, outer_P, outer_Q,
                      outer_bias, c_P[ONE])  # outer_bias: scratch, the bias has no h
    for r in range(n_P):
        slot_P[order_P[r]] = -1
        for k in range(dim):
            sens_P[r, k] *= outer_P[r, k]
    for r in range(n_Q):
        slot_Q[order_Q[r]] = -1
        for k in range(dim):
            sens_Q[r, k] *= outer_Q[r, k]
    fit = (train_loss, fit_P[:train_P], counts_P[:train_P], fit_Q[:train_Q], counts_Q[:train_Q], fit_bias[:train_Q])
    return loss / v_users.shape[0], order_P[:n_P], sens_P, order_Q[:n_Q], sens_Q, fit


STATE_KEYS = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")


@dataclass(frozen=True)
class TrainFit:
    """The fit term of the train batch `batch` at θ as the look-ahead computed it: Σ −log σ(x) over its
    `size` triples (`loss_sum`), and ∇ of the mean loss on the rows it touches, each row once —
    `user_ids` with `user_rows` and occurrence counts `user_counts`, the same for items, and the item
    bias's gradient on those items (None without one). The model step on the same batch at the same θ
    (λOpt takes its λ step first: θ has not moved) needs exactly this; it adds the penalty's gradient
    under the new λ (`CompiledBPRStep.step_from_fit`) instead of a second pass over the triples."""

    batch: tuple
    size: int
    loss_sum: float
    user_ids: np.ndarray
    user_rows: np.ndarray
    user_counts: np.ndarray
    item_ids: np.ndarray
    item_rows: np.ndarray
    item_counts: np.ndarray
    bias_rows: np.ndarray | None


class CompiledLookahead:
    """The one-step λ hypergradient of a dot-product MF under BPR through the kernel above. `applies`
    says when it can stand in for `hypergrad.one_step_hypergrad`; the result is the same (tested)."""

    def __init__(self, model):
        self.slot_P = np.full(model.n_users, -1, np.int64)
        self.slot_Q = np.full(model.n_items, -1, np.int64)
        self.zeros: dict[tuple, np.ndarray] = {}  # stand-ins for optimizer state not created yet (read-only)
        self.last_fit: TrainFit | None = None  # the train batch's fit at θ, from the last call
        # NumPy views of the tables, their optimizer state and λ, kept between steps (kernels.KeptViews)
        self.kept = KeptViews()

    @staticmethod
    def applies(model, kind: str, hp: dict) -> bool:
        """A dot-product model on CPU tables of one float dtype, gathered densely, looking ahead through plain
        SGD (no momentum) or Adam (amsgrad or not), neither with weight decay."""
        tables = [t for t in (model.user_embedding, model.item_embedding, model.item_bias) if t is not None]
        if not (model.dot_scores and not model.sparse_grad and all(t.device.type == "cpu" for t in tables)
                and len({t.dtype for t in tables}) == 1 and tables[0].dtype in (torch.float32, torch.float64)):
            return False
        if hp.get("weight_decay", 0.0) or hp.get("maximize", False):
            return False
        return kind == "adam" or (kind == "sgd" and not hp.get("momentum", 0.0))

    def _constants(self, kind: str, hp: dict, steps_taken: float, batch_size: int, dtype) -> np.ndarray:
        c = np.zeros(10, dtype)
        c[TWO_OVER_B], c[ONE], c[HALF] = 2.0 / batch_size, 1.0, 0.5
        if kind == "adam":
            step = steps_taken + 1
            beta1, beta2 = (float(b) for b in hp["betas"])
            c[STEP] = float(hp["lr"]) / (1 - beta1 ** step)
            c[ONE_MINUS_BETA1], c[BETA2], c[ONE_MINUS_BETA2] = 1 - beta1, beta2, 1 - beta2
            c[EPS], c[CORRECTION2] = float(hp["eps"]), (1 - beta2 ** step) ** 0.5
        else:
            c[STEP] = float(hp["lr"])
        return c

    def _state(self, optimizer, param, table: np.ndarray, kind: str, name: str) -> tuple[float, tuple]:
        """(the steps the optimizer has taken on `param`, its Adam buffers as arrays — zeros for one it has not
        made yet). The step count is read through a kept NumPy view of torch's step tensor: `float()` of the
        tensor is a torch op, ~10–20 µs right after a table-sized pass (kernels.KeptViews)."""
        state = optimizer.state.get(param, {})
        if kind != "adam":
            return 0.0, (table, table, table)  # never read
        count = state.get("step")
        counter = torch.is_tensor(count)  # torch's (a float32 tensor); a plain number is read as it is

        def views():
            buffers = []
            for key in STATE_KEYS:
                if state.get(key) is not None:
                    buffers.append(state[key].detach().numpy())
                else:
                    if table.shape not in self.zeros:
                        self.zeros[table.shape] = np.zeros(table.shape, table.dtype)
                    buffers.append(self.zeros[table.shape])
            return tuple(buffers), (count.detach().numpy().reshape(1) if counter else None)

        buffers, step = self.kept(name, tuple(state.get(key) for key in STATE_KEYS) + ((count,) if counter else ()),
                                  views)
        return float(step[0]) if counter else float(count or 0.0), buffers

    def __call__(self, model, optimizer, kind: str, hp: dict, lam, train, valid) -> tuple[float, dict]:
        """(L_val(θ'), {role: (row ids, h of those rows)}): the hypergradient `one_step_hypergrad` gives, per
        touched row, each row once (regularizers/lambda_step.py takes it to λ's shape).
        `optimizer`: whose state the look-ahead starts from (its `.state` may be empty: plain SGD)."""
        size = train[0].shape[0]  # (len() of a tensor: a Python-level torch call)
        has_bias = model.item_bias is not None
        P, Q, bias = self.kept("tables", (model.user_embedding, model.item_embedding, model.item_bias), lambda: (
            model.user_embedding.detach().numpy(), model.item_embedding.detach().numpy(),
            model.item_bias.detach().numpy() if has_bias else np.zeros(1, model.user_embedding.detach().numpy().dtype)))
        parts = [self._state(optimizer, param, table, kind, name) for param, table, name in
                 ((model.user_embedding, P, "user state"), (model.item_embedding, Q, "item state"),
                  (model.item_bias, bias, "bias state"))]
        constants = [self._constants(kind, hp, steps_taken, size, P.dtype) for steps_taken, _ in parts]
        values = lam.values()
        by_role = [values[lam.param_of_role[role]] for role in ("user", "item")]

        weights = self.kept(  # λ of every entry of P and Q: views where λ has the tables' shape and dtype
            "lambda", tuple(by_role),
            lambda: [w.detach().expand(table.shape).to(model.user_embedding.dtype).contiguous().numpy()
                     for w, table in zip(by_role, (P, Q))],
            views=lambda arrays: all(a.ctypes.data == w.data_ptr() for a, w in zip(arrays, by_role)))
        loss, users, h_users, items, h_items, fit = one_step_sensitivities(
            P, Q, bias, has_bias, *(t.numpy() for t in train), *(t.numpy() for t in valid), *weights,
            kind == "adam", bool(hp.get("amsgrad", False)), *(buffers for _, buffers in parts), *constants,
            self.slot_P, self.slot_Q)
        rows = {"user": (torch.from_numpy(users), torch.from_numpy(h_users)),
                "item": (torch.from_numpy(items), torch.from_numpy(h_items))}
        fit_sum, fit_P, counts_P, fit_Q, counts_Q, fit_bias = fit
        self.last_fit = TrainFit(train, size, fit_sum, users[:len(fit_P)], fit_P, counts_P, items[:len(fit_Q)], fit_Q,
                                 counts_Q, fit_bias if has_bias else None)
        return float(P.dtype.type(loss)), rows  # the loss rounded to the tables' dtype, as the tensor path's
