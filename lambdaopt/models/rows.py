"""One gather per factor table per step, shared by the fit loss and the penalty.

Gathering the rows a batch touches separately for the scores and for the penalty costs, in the
backward pass, one full-table zero fill + scatter + accumulation per gather; on an ML-100K-sized MF
step that was over half the time. `score_and_rows` gathers each table once (`index_select`, whose
backward is a single `index_add`) and scores from those rows when the model can
(`model.score_rows`), so both terms of the loss read the same tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

# {table parameter name: (role "user"/"item", row ids per occurrence, the gathered rows (len(ids) × …))}
Rows = dict[str, tuple[str, torch.Tensor, torch.Tensor]]


def gather(table: torch.Tensor, ids: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """Rows `ids` of `table`. With `sparse` the table's gradient is a sparse tensor of those rows only
    (what torch.optim.SparseAdam updates), not a dense table of zeros."""
    return F.embedding(ids, table, sparse=True) if sparse else table.index_select(0, ids)


def gather_rows(model, users: torch.Tensor, items: torch.Tensor) -> Rows:
    """The factor rows `model.factor_rows(users, items)` names, gathered (in the autograd graph),
    with sparse gradients under `model.sparse_grad` (set for optimizer=sparse_adam)."""
    if not hasattr(model, "factor_rows"):
        return {}
    sparse = getattr(model, "sparse_grad", False)
    return {name: (role, ids, gather(getattr(model, name), ids, sparse))
            for name, (role, ids) in model.factor_rows(users, items).items()}


def check_sparse_grad(model, regularizer, objective) -> None:
    """optimizer=sparse_adam needs every parameter to be a factor table reached only through
    `gather_rows` (MF without biases), a penalty on those rows alone (none or fixed λ), and a
    minibatch objective (the full-batch completion loss reads the whole matrix)."""
    from lambdaopt.completion.objective import FullBatchMSE
    from lambdaopt.errors import ConfigError
    from lambdaopt.regularizers.fixed import FixedL2, NoRegularizer

    if isinstance(objective, FullBatchMSE):
        raise ConfigError("optimizer=sparse_adam updates the rows of a minibatch and dataset=lowrank trains on the "
                          "full matrix: use optimizer=adam or group_rmsprop")

    empty = torch.zeros(0, dtype=torch.long)
    tables = set(model.factor_rows(empty, empty)) if hasattr(model, "factor_rows") else set()
    others = sorted(set(dict(model.named_parameters())) - tables)
    if others:
        raise ConfigError(f"optimizer=sparse_adam updates factor-table rows only and {type(model).__name__} also has "
                          f"{', '.join(others)}: use model=mf without biases, or optimizer=adam")
    if type(regularizer) not in (NoRegularizer, FixedL2):
        raise ConfigError(f"optimizer=sparse_adam works with regularizer=none or fixed, not "
                          f"{type(regularizer).__name__}: use optimizer=adam")


def score_blocks(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores of `items` (len k·len(users): each user scores k items, block by block). Models whose
    `score` takes k items per user (`scores_item_blocks`) gather each user row once for all k."""
    repeats = len(items) // max(len(users), 1)
    if repeats == 1 or getattr(model, "scores_item_blocks", False):
        return model.score(users, items)
    return model.score(users.repeat(repeats), items)


def score_and_rows(model, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, Rows]:
    """Scores of `items` (len k·len(users): each user scores k items, block by block) and the gathered rows.

    With `model.score_rows` the scores come from the gathered rows themselves; other models score
    through `model.score` and their rows are gathered beside it."""
    rows = gather_rows(model, users, items)
    if hasattr(model, "score_rows"):
        return model.score_rows(rows, users, items), rows
    return score_blocks(model, users, items), rows
