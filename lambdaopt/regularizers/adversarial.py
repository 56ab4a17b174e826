"""AMF / APR (He et al., SIGIR 2018): adversarial perturbations of the embeddings as a regularizer.

For a batch, the perturbation of every touched embedding row r is the fast-gradient direction

    Δ_r = ε · ∇_{Δ_r} L_BPR(θ + Δ) / ‖∇_{Δ_r} L_BPR(θ + Δ)‖   at Δ = 0   (so ‖Δ_r‖ ≤ ε),

and the training loss gains  reg_adv · L_BPR(θ + Δ)  (Δ held constant) plus the usual batch L2
penalty λ · Σ‖θ_r‖² / B. APR is normally started from a pre-trained MF (`init_from=<MLflow run id>`).
"""
from __future__ import annotations

from typing import Annotated

import torch
import torch.nn.functional as F
from torch.func import functional_call

from lambdaopt.config.checks import non_negative, positive
from lambdaopt.errors import ConfigError
from lambdaopt.registry import REGULARIZERS
from lambdaopt.regularizers.fixed import FixedL2
from lambdaopt.tasks.ranking import bpr_loss


@REGULARIZERS.register("amf")
class Adversarial(FixedL2):
    supports_sparse_rows = False  # the adversarial term perturbs whole tables
    closed_form_gradient = False  # its penalty is a second BPR loss, through autograd
    feedback = ("implicit",)  # the adversarial term is a BPR loss on the batch's triples
    tuned_keys = ()
    label = "AMF"

    @classmethod
    def run_label(cls, params):
        return cls.label  # not FixedL2's "fixed λ=…"

    def l2_weights(self):
        return None  # not FixedL2's: the adversarial term is part of the penalty

    def __init__(self, lam: Annotated[float, non_negative()] = 1e-2, eps: Annotated[float, positive()] = 0.05,
                 reg_adv: Annotated[float, non_negative()] = 1.0):
        super().__init__(lam)
        self.eps, self.reg_adv = eps, reg_adv

    def setup(self, model, objective) -> None:
        if not model.entity_tables():
            raise ConfigError(f"regularizer=amf perturbs factor tables and {type(model).__name__} has none: use model=mf")

    def perturbation(self, model, batch) -> dict[str, torch.Tensor]:
        """{table name: Δ for every row of the table} (zero outside the batch's rows), ‖Δ_r‖ ≤ ε."""
        users, positives, negatives = batch
        rows = model.factor_rows(users, torch.cat([positives, negatives]))
        zeros = {name: torch.zeros_like(getattr(model, name), requires_grad=True) for name in rows}
        with torch.enable_grad():
            loss = self._bpr(model, batch, {n: getattr(model, n).detach() + z for n, z in zeros.items()})
            grads = torch.autograd.grad(loss, list(zeros.values()))
        return {name: self.eps * F.normalize(g, dim=-1) for name, g in zip(zeros, grads)}

    @staticmethod
    def _bpr(model, batch, params):
        users, positives, negatives = batch
        score = lambda items: functional_call(model, params, (users, items))
        return bpr_loss(score(positives), score(negatives))

    def penalty(self, model, rows, batch_size, batch=None):
        l2 = super().penalty(model, rows, batch_size)
        if batch is None or self.reg_adv == 0:
            return l2
        delta = self.perturbation(model, batch)
        perturbed = {name: getattr(model, name) + d for name, d in delta.items()}
        return l2 + self.reg_adv * self._bpr(model, batch, perturbed)

    def metrics(self):
        return {"lambda": self.lam, "eps": self.eps, "reg_adv": self.reg_adv}
