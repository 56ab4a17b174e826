"""One global λ on the absolute values of the rows in the batch (lasso-style, sparse factors)."""
from __future__ import annotations

from typing import Annotated

from lambdaopt.config.checks import non_negative
from lambdaopt.registry import REGULARIZERS
from lambdaopt.regularizers.base import Regularizer


@REGULARIZERS.register("l1")
class L1(Regularizer):
    """Ω = λ · Σ_{rows r touched by the batch} ‖θ_r‖₁ / B, scaled like the fixed L2 penalty (fixed.py).

    Its (sub)gradient λ·sign(θ)/B has the same size for small and large entries, so it pushes small
    factor entries to zero rather than shrinking all of them in proportion, as L2 does.
    """

    supports_sparse_rows = True  # reads only the gathered rows
    closed_form_gradient = True  # add_rows_gradient below: MF-BPR steps skip autograd (tasks/bpr_step.py)
    tuned_keys = ("lam",)  # a report selects λ per seed on validation, like fixed λ
    label = "λL1"  # report rows and legends: "MF-λL1"

    def __init__(self, lam: Annotated[float, non_negative()] = 1e-4):
        super().__init__()
        self.lam = lam

    @classmethod
    def run_label(cls, params):
        return f"L1 λ={float(params['lam']):g}"

    def penalty(self, model, rows, batch_size, batch=None):
        return self.lam * sum(values.abs().sum() for _, _, values in rows.values()) / batch_size

    def add_rows_gradient(self, grad, role, ids, values, batch_size, scale):
        grad.add_(values.sign(), alpha=scale * self.lam / batch_size)  # autograd's subgradient too: 0 at 0

    def metrics(self):
        return {"lambda": self.lam}
