"""NeuMF (He et al., WWW 2017): a GMF tower and an MLP tower over user/item embeddings, fused.

    s(u, i) = wᵀ [ p_u^G ⊙ q_i^G ;  MLP([p_u^M ; q_i^M]) ] + b

Trained here with BPR like every ranking model of the framework (pairwise, so the same sampler and
full-ranking evaluation apply; the paper's pointwise BCE with sampled negatives is not used).
"""
from __future__ import annotations

from typing import Annotated, List

import torch
from torch import nn

from lambdaopt.config.checks import non_negative, positive, positive_list
from lambdaopt.models.base import Recommender
from lambdaopt.registry import MODELS


@MODELS.register("neumf")
class NeuMF(Recommender):
    def __init__(self, n_users: int, n_items: int, dim: Annotated[int, positive()] = 32,
                 mlp_dim: Annotated[int, positive()] = 32, layers: Annotated[List[int], positive_list()] = (64, 32, 16),
                 dropout: Annotated[float, non_negative()] = 0.0, init_std: Annotated[float, positive()] = 0.01,
                 max_pairs: Annotated[int, positive()] = 2 ** 18, sparse_grad: bool = False):
        super().__init__(n_users, n_items, sparse_grad)
        self.dim = dim
        self.user_embedding = nn.Parameter(torch.randn(n_users, dim) * init_std)  # GMF tower
        self.item_embedding = nn.Parameter(torch.randn(n_items, dim) * init_std)
        self.user_mlp_embedding = nn.Parameter(torch.randn(n_users, mlp_dim) * init_std)
        self.item_mlp_embedding = nn.Parameter(torch.randn(n_items, mlp_dim) * init_std)
        blocks, width = [], 2 * mlp_dim
        for size in layers:
            blocks += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)]
            width = size
        self.mlp = nn.Sequential(*blocks)
        self.output = nn.Linear(dim + width, 1)
        self.max_pairs = max_pairs  # (user, item) pairs through the MLP at once in score_all

    def entity_tables(self) -> dict[str, str]:
        return {"user_embedding": "user", "item_embedding": "item",
                "user_mlp_embedding": "user", "item_mlp_embedding": "item"}

    def factor_rows(self, users, items):
        """Rows the fixed-λ penalty covers: both towers' embeddings (the MLP weights are not penalized)."""
        return {"user_embedding": ("user", users), "item_embedding": ("item", items),
                "user_mlp_embedding": ("user", users), "item_mlp_embedding": ("item", items)}

    def _fuse(self, gmf: torch.Tensor, user_mlp: torch.Tensor, item_mlp: torch.Tensor) -> torch.Tensor:
        hidden = self.mlp(torch.cat([user_mlp, item_mlp], dim=-1))
        return self.output(torch.cat([gmf, hidden], dim=-1)).squeeze(-1)

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        gmf = self.user_embedding[users] * self.item_embedding[items]
        return self._fuse(gmf, self.user_mlp_embedding[users], self.item_mlp_embedding[items])

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """(len(users), n_items), built from item chunks so the MLP input stays bounded in memory."""
        out, step = [], max(1, self.max_pairs // max(len(users), 1))
        for start in range(0, self.n_items, step):
            items = torch.arange(start, min(start + step, self.n_items), device=users.device)
            n_u, n_i = len(users), len(items)
            gmf = self.user_embedding[users][:, None, :] * self.item_embedding[items][None, :, :]
            user_mlp = self.user_mlp_embedding[users][:, None, :].expand(n_u, n_i, -1)
            item_mlp = self.item_mlp_embedding[items][None, :, :].expand(n_u, n_i, -1)
            out.append(self._fuse(gmf, user_mlp, item_mlp))
        return torch.cat(out, dim=1)
