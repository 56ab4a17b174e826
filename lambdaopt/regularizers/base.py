"""The small interface the trainer talks to. A new regularizer = one subclass + one YAML.

Register the subclass under its option name (`@REGULARIZERS.register("l1")`): its constructor's
annotated parameters become the option's schema (lambdaopt/registry.py), and the class attributes and
class methods below tell the rest of the framework what it needs to know — nothing else to edit.
"""
from __future__ import annotations

from typing import Mapping

import torch
from torch import nn


class Regularizer(nn.Module):
    """`penalty` is added to the training loss of every batch; `update` runs before each model step
    (learned-λ methods adjust λ there); `metrics` is logged at every evaluation.

    Where learned λ gets its validation signal (`lambda_data`), read by the task before `setup`
    (data/splits.py): None: the regularizer never reads held-out data. "split": per user, a random
    `validation_share` of the validation interactions, the rest selecting the epoch; a user with one
    validation interaction (all of them under leave-one-out) lends λ its latest training interaction
    instead, removed from the training triples — so every user with held-out data contributes and
    selection is judged on interactions λ never saw. "holdout": a share `holdout_ratio` of every
    user's training interactions, removed from the training triples; selection uses all of validation.
    "validation": a random share `validation_share` of the validation interactions, the rest kept
    for selection (1 = the paper's protocol: the same data for both).
    """

    lambda_data: str | None = None
    holdout_ratio: float = 0.1
    validation_share: float | None = None
    # the tasks (`dataset.feedback`) it works with: AMF needs BPR triples (tasks/ranking.py), learned λ an
    # objective it can look ahead on (contracts.LambdaSource: ranking and rating)
    feedback: tuple[str, ...] = ("implicit", "explicit", "completion")
    # the penalty reads only the rows the batch gathered (optimizer=sparse_adam updates just those rows)
    supports_sparse_rows: bool = False
    # the penalty reads the gathered rows at all: False (no penalty) spares full-batch objectives the gather
    reads_rows: bool = True
    # its options a report tunes per seed on validation: runs differing only there (and in the optimizer,
    # batch size, epochs — report/runs.py TUNED_PREFIXES) are grid points of one row, e.g. ("lam",)
    tuned_keys: tuple[str, ...] = ()
    # `add_rows_gradient` is implemented and `update` does nothing: MF-BPR steps skip autograd (tasks/bpr_step.py)
    closed_form_gradient: bool = False

    label: str = ""  # its name in report rows and figure legends ("λFix"); the class name when empty

    @classmethod
    def display_name(cls, params: Mapping) -> str:
        """Its name in report rows and figure legends, from its options (`params`: values, or the
        strings MLflow stores, e.g. "True"): `label` unless a subclass says more."""
        return cls.label or cls.__name__

    @classmethod
    def run_label(cls, params: Mapping) -> str:
        """The method part of a run's name (naming.py): the display name, plus the tuned values."""
        return cls.display_name(params)

    def setup(self, model: nn.Module, objective) -> None:
        """Called once the model and the training objective exist: learned λ sizes its tables from the
        model here and draws its validation batches from `objective.valid_batch`."""

    def penalty(self, model: nn.Module, rows: dict[str, tuple[str, torch.Tensor, torch.Tensor]], batch_size: int,
                batch=None) -> torch.Tensor:
        """Added to the batch's training loss. `rows`: {table: (role, row ids per occurrence, those rows
        gathered)} — the tensors the fit loss read (models/rows.py), so a row penalty costs no second
        gather; `batch`: the batch itself, for penalties that need more than rows."""
        raise NotImplementedError

    def add_rows_gradient(self, grad: torch.Tensor, role: str, ids: torch.Tensor, values: torch.Tensor,
                          batch_size: int, scale: float) -> None:
        """Add `scale` · ∂penalty/∂`values` to `grad` in place, for rows `values` (ids `ids`) of a table of
        `role` gathered by the batch (one per occurrence): the closed-form step's share of the penalty
        (tasks/bpr_step.py), checked against autograd of `penalty` in tests/test_bpr_step.py."""
        raise NotImplementedError(f"{type(self).__name__} has no closed-form row gradient")

    def l2_weights(self) -> dict[str, torch.Tensor] | None:
        """{"user": w_u, "item": w_i} when the penalty is Σ_rows Σ_k w_rk · θ_rk² / B over the batch's rows of
        the user / item table, each w broadcastable to its table (fixed λ: λ; learned λ: its tables; none:
        0) — then MF-BPR steps run as compiled loops on CPU (tasks/bpr_kernel.py); None otherwise."""
        return None

    def update(self, model: nn.Module, optimizer: torch.optim.Optimizer, train_batch, batch_index: int) -> None:
        """Adjust λ before the model step on `train_batch`. Fixed penalties do nothing."""

    def train_fit(self, batch):
        """The fit gradient of `batch` at the current parameters if `update` computed it on the way (λOpt's
        compiled look-ahead: tasks/bpr_lookahead.TrainFit), handed over once for the model step on that
        same batch to reuse; None otherwise."""
        return None

    def metrics(self) -> dict[str, float]:
        return {}

    def on_evaluation(self, epoch: int, tracker) -> None:
        """After each validation evaluation (learned λ snapshots its trajectory here)."""

    def on_train_end(self, tracker, selected_epoch: int | None = None) -> None:
        """Once training stops and an epoch is selected (learned λ logs its figures of that epoch here)."""
