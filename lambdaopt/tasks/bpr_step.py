"""The MF-BPR training step with its gradient in closed form instead of through autograd.

For a batch of B triples (u, i, j) of a dot-product model (`Recommender.dot_scores`), with
x = ⟨p_u, q_i − q_j⟩ + b_i − b_j and the batch-mean loss L = (1/B) Σ −log σ(x) (tasks/ranking.py):

    g := ∂L/∂x = −σ(−x) / B
    ∂L/∂p_u = g·(q_i − q_j)      ∂L/∂q_i = g·p_u      ∂L/∂q_j = −g·p_u      ∂L/∂b_i = g      ∂L/∂b_j = −g

and a user bias cancels out of x (its gradient is exactly zero). The penalty adds its own gradient on the
same rows (`Regularizer.add_rows_gradient`; fixed λ: 2λ/B·θ_r). A row that occurs several times in the
batch gets the sum over its occurrences (`index_add_`), as autograd's backward of a gather does.

Why: autograd runs this step as ~25 kernels — broadcast products and their reductions, the penalty's own
backward, a zero-filled table per gather, a dense optimizer pass over both tables — where the closed form
takes ~10 passes over the batch's rows. Measured side by side in bench/peers_speed.py.

The update. With `torch.optim.SGD` without momentum, weight decay or `maximize`, a step changes only the
rows in the batch, by −lr·grad: −lr is folded into g and the penalty's coefficient and the rows are added
in place (a lazy row-wise update; the same step as dense SGD on a gradient that is zero outside the
batch, up to float rounding where a row occurs twice). torch's fused Adam (`optimizer=adam`) on the CPU takes
its step from the compiled loop's gradient buffers (`CompiledAdam`, lambdaopt/compiled_adam.py: the same bits
as `optimizer.step()`, its state in the optimizer), and so does `optimizer=sparse_adam` on the touched rows
(`CompiledSparseAdam`: SparseAdam's arithmetic on the buffers' rows, no COO gradient). Any other optimizer gets
the gradient as `.grad` — dense, or the rows as a sparse COO tensor when the model gathers with `sparse_grad`
(SparseAdam) — and takes its own `step()`, so its state and schedule are the optimizer's as usual.
"""
from __future__ import annotations

import numpy as np
import torch

from lambdaopt.compiled_adam import CompiledAdam, CompiledSparseAdam
from lambdaopt.contracts import Batch
from lambdaopt.errors import ConfigError
from lambdaopt.kernels import compiled_kernels


def lazy_sgd_lr(optimizer: torch.optim.Optimizer) -> bool:
    """True when `optimizer` is plain SGD (one group, no momentum, weight decay or maximize): then a step
    moves only the rows with a non-zero gradient, and can be applied to those rows alone."""
    if type(optimizer) is not torch.optim.SGD or len(optimizer.param_groups) != 1:
        return False
    group = optimizer.param_groups[0]
    return group["momentum"] == 0 and group["weight_decay"] == 0 and not group["maximize"]


def row_gradients(user_table, item_table, item_bias, batch: Batch, scale: float):
    """The formulas above in tensor ops, on the rows the batch gathers: (item ids of the batch, i then j;
    mean fit loss; user rows; item rows; scale·∂L/∂(user rows); scale·∂L/∂(item rows); scale·∂L/∂(item bias
    per item occurrence), None without a bias)."""
    users, positives, negatives = batch
    size, items = len(users), torch.cat([positives, negatives])
    user_rows = user_table.index_select(0, users)
    item_rows = item_table.index_select(0, items)
    difference = item_rows[:size] - item_rows[size:]
    x = torch.linalg.vecdot(user_rows, difference)
    if item_bias is not None:
        bias = item_bias.index_select(0, items)
        x += bias[:size] - bias[size:]
    fit = torch.nn.functional.softplus(-x).mean()
    g = torch.sigmoid(-x).mul_(-scale / size).unsqueeze(1)  # scale·∂L/∂x, one per triple
    user_grad = difference.mul_(g)  # reuses q_i − q_j's buffer
    item_grad = torch.empty_like(item_rows)
    torch.mul(user_rows, g, out=item_grad[:size])
    torch.neg(item_grad[:size], out=item_grad[size:])
    bias_grad = torch.cat([g[:, 0], -g[:, 0]]) if item_bias is not None else None
    return items, fit, user_rows, item_rows, user_grad, item_grad, bias_grad


