"""One gather per factor table per step, shared by the fit loss and the penalty.

Gathering the rows a batch touches separately for the scores and for the penalty costs, in the
backward pass, one full-table zero fill + scatter + accumulation per gather; on an ML-100K-sized MF
step that was over half the time. `score_and_rows` gathers each table once (`index_select`, whose
backward is a single `index_add`) and scores from those rows (`model.score_rows`), so both terms of
the loss read the same tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from lambdaopt.contracts import FactorModel, Rows


def gather(table: torch.Tensor, ids: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """Rows `ids` of `table`. With `sparse` the table's gradient is a sparse tensor of those rows only
    (what torch.optim.SparseAdam updates), not a dense table of zeros."""
    return F.embedding(ids, table, sparse=True) if sparse else table.index_select(0, ids)


def gather_rows(model: FactorModel, users: torch.Tensor, items: torch.Tensor) -> Rows:
    """The factor rows `model.factor_rows(users, items)` names, gathered (in the autograd graph),
    with sparse gradients when the model was built with `sparse_grad` (optimizer=sparse_adam)."""
    return {name: (role, ids, gather(getattr(model, name), ids, model.sparse_grad))
            for name, (role, ids) in model.factor_rows(users, items).items()}


def check_sparse_grad(model: FactorModel, regularizer) -> None:
    """optimizer=sparse_adam needs every parameter to be a factor table reached only through
    `gather_rows` (MF without biases) and a penalty on those rows alone (`supports_sparse_rows`)."""
    from lambdaopt.errors import ConfigError

    empty = torch.zeros(0, dtype=torch.long)
    others = sorted(set(dict(model.named_parameters())) - set(model.factor_rows(empty, empty)))
    if others:
        raise ConfigError(f"optimizer=sparse_adam updates factor-table rows only and {type(model).__name__} also has "
                          f"{', '.join(others)}: use model=mf without biases, or optimizer=adam")
    if not regularizer.supports_sparse_rows:
        raise ConfigError(f"optimizer=sparse_adam works with a penalty on the batch's rows only (regularizer=none, "
                          f"fixed, l1), not {type(regularizer).__name__}: use optimizer=adam")


def score_blocks(model, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores of `items` (len k·len(users): each user scores k items, block by block). Models whose
    `score` takes k items per user (`scores_item_blocks`) gather each user row once for all k."""
    repeats = len(items) // max(len(users), 1)
    if repeats == 1 or model.scores_item_blocks:
        return model.score(users, items)
    return model.score(users.repeat(repeats), items)


def score_and_rows(model: FactorModel, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, Rows]:
    """Scores of `items` (len k·len(users): each user scores k items, block by block) and the gathered
    rows; the scores come from those rows when the model can (`score_rows`; the default scores
    through `model.score` beside them)."""
    rows = gather_rows(model, users, items)
    return model.score_rows(rows, users, items), rows
