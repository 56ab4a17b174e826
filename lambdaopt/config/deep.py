"""Schemas of matrix completion: the low-rank dataset and GroupRMSprop (the models' schemas are their
constructors: lambdaopt/registry.py)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from lambdaopt.config.checks import field_with, one_of, open_unit, optional_positive, positive, seed_range


@dataclass
class LowRankDataConfig:
    """W* = c·U Vᵀ (n × m, rank r, ‖W*‖_F = √(nm)); `n_train_samples` entries observed uniformly
    without replacement, or as many Gaussian measurements when `sensing`."""

    _target_: str = "lambdaopt.data.lowrank.load_lowrank"
    name: str = "lowrank"
    # What the observations are; it selects the task (lambdaopt/tasks/). Fixed for this dataset.
    feedback: str = field_with("completion", one_of("completion"))
    n: int = field_with(100, positive())
    m: Optional[int] = field_with(None, optional_positive())  # null: square (m = n)
    rank: int = field_with(5, positive())
    n_train_samples: int = field_with(2000, positive())
    sensing: bool = False
    seed: int = field_with(0, seed_range())


@dataclass
class GroupRMSpropConfig:
    _target_: str = "lambdaopt.optimizers.GroupRMSprop"
    _partial_: bool = True
    lr: float = field_with(1e-3, positive())
    alpha: float = field_with(0.99, open_unit())
    eps: float = field_with(1e-4, positive())


SCHEMAS = {
    "dataset": {"lowrank": LowRankDataConfig},
    "optimizer": {"group_rmsprop": GroupRMSpropConfig},
}
