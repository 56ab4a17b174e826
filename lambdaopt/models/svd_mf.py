"""SVD-parametrized factorization: W = U · diag(σ)^k · Vᵀ with U, V orthogonal by construction."""
from __future__ import annotations

from typing import Annotated, Optional

import torch
from torch import nn
from torch.nn.utils.parametrizations import orthogonal

from lambdaopt.config.checks import optional_positive, positive
from lambdaopt.errors import ConfigError
from lambdaopt.models.base import Recommender
from lambdaopt.registry import MODELS


def _orthonormal_columns(n_rows: int, n_cols: int) -> nn.Module:
    """A bias-free Linear whose `.weight` (n_rows × n_cols, n_rows ≥ n_cols) always has orthonormal
    columns: torch's orthogonal parametrization maps an unconstrained tensor onto the Stiefel
    manifold on every access, so any optimizer step keeps UᵀU = I (up to float rounding)."""
    layer = nn.Linear(n_cols, n_rows, bias=False)
    nn.init.orthogonal_(layer.weight)  # a random orthogonal start, drawn from the global torch seed
    # Cayley map: ~5× cheaper per step on CPU than the default matrix exponential at n = 100.
    return orthogonal(layer, orthogonal_map="cayley")


@MODELS.register("svd_mf")
class SVDMatrixFactorization(Recommender):
    """W = U diag(σ)^k Vᵀ ∈ R^{n_users × n_items}: U (n × r), V (m × r) with orthonormal columns,
    σ ∈ R^r shared, and depth k the power on σ.

    This is the SVD-parametrized fork of the deep-MF reference code: a depth-k product of n × n factors drives the
    singular values as σ_i^k-like dynamics (d σ_i/dt ∝ σ_i^{2 − 2/k} under gradient flow), which
    the power keeps while the singular vectors live on U and V directly. The fork multiplied by a
    random matrix instead of Vᵀ; here Vᵀ is the transpose of the orthogonal V.

    Init: σ_i = s^{1/k} for all i, so W_init = s·U Vᵀ and ‖W_init‖_F = s·√r (= s·√n when square).
    `rank` r defaults to min(n, m); r > min(n, m) cannot have orthonormal U and V and is refused.
    """

    display_name = "SVD MF"

    def __init__(self, n_users: int, n_items: int, depth: Annotated[int, positive()] = 3,
                 init_scale: Annotated[float, positive()] = 1e-3,
                 rank: Annotated[Optional[int], optional_positive()] = None,  # None: min(n, m)
                 sparse_grad: bool = False):
        super().__init__(n_users, n_items, sparse_grad)
        rank = min(n_users, n_items) if rank is None else rank
        if not 1 <= rank <= min(n_users, n_items):
            raise ConfigError(
                f"model.rank={rank} does not fit a {n_users} × {n_items} matrix: svd_mf needs U ({n_users} × r) "
                f"and V ({n_items} × r) with orthonormal columns, so 1 <= r <= {min(n_users, n_items)}"
            )
        self.depth, self.rank = depth, rank
        self.left = _orthonormal_columns(n_users, rank)
        self.right = _orthonormal_columns(n_items, rank)
        self.sigma = nn.Parameter(torch.full((rank,), init_scale ** (1.0 / depth)))

    @property
    def U(self) -> torch.Tensor:
        return self.left.weight

    @property
    def V(self) -> torch.Tensor:
        return self.right.weight

    def scaled_left(self) -> torch.Tensor:
        """U diag(σ)^k, (n × r)."""
        return self.U * self.sigma.pow(self.depth)

    def matrix(self) -> torch.Tensor:
        """W = U diag(σ)^k Vᵀ, (n_users × n_items)."""
        return self.scaled_left() @ self.V.T

    def factor_rows(self, users: torch.Tensor, items: torch.Tensor) -> dict:
        """Nothing for a row penalty: rows of an orthonormal U or V have no meaningful size."""
        return {}

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.U[users] * self.sigma.pow(self.depth) * self.V[items]).sum(-1)

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        return (self.U[users] * self.sigma.pow(self.depth)) @ self.V.T
