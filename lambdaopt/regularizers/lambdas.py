"""Learnable regularization strengths λ at every granularity of the λOpt paper.

A granularity says, for the user table P (|U|×d) and the item table Q (|I|×d), which λ tensor
scales each squared embedding entry. Shapes (d = embedding dim):

    global      one (1,) shared by users and items
    d           one (d,) shared by users and items            (the paper's "D")
    double_d    user (d,)      + item (d,)
    user        user (|U|, 1)  + item (1,)
    item        user (1,)      + item (|I|, 1)
    user_item   user (|U|, 1)  + item (|I|, 1)
    du          user (|U|, d)  + item (d,)                     ("DU")
    di          user (d,)      + item (|I|, d)                 ("DI")
    dui         user (|U|, d)  + item (|I|, d)                 ("DUI": one λ per embedding scalar)

For `user` and `item` the other side gets one learned scalar so every entry stays regularized.
λ ≥ 0 is kept by projection (`clamp`, the paper's choice) or by a parametrization λ = softplus(ρ)
or λ = exp(ρ) of an unconstrained ρ (these need a positive initial λ).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from lambdaopt.errors import ConfigError
from lambdaopt.models.rows import gather

# granularity → (user λ kind, item λ kind); kind: "scalar", "dim", "entity", "entity_dim"; "shared_*" ties both
GRANULARITIES = {
    "global": ("shared_scalar", "shared_scalar"),
    "d": ("shared_dim", "shared_dim"),
    "double_d": ("dim", "dim"),
    "user": ("entity", "scalar"),
    "item": ("scalar", "entity"),
    "user_item": ("entity", "entity"),
    "du": ("entity_dim", "dim"),
    "di": ("dim", "entity_dim"),
    "dui": ("entity_dim", "entity_dim"),
}


def lambda_shape(kind: str, n_entities: int, dim: int) -> tuple[int, ...]:
    return {"scalar": (1,), "shared_scalar": (1,), "dim": (dim,), "shared_dim": (dim,),
            "entity": (n_entities, 1), "entity_dim": (n_entities, dim)}[kind]


class LambdaTables(nn.Module):
    """The λ parameters for one model. `raw[name]` is what the λ optimizer updates; `values()` maps
    raw → λ (identity for clamp, softplus or exp otherwise); `for_rows(role, rows)` gives the λ that
    multiplies the squared entries of those rows, broadcastable to (len(rows), d)."""

    def __init__(self, granularity: str, n_users: int, n_items: int, dim: int,
                 init: float = 0.0, nonneg: str = "clamp"):
        super().__init__()
        if granularity not in GRANULARITIES:
            raise ConfigError(f"regularizer.granularity={granularity!r} is unknown: use one of "
                              + ", ".join(GRANULARITIES))
        if nonneg not in ("clamp", "softplus", "exp"):
            raise ConfigError(f"regularizer.nonneg={nonneg!r} is unknown: use clamp, softplus or exp")
        if nonneg != "clamp" and init <= 0:
            raise ConfigError(f"regularizer.nonneg={nonneg} cannot represent λ = {init}: "
                              "use regularizer.init > 0 (e.g. 1e-3) or nonneg=clamp")
        self.granularity, self.nonneg = granularity, nonneg
        raw_init = {"clamp": init, "softplus": math.log(math.expm1(init)) if init > 0 else 0.0,
                    "exp": math.log(init) if init > 0 else 0.0}[nonneg]
        self.raw = nn.ParameterDict()
        self.param_of_role: dict[str, str] = {}
        for role, kind, n in (("user", GRANULARITIES[granularity][0], n_users),
                              ("item", GRANULARITIES[granularity][1], n_items)):
            name = "shared" if kind.startswith("shared") else role
            self.param_of_role[role] = name
            if name not in self.raw:
                self.raw[name] = nn.Parameter(torch.full(lambda_shape(kind, n, dim), float(raw_init)))
        self.per_entity = {role: self.raw[name].dim() == 2 for role, name in self.param_of_role.items()}

    def transform(self, raw: torch.Tensor) -> torch.Tensor:
        if self.nonneg == "softplus":
            return F.softplus(raw)
        if self.nonneg == "exp":
            return torch.exp(raw)
        return raw

    def values(self, raw: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        """{param name: λ} from the module's raw parameters or from a given raw dict (torch.func)."""
        raw = dict(self.raw) if raw is None else raw
        return {name: self.transform(tensor) for name, tensor in raw.items()}

    sparse_rows = False  # True: per-entity λ rows are gathered with sparse gradients (λ optimizer sparse_adam)

    def for_rows(self, role: str, rows: torch.Tensor, values: dict[str, torch.Tensor]) -> torch.Tensor:
        lam = values[self.param_of_role[role]]
        return gather(lam, rows, self.sparse_rows) if self.per_entity[role] else lam

    def penalty(self, terms, values: dict[str, torch.Tensor], batch_size: int) -> torch.Tensor:
        """Ω = Σ_terms Σ_rows count · λ ⊙ θ_row² / B for terms (θ rows, role, entity id of each row, count of
        each row or None for 1): the training step passes one row per occurrence in the batch, the λ
        look-ahead each distinct row once with its number of occurrences — the same sum. The one
        definition both use, so their scaling cannot drift."""
        total = 0.0
        for rows, role, entities, counts in terms:
            weight = self.for_rows(role, entities, values)
            if counts is not None:
                weight = weight * counts.unsqueeze(-1)
            total = total + (weight * rows * rows).sum()
        return total / batch_size

    def penalty_grad(self, rows, role, entities, counts, values, batch_size: int) -> torch.Tensor:
        """∂Ω/∂θ for one term of `penalty`: 2 · count · λ ⊙ θ / B, row by row."""
        return (2.0 / batch_size) * counts.unsqueeze(-1) * self.for_rows(role, entities, values) * rows

    @torch.no_grad()
    def project_(self) -> None:
        """Projection onto λ ≥ 0 after each λ step (only needed for the clamp parametrization)."""
        if self.nonneg == "clamp":
            for tensor in self.raw.values():
                tensor.clamp_(min=0.0)

    @torch.no_grad()
    def role_values(self, role: str) -> torch.Tensor:
        """λ for one role as stored (shape per the table above), detached."""
        return self.values()[self.param_of_role[role]].detach()