def dot_bpr_loss_and_grads(params: dict[str, torch.Tensor], batch: Batch) -> tuple[torch.Tensor, dict]:
    """The mean BPR loss of a dot-product model whose parameters are `params` (user_embedding,
    item_embedding, and item_bias / user_bias when it has them; the batch's ids index their rows) and its
    gradient for every entry of `params` (zero where the batch does not reach), by the formulas above —
    what λOpt's look-ahead needs twice per step (regularizers/hypergrad.py `loss_grads`)."""
    users, positives, negatives = batch
    kernels = compiled_kernels("bpr_kernel")
    if (kernels is not None and params["user_embedding"].device.type == "cpu"
            and all(p.dtype == torch.float32 and p.is_contiguous() for p in params.values())):
        return kernels.loss_and_grads({k: v.detach() for k, v in params.items()}, users, positives, negatives)
    with torch.no_grad():
        items, loss, _, _, user_grad, item_grad, bias_grad = row_gradients(
            params["user_embedding"], params["item_embedding"], params.get("item_bias"), batch, 1.0)
        grads = {"user_embedding": torch.zeros_like(params["user_embedding"]).index_add_(0, users, user_grad),
                 "item_embedding": torch.zeros_like(params["item_embedding"]).index_add_(0, items, item_grad)}
        if bias_grad is not None:
            grads["item_bias"] = torch.zeros_like(params["item_bias"]).index_add_(0, items, bias_grad)
        if "user_bias" in params:
            grads["user_bias"] = torch.zeros_like(params["user_bias"])  # cancels out of every x
    return loss, grads


