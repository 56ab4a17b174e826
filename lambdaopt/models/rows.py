"""One gather per factor table per step, shared by the fit loss and the penalty.

Gathering the rows a batch touches separately for the scores and for the penalty costs, in the
backward pass, one full-table zero fill + scatter + accumulation per gather; on an ML-100K-sized MF
step that was over half the time. `score_and_rows` gathers each table once (`index_select`, whose
backward is a single `index_add`) and scores from those rows when the model can
(`model.score_rows`), so both terms of the loss read the same tensors.
"""
from __future__ import annotations

import torch

# {table parameter name: (role "user"/"item", row ids per occurrence, the gathered rows (len(ids) × …))}
Rows = dict[str, tuple[str, torch.Tensor, torch.Tensor]]


def gather_rows(model, users: torch.Tensor, items: torch.Tensor) -> Rows:
    """The factor rows `model.factor_rows(users, items)` names, gathered (in the autograd graph)."""
    if not hasattr(model, "factor_rows"):
        return {}
    return {name: (role, ids, getattr(model, name).index_select(0, ids))
            for name, (role, ids) in model.factor_rows(users, items).items()}


def score_and_rows(model, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, Rows]:
    """Scores of `items` (len k·len(users): each user scores k items, block by block) and the gathered rows.

    With `model.score_rows` the scores come from the gathered rows themselves; other models score
    through `model.score` and their rows are gathered beside it."""
    rows = gather_rows(model, users, items)
    if hasattr(model, "score_rows"):
        return model.score_rows(rows, users, items), rows
    repeats = len(items) // max(len(users), 1)
    return model.score(users.repeat(repeats) if repeats > 1 else users, items), rows
