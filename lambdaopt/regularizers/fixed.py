"""No penalty, and one global λ on the rows in the batch (MF-BPR with fixed λ)."""
from __future__ import annotations

from typing import Annotated

import torch

from lambdaopt.config.checks import non_negative
from lambdaopt.registry import REGULARIZERS
from lambdaopt.regularizers.base import Regularizer
from lambdaopt.regularizers.norms import sum_of_squares


@REGULARIZERS.register("none")
class NoRegularizer(Regularizer):
    supports_sparse_rows = True
    closed_form_gradient = True
    reads_rows = False
    label = "noReg"

    @classmethod
    def run_label(cls, params):
        return "no penalty"

    def penalty(self, model, rows, batch_size, batch=None):
        return torch.zeros((), device=next(model.parameters()).device)

    def add_rows_gradient(self, grad, role, ids, values, batch_size, scale):
        pass

    def l2_weights(self):
        if not hasattr(self, "_zeros"):  # kept, as FixedL2 keeps its λ tensor
            self._zeros = {"user": torch.zeros(()), "item": torch.zeros(())}
        return self._zeros


@REGULARIZERS.register("fixed")
class FixedL2(Regularizer):
    """Ω = λ · Σ_{rows r touched by the batch} ‖θ_r‖² / B — the λOpt reference's penalty.

    A row appears once per occurrence in the batch (p_u for each triple, q_i and q_j each), so busy
    users and items are penalized more often, in proportion to how often they are trained. This differs
    from `optimizer.weight_decay`, which adds wd·θ to the gradient of *every* row at every step
    (sampled or not) and, inside Adam, is rescaled by the adaptive step size.
    """

    supports_sparse_rows = True
    closed_form_gradient = True
    tuned_keys = ("lam",)
    label = "λFix"

    def __init__(self, lam: Annotated[float, non_negative()] = 5e-3):
        super().__init__()
        self.lam = lam

    @classmethod
    def run_label(cls, params):
        return f"fixed λ={float(params['lam']):g}"

    def penalty(self, model, rows, batch_size, batch=None):
        total = sum(sum_of_squares(values) for _, _, values in rows.values())
        return self.lam * total / batch_size

    def add_rows_gradient(self, grad, role, ids, values, batch_size, scale):
        grad.add_(values, alpha=scale * 2 * self.lam / batch_size)  # ∂/∂θ_r of λ‖θ_r‖²/B, per occurrence

    def l2_weights(self):
        # one tensor per value of λ, kept: the compiled step reads it through a NumPy view it keeps too
        # (tasks/bpr_kernel.py), instead of a new tensor and view at every step
        if getattr(self, "_weights", (None,))[0] != self.lam:
            lam = torch.tensor(float(self.lam))
            self._weights = (self.lam, {"user": lam, "item": lam})
        return self._weights[1]

    def metrics(self):
        return {"lambda": self.lam}
