"""Schemas of deep matrix factorization and matrix completion: the low-rank dataset, deep / SVD /
nuclear-norm models and GroupRMSprop."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

from lambdaopt.config.checks import Check, field_with, non_negative, one_of, open_unit, positive, seed_range


def positive_or_none() -> dict:
    return {"check": Check(lambda v: v is None or v > 0, "null or a number > 0")}


def positive_list_or_none() -> dict:
    return {"check": Check(lambda v: v is None or all(int(k) > 0 for k in v), "null or a list of integers > 0")}


@dataclass
class LowRankDataConfig:
    """W* = c·U Vᵀ (n × m, rank r, ‖W*‖_F = √(nm)); `n_train_samples` entries observed uniformly
    without replacement, or as many Gaussian measurements when `sensing`."""

    _target_: str = "lambdaopt.completion.data.load_lowrank"
    name: str = "lowrank"
    # What the observations are; it selects the task (see lambdaopt/tasks.py). Fixed for this dataset.
    feedback: str = field_with("completion", one_of("completion"))
    n: int = field_with(100, positive())
    m: Optional[int] = field_with(None, positive_or_none())  # null: square (m = n)
    rank: int = field_with(5, positive())
    n_train_samples: int = field_with(2000, positive())
    sensing: bool = False
    seed: int = field_with(0, seed_range())


@dataclass
class DeepMFConfig:
    _target_: str = "lambdaopt.models.deep_mf.DeepMatrixFactorization"
    depth: int = field_with(3, positive())
    hidden_sizes: Optional[List[int]] = field_with(None, positive_list_or_none())  # null: min(n, m) each
    init: str = field_with("gaussian", one_of("gaussian", "identity", "orthogonal"))
    init_scale: float = field_with(1e-3, positive())


@dataclass
class SVDMFConfig:
    _target_: str = "lambdaopt.models.svd_mf.SVDMatrixFactorization"
    depth: int = field_with(3, positive())
    init_scale: float = field_with(1e-3, positive())
    rank: Optional[int] = field_with(None, positive_or_none())  # null: min(n, m)


@dataclass
class NuclearNormConfig:
    _target_: str = "lambdaopt.completion.nuclear.NuclearNormCompletion"
    solver: str = field_with("svt", one_of("svt", "soft_impute", "cvxpy"))
    tolerance: float = field_with(1e-3, non_negative())
    max_iters: int = field_with(20000, positive())
    rel_tol: float = field_with(1e-7, positive())
    min_lambda_ratio: float = field_with(1e-6, open_unit())


@dataclass
class GroupRMSpropConfig:
    _target_: str = "lambdaopt.optimizers.GroupRMSprop"
    _partial_: bool = True
    lr: float = field_with(1e-3, positive())
    alpha: float = field_with(0.99, open_unit())
    eps: float = field_with(1e-4, positive())


SCHEMAS = {
    "dataset": {"lowrank": LowRankDataConfig},
    "model": {"deep_mf": DeepMFConfig, "svd_mf": SVDMFConfig, "nuclear_norm": NuclearNormConfig},
    "optimizer": {"group_rmsprop": GroupRMSpropConfig},
}
