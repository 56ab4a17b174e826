"""Deep (linear) matrix factorization: the end-to-end matrix W = W_N ⋯ W_2 W_1 (Arora et al. 2019)."""
from __future__ import annotations

from typing import Annotated, List, Optional

import torch
from torch import nn

from lambdaopt.config.checks import one_of, optional_positive_list, positive
from lambdaopt.errors import ConfigError
from lambdaopt.models.base import Recommender
from lambdaopt.registry import MODELS

INITS = ("gaussian", "identity", "orthogonal")


def _factor_init(shape: tuple[int, int], init: str, scale: float, depth: int) -> torch.Tensor:
    """One factor of shape (d_out, d_in), scaled by s^{1/N} so the product of N factors has
    ‖W‖_F ≈ s·√n (gaussian; exactly s·√min(n, m) for identity, s·√n for square orthogonal).

    gaussian:   entries N(0, s^{2/N} / d_in) — each factor preserves E‖x‖² up to s^{2/N}·d_out/d_in,
                so E‖W‖_F² = s² · n for the n × m product (the reference's N(0, (s^{1/N}/√n)²) when square).
    identity:   s^{1/N} · I (rectangular eye).
    orthogonal: s^{1/N} · Q, Q with orthonormal rows or columns (torch.nn.init.orthogonal_).
    """
    d_out, d_in = shape
    per_factor = scale ** (1.0 / depth)
    if init == "gaussian":
        return torch.randn(d_out, d_in) * (per_factor / d_in ** 0.5)
    if init == "identity":
        return torch.eye(d_out, d_in) * per_factor
    return nn.init.orthogonal_(torch.empty(d_out, d_in)) * per_factor


@MODELS.register("deep_mf")
class DeepMatrixFactorization(Recommender):
    """W = W_N ⋯ W_1 ∈ R^{n_users × n_items}, no biases, no nonlinearity.

    Shapes: W_1 = item_factorᵀ (d_1 × m), W_k = hidden[k−2] (d_k × d_{k−1}) for 2 ≤ k ≤ N−1,
    W_N = user_factor (n × d_{N−1}). Storing the outer factors as a user table (n × d) and an item
    table (m × d) makes a row of each belong to one user / item, so the row-penalty regularizers
    (fixed λ, learned λ) apply to them unchanged; inner factors are only reachable through
    `optimizer.weight_decay`. depth 1 is W itself, kept as `user_factor` (n × m).

    `hidden_sizes` (d_1, ..., d_{N−1}) default to min(n, m) each (n × n factors on a square problem):
    wide enough that depth alone, not width, limits the rank.
    """

    display_name = "deep MF"
    product_of_factors = True  # completion steps take the closed-form gradient (tasks/completion_step.py)

    def __init__(self, n_users: int, n_items: int, depth: Annotated[int, positive()] = 3,
                 hidden_sizes: Annotated[Optional[List[int]], optional_positive_list()] = None,  # None: min(n, m) each
                 init: Annotated[str, one_of(*INITS)] = "gaussian", init_scale: Annotated[float, positive()] = 1e-3,
                 sparse_grad: bool = False):
        super().__init__(n_users, n_items, sparse_grad)
        widths = list(hidden_sizes) if hidden_sizes else [min(n_users, n_items)] * (depth - 1)
        if len(widths) != depth - 1:
            raise ConfigError(f"model.hidden_sizes has {len(widths)} entries but depth {depth} needs {depth - 1}")
        self.depth = depth
        dims = [n_items, *widths, n_users]  # d_0 = m, ..., d_N = n
        factors = [_factor_init((dims[k + 1], dims[k]), init, init_scale, depth) for k in range(depth)]
        if depth == 1:
            self.user_factor = nn.Parameter(factors[0])
            self.item_factor = None
        else:
            self.item_factor = nn.Parameter(factors[0].T.contiguous())
            self.user_factor = nn.Parameter(factors[-1])
        self.hidden = nn.ParameterList([nn.Parameter(f) for f in factors[1:-1]])

    def factors(self) -> list[torch.Tensor]:
        """[W_N, ..., W_1], left to right as they multiply."""
        if self.item_factor is None:
            return [self.user_factor]
        return [self.user_factor, *reversed(list(self.hidden)), self.item_factor.T]

    def factor_parameters(self) -> list[nn.Parameter]:
        """The parameters behind `factors()`, in that order; the last (the item table) stores W_1ᵀ."""
        items = [self.item_factor] if self.item_factor is not None else []
        return [self.user_factor, *reversed(list(self.hidden)), *items]

    def set_factor_grads(self, grads: list[torch.Tensor]) -> None:
        """Set each parameter's `.grad` from the gradients of `factors()`, in that order."""
        if self.item_factor is None:
            self.user_factor.grad = grads[0]
            return
        self.user_factor.grad, self.item_factor.grad = grads[0], grads[-1].T.contiguous()
        for layer, grad in zip(reversed(list(self.hidden)), grads[1:-1]):
            layer.grad = grad

    def matrix(self) -> torch.Tensor:
        """The end-to-end matrix W, (n_users × n_items). multi_dot picks the cheapest bracketing."""
        factors = self.factors()
        return factors[0] if len(factors) == 1 else torch.linalg.multi_dot(factors)

    def entity_tables(self) -> dict[str, str]:
        """The outer factors: a row per user / per item (learned λ regularizes these rows)."""
        return {"user_factor": "user", **({"item_factor": "item"} if self.item_factor is not None else {})}

    def factor_rows(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, tuple[str, torch.Tensor]]:
        rows = {"user_factor": ("user", users)}
        if self.item_factor is not None:
            rows["item_factor"] = ("item", items)
        return rows

    def _user_rows(self, users: torch.Tensor) -> torch.Tensor:
        """e_uᵀ W_N ⋯ W_2 for each user, (B × d_1): the batch never forms the full n × m matrix."""
        rows = self.user_factor[users]
        for layer in reversed(list(self.hidden)):
            rows = rows @ layer
        return rows

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """W[u, i] for parallel vectors of users and items, shape (B,)."""
        if self.item_factor is None:
            return self.user_factor[users, items]
        return (self._user_rows(users) * self.item_factor[items]).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """W[u, :], shape (len(users), n_items)."""
        if self.item_factor is None:
            return self.user_factor[users]
        return self._user_rows(users) @ self.item_factor.T
