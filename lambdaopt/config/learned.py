"""Schema of the learned-λ regularizers (λOpt and its fully second-order preset `higher`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lambdaopt.config.checks import (field_with, non_negative, one_of, open_unit, optional_positive, positive,
                                     seed_range, share)
from lambdaopt.regularizers.lambdas import GRANULARITIES


@dataclass
class LambdaOptConfig:
    _target_: str = "lambdaopt.regularizers.lambdaopt.LambdaOpt"
    granularity: str = field_with("dui", one_of(*GRANULARITIES))
    init: float = field_with(0.0, non_negative())
    # λ ≥ 0: projection after each λ step (clamp), or λ = softplus(ρ) / exp(ρ) (need init > 0)
    nonneg: str = field_with("clamp", one_of("clamp", "softplus", "exp"))
    # sparse_adam: lazy Adam on the λ rows of the batch only (per-user/item λ, clamp, truncated K=1) — for large tables
    lambda_optimizer: str = field_with("adam", one_of("adam", "sgd", "sparse_adam"))
    lambda_lr: float = field_with(1e-4, positive())
    amsgrad: bool = True
    grad_clip: Optional[float] = field_with(1.0, optional_positive())
    update_every: int = field_with(1, positive())
    # truncated: one-step look-ahead (the paper's); unrolled: exact K-step (torch.func); ift: implicit function theorem
    hypergrad: str = field_with("truncated", one_of("truncated", "unrolled", "ift"))
    unroll_steps: int = field_with(1, positive())
    # false: only the rows the batches touch enter the look-ahead; true: every model parameter (generic, dense)
    full_graph: bool = False
    neumann_steps: int = field_with(10, non_negative())
    ift_alpha: float = field_with(1.0, positive())
    valid_batch_size: Optional[int] = field_with(None, optional_positive())
    snapshot_every: int = field_with(1, positive())
    # where λ's validation signal comes from (regularizers/base.py): split = per user, a random share of the
    # validation interactions (a user with one: the latest training interaction), the rest selects the epoch;
    # holdout = a share of every user's training interactions; validation = a random share of validation
    lambda_data: str = field_with("split", one_of("split", "holdout", "validation"))
    holdout_ratio: float = field_with(0.1, open_unit())
    # split / validation: the share of validation λ learns from; the rest selects the epoch (validation with 1:
    # the paper's protocol, the same data for both)
    validation_share: float = field_with(0.5, share())
    # look ahead through the model's own optimizer (λOpt) or through plain SGD at its lr (SGDA)
    lookahead: str = field_with("model", one_of("model", "sgd"))
    seed: int = field_with(0, seed_range())


SCHEMAS = {"regularizer": {"lambdaopt": LambdaOptConfig}}
