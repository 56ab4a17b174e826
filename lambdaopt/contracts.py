"""The contracts between the parts of a run, as `typing.Protocol`s: what the trainer, the tasks, the
regularizers and the report may call on a model, an objective and an evaluator.

Nothing here is probed with `hasattr`: every method is part of the contract, and the base classes
(`models.base.Recommender`, the objectives in `tasks/`, the evaluators in `evaluation/`) give the
optional ones their defaults (a model without factor tables returns `{}` from `factor_rows`).

    Model          score(users, items), score_all(users)                 every recommender
    FactorModel    + entity_tables(), factor_rows(), score_rows(), matrix(), sparse_grad, scores_item_blocks, dot_scores
    Objective      batches(rng), n_batches(), loss(), loss_and_rows(), closed_form_step(), closed_form_grads(),
                   state_dict(), load_state_dict()
    LambdaSource   + lambda_valid, valid_batch(rng, size): where learned λ draws its validation triples;
                   batch_ids(), with_ids(), compiled_lookahead()
    Evaluator      __call__(model) -> {metric: value}, log_prefix, trajectory

A regularizer's contract is its base class (`regularizers.base.Regularizer`); a task's is
`tasks.base.Task`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Iterator, Optional, Protocol, runtime_checkable

import numpy as np
import torch

if TYPE_CHECKING:
    from lambdaopt.data.interactions import Interactions
    from lambdaopt.evaluation.completion import SpectrumTrajectory

Batch = tuple[torch.Tensor, ...]
# {table parameter name: (role "user"/"item", row ids per occurrence, the gathered rows (len(ids) × …))}
Rows = dict[str, tuple[str, torch.Tensor, torch.Tensor]]


class Model(Protocol):
    """Scores users against items. `n_users`/`n_items` size the id spaces."""

    n_users: int
    n_items: int

    def score(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """s(u, i) for parallel vectors of users and items, shape (B,)."""

    def score_all(self, users: torch.Tensor) -> torch.Tensor:
        """s(u, ·) for every item, shape (len(users), n_items)."""


class FactorModel(Model, Protocol):
    """A model with per-user / per-item parameter tables (what row penalties and learned λ act on)."""

    # gather factor rows with sparse gradients (optimizer=sparse_adam), a constructor argument
    sparse_grad: bool
    # s(u, i) = ⟨user_embedding[u], item_embedding[i]⟩ + optional item_bias / user_bias, nothing else
    dot_scores: bool
    # score(users, items) takes k items per user (len(items) = k·len(users), block j = j-th item of each)
    scores_item_blocks: bool

    def entity_tables(self) -> dict[str, str]:
        """{parameter name: "user" | "item"} of every table indexed by user/item id ({} if none)."""

    def factor_rows(self, users: torch.Tensor, items: torch.Tensor) -> dict[str, tuple[str, torch.Tensor]]:
        """{table: (role, row ids)} a batch touches: the rows regularizers penalize ({} if none)."""

    def score_rows(self, rows: Rows, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Scores from the rows `models.rows.gather_rows` gathered (so the penalty reads the same tensors)."""

    def matrix(self) -> torch.Tensor:
        """The end-to-end n_users × n_items score matrix."""


class Objective(Protocol):
    """How an epoch is cut into batches and what a batch's loss is."""

    def batches(self, rng: np.random.Generator) -> Iterator[Batch]:
        """One epoch of batches; all randomness from `rng` (resume replays it)."""

    def n_batches(self) -> int:
        """How many batches `batches` yields (the progress bar's total)."""

    def loss(self, model: Model, batch: Batch) -> torch.Tensor: ...

    def loss_and_rows(self, model: Model, batch: Batch) -> tuple[torch.Tensor, Rows]:
        """The loss and the factor rows it read, shared with the penalty."""

    def closed_form_step(self, model: Model, regularizer, optimizer) -> Optional[Callable[[Batch], torch.Tensor]]:
        """A callable that takes one whole training step on a batch and returns its loss, computed without
        autograd, when this objective knows the gradient of `model` under `regularizer` in closed form
        (tasks/bpr_step.py); None: the trainer's autograd step."""

    def closed_form_grads(self, model: Model, params: dict, batch: Batch) -> Optional[tuple[torch.Tensor, dict]]:
        """(loss, {name: ∂loss/∂params[name]}) of `model` with its parameters replaced by `params`, without
        autograd, where the objective knows them in closed form; None: autograd (regularizers/hypergrad.py)."""

    def state_dict(self) -> dict:
        """Counters a resumed run needs (e.g. steps taken); {} if none."""

    def load_state_dict(self, state: dict) -> None: ...


@runtime_checkable
class LambdaSource(Protocol):
    """An objective learned λ can look ahead on (ranking: BPR triples; rating: (user, item, rating)):
    it draws validation batches of its own batch type, and names the factor rows a batch reads, so
    that the look-ahead can run on those rows alone (regularizers/hypergrad.py)."""

    lambda_valid: "Interactions"

    def valid_batch(self, rng: np.random.Generator, size: int) -> Batch: ...

    def batch_ids(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(user ids, item ids) of the rows `batch`'s loss reads, one per read (the penalty counts them)."""

    def with_ids(self, batch: Batch, users: torch.Tensor, items: torch.Tensor) -> Batch:
        """`batch` with the ids `batch_ids` returns replaced by `users`, `items` (same order)."""

    def compiled_lookahead(self, model: Model, kind: str, hp: dict) -> Optional[Callable]:
        """λ's one-step hypergradient for `model` looking ahead through optimizer rule `kind` with
        hyperparameters `hp` as one compiled pass (tasks/bpr_lookahead.py), when this objective has one
        that applies; None: the tensor path (regularizers/hypergrad.py). Called as
        `f(model, optimizer, kind, hp, lam, train, valid)`, it returns (the look-ahead validation loss as a
        float, {role: (row ids, ∂L_val/∂λ of those rows)}) for regularizers/lambda_step.py to step λ from."""


class Evaluator(Protocol):
    """Metrics of a model on held-out data; `trajectory` records per-evaluation spectra (or None)."""

    log_prefix: str
    trajectory: Optional["SpectrumTrajectory"]

    def __call__(self, model: Model) -> dict[str, float]: ...