class ClosedFormBPRStep:
    """One training step (the loss as a 0-dim tensor, parameters updated) of a dot-product model
    (`model.dot_scores`) under a penalty with a closed-form row gradient
    (`regularizer.closed_form_gradient`), for any torch optimizer. `BPRObjective.closed_form_step`
    builds it when those hold; the trainer runs it in place of its autograd step."""

    def __init__(self, model, regularizer, optimizer: torch.optim.Optimizer, per_sample: int = 0):
        """per_sample: 0 for one update per batch; B > 0 for per-sample SGD, each triple moved by
        −(lr/B)·its gradient (B the configured batch size, so a short last batch takes the same steps)."""
        self.model, self.regularizer, self.optimizer = model, regularizer, optimizer
        self.lazy_sgd, self.per_sample = lazy_sgd_lr(optimizer), per_sample
        # optimizer=sparse_adam: torch's SparseAdam on the touched rows, from the loops' buffers (compiled_adam.py)
        self.sparse_adam = CompiledSparseAdam.build(optimizer, list(model.parameters())) if model.sparse_grad else None
        self.compiled = self._compiled_loop()
        # torch's fused Adam on the model's tables, stepped from the gradient buffers (compiled_adam.py)
        self.adam = (CompiledAdam.build(optimizer, list(model.parameters()))
                     if self.compiled is not None and not self.lazy_sgd else None)
        if per_sample and (self.compiled is None or not self.lazy_sgd):
            raise ConfigError("trainer.per_sample=true runs plain SGD (optimizer=sgd, no momentum or weight decay) "
                              "as a compiled CPU loop: it needs float32 tables on the CPU, numba, a weighted L2 "
                              "penalty (regularizer=fixed, none or lambdaopt_*) and no optimizer=sparse_adam")

    def _compiled_loop(self):
        """The same step as compiled loops (bpr_kernel.py) where they apply: a weighted L2 penalty
        (`Regularizer.l2_weights`: fixed λ, learned λ, none), float32 tables on the CPU, sparse rows only for a
        plain SparseAdam (`CompiledSparseAdam`; any other optimizer of sparse rows gets its COO gradient from the
        tensor path), and numba importable (a dependency; a platform without its wheels takes the tensor path)."""
        table, kernels = self.model.user_embedding, compiled_kernels("bpr_kernel")
        if (kernels is None or self.regularizer.l2_weights() is None or table.device.type != "cpu"
                or table.dtype != torch.float32 or (self.model.sparse_grad and self.sparse_adam is None)):
            return None
        return kernels.CompiledBPRStep(self.model)

    def __call__(self, batch: Batch) -> torch.Tensor | np.float32:
        """The step on `batch`; its loss — as a NumPy float32 from the compiled SGD and Adam loops (summed by
        `trainer.add_loss` without a torch op), else a 0-dim tensor."""
        size, model = batch[0].shape[0], self.model  # (len() of a tensor: a Python-level torch call)
        if self.compiled is not None:
            weights = self.regularizer.l2_weights()
            # λOpt's look-ahead summed this batch's fit gradient at θ already: the step adds only the penalty's
            shared = self.regularizer.train_fit(batch) if not self.per_sample else None
            if self.lazy_sgd:
                lr = float(self.optimizer.param_groups[0]["lr"])
                if self.per_sample:
                    fit, penalty = self.compiled.per_sample_sgd_step(*batch, weights, lr / self.per_sample)
                elif shared is not None:
                    fit, penalty = self.compiled.step_from_fit(shared, weights, lr=lr)
                else:
                    fit, penalty = self.compiled.sgd_step(*batch, weights, lr)
                return np.float32((fit + penalty) / size)  # no torch op: trainer.add_loss
            if self.sparse_adam is not None:
                fit, penalty = self.compiled.sparse_adam_step(*batch, weights, self.sparse_adam)
                return np.float32((fit + penalty) / size)
            if self.adam is not None:
                if shared is not None:
                    fit, penalty = self.compiled.step_from_fit(shared, weights, adam=self.adam)
                else:
                    fit, penalty = self.compiled.adam_step(*batch, weights, self.adam)
                return np.float32((fit + penalty) / size)  # no torch op: trainer.add_loss
            fit, penalty = self.compiled.gradient(*batch, weights)
            loss = torch.tensor((fit + penalty) / size, dtype=torch.float32)
        else:
            with torch.no_grad():
                loss = self._tensor_step(batch)
            if self.lazy_sgd:
                return loss
        if model.user_bias is not None:
            model.user_bias.grad = torch.zeros_like(model.user_bias)  # what autograd gives it: σ terms cancel
        self.optimizer.step()
        return loss

    def _tensor_step(self, batch: Batch) -> torch.Tensor:
        """The step in tensor ops: under lazy SGD the batch's rows moved, else the tables' `.grad` set."""
        users, size, model = batch[0], len(batch[0]), self.model
        # the step's scale: −lr for a lazy SGD update (folded into g: no extra pass), else 1 (a gradient)
        scale = -float(self.optimizer.param_groups[0]["lr"]) if self.lazy_sgd else 1.0
        items, fit, user_rows, item_rows, user_grad, item_grad, bias_grad = row_gradients(
            model.user_embedding, model.item_embedding, model.item_bias, batch, scale)
        rows = {"user_embedding": ("user", users, user_rows), "item_embedding": ("item", items, item_rows)}
        loss = fit + self.regularizer.penalty(model, rows, size)
        self.regularizer.add_rows_gradient(user_grad, "user", users, user_rows, size, scale)
        self.regularizer.add_rows_gradient(item_grad, "item", items, item_rows, size, scale)
        if self.lazy_sgd:
            model.user_embedding.index_add_(0, users, user_grad)
            model.item_embedding.index_add_(0, items, item_grad)
            if bias_grad is not None:
                model.item_bias.index_add_(0, items, bias_grad)
            return loss
        self._set_grad(model.user_embedding, users, user_grad, model.sparse_grad)
        self._set_grad(model.item_embedding, items, item_grad, model.sparse_grad)
        if bias_grad is not None:
            self._set_grad(model.item_bias, items, bias_grad, False)
        return loss

    @staticmethod
    def _set_grad(table: torch.Tensor, ids: torch.Tensor, rows: torch.Tensor, sparse: bool) -> None:
        if sparse:  # what F.embedding(sparse=True)'s backward gives SparseAdam: the rows, uncoalesced
            table.grad = torch.sparse_coo_tensor(ids.unsqueeze(0), rows, table.shape, check_invariants=False)
        else:
            table.grad = torch.zeros_like(table).index_add_(0, ids, rows)
