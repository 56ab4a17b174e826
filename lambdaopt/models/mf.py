"""Dot-product matrix factorization: s(u, i) = ⟨p_u, q_i⟩ (+ b_u + b_i when enabled)."""
from __future__ import annotations

from typing import Annotated

import torch
from torch import nn

from lambdaopt.config.checks import positive
from lambdaopt.models.base import Recommender
from lambdaopt.registry import MODELS


@MODELS.register("mf")
class MatrixFactorization(Recommender):
    """User table P (n_users × dim) and item table Q (n_items × dim), both N(0, init_std²).

    A small init_std (default 0.01) matters: the λOpt reference's N(0, 1) init made training crawl.
    Biases are optional; note a user bias cancels out of the pairwise BPR loss (it only matters for
    rating regression), and biases are not penalized by the regularizers.
    """

    display_name = "MF"
    dot_scores = True  # BPR steps take the closed-form gradient (tasks/bpr_step.py)

    def __init__(self, n_users: int, n_items: int, dim: Annotated[int, positive()] = 64,
                 init_std: Annotated[float, positive()] = 0.01, user_bias: bool = False, item_bias: bool = True,
                 sparse_grad: bool = False):
        super().__init__(n_users, n_items, sparse_grad)
        self.dim = dim
        self.user_embedding = nn.Parameter(torch.randn(n_users, dim) * init_std)
        self.item_embedding = nn.Parameter(torch.randn(n_items, dim) * init_std)
        self.user_bias = nn.Parameter(torch.zeros(n_users)) if user_bias else None
        self.item_bias = nn.Parameter(torch.zeros(n_items)) if item_bias else None

    def entity_tables(self) -> dict[str, str]:
        """Every per-user / per-item parameter table and its role (rows are indexed by user/item id)."""
        tables = {"user_embedding": "user", "item_embedding": "item"}
        if self.user_bias is not None:
            tables["user_bias"] = "user"
        if self.item_bias is not None:
            tables["item_bias"] = "item"
        return tables

    def factor_rows(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, tuple[str, torch.Tensor]]:
        """Which rows of which factor table a batch touches: {table parameter name: (role, row ids)}.
        Regularizers penalize exactly these rows (role 'user' or 'item' selects the λ shape)."""
        return {"user_embedding": ("user", users), "item_embedding": ("item", items)}

    scores_item_blocks = True  # score(users, items) also takes k items per user (models/rows.py)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """s(u, i) for parallel vectors of users and items, shape (B,); or, with len(items) = k·B, each
        user against k items (block j = the j-th item of every user), p_u gathered once."""
        return self._score(self.user_embedding.index_select(0, users), self.item_embedding.index_select(0, items),
                           users, items)

    def score_rows(self, rows, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores from rows gathered by `models.rows.gather_rows(self, users, items)`; `items` may hold k
        items per user (len k·B, block j = the j-th item of every user): p_u is gathered once for all k."""
        return self._score(rows["user_embedding"][2], rows["item_embedding"][2], users, items)

    def _score(self, user_rows, item_rows, users, items):
        repeats = len(items) // max(len(users), 1)
        scores = (item_rows.view(repeats, len(users), -1) * user_rows).sum(-1).view(-1)
        if self.user_bias is not None:
            scores = scores + self.user_bias[users].repeat(repeats)
        if self.item_bias is not None:
            scores = scores + self.item_bias[items]
        return scores

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """s(u, ·) for every item, shape (len(users), n_items)."""
        scores = self.user_embedding[users] @ self.item_embedding.T
        if self.user_bias is not None:
            scores = scores + self.user_bias[users, None]
        if self.item_bias is not None:
            scores = scores + self.item_bias[None, :]
        return scores
