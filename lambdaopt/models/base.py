"""The base class of every trained model: the `contracts.FactorModel` methods with their defaults."""
from __future__ import annotations

import torch
from torch import nn


class Recommender(nn.Module):
    """Subclasses implement `score` and `score_all`; models with per-user/per-item tables also override
    `entity_tables` and `factor_rows` (and `score_rows` when they can score from gathered rows, which
    saves a second gather per step: models/rows.py). `sparse_grad` (optimizer=sparse_adam) is passed
    to the constructor by the experiment, never set afterwards."""

    scores_item_blocks = False
    # s(u, i) = ⟨user_embedding[u], item_embedding[i]⟩ (+ item_bias[i], + user_bias[u]; either may be None)
    # and those are all its parameters: BPR's gradient then has a closed form (tasks/bpr_step.py)
    dot_scores = False
    # W = ∏ factors() (matrix products, no nonlinearity), with set_factor_grads: full-batch completion
    # steps take the gradient in closed form (tasks/completion_step.py)
    product_of_factors = False
    display_name = ""  # in run names and report rows ("MF"); the class name when empty

    def __init__(self, n_users: int, n_items: int, sparse_grad: bool = False):
        super().__init__()
        self.n_users, self.n_items, self.sparse_grad = n_users, n_items, sparse_grad

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """So torch.func.functional_call(model, params, (users, items)) scores pairs."""
        return self.score(users, items)

    def entity_tables(self) -> dict[str, str]:
        return {}

    def factor_rows(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, tuple[str, torch.Tensor]]:
        return {}

    def score_rows(self, rows, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Default: score through `score` (the rows are gathered beside it for the penalty)."""
        from lambdaopt.models.rows import score_blocks

        return score_blocks(self, users, items)

    def matrix(self) -> torch.Tensor:
        """Default: every user's row through `score_all`."""
        return self.score_all(torch.arange(self.n_users, device=next(self.parameters()).device))


class SolvedModel(Recommender):
    """A model computed once by `solve(data)` instead of trained (model=nuclear_norm): the experiment
    calls the task's `solve` for these and builds no training loop."""

    def solve(self, data) -> dict[str, float]:
        raise NotImplementedError
