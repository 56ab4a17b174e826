"""Typed config schemas and their range checks.

Every YAML option in `conf/<group>/` extends one dataclass here (through its defaults list,
`/schema/<group>/<name>@_here_`), so Hydra rejects unknown keys and wrong types while it
composes. Value ranges live next to the types, in each field's metadata (`check=...`), and
`validate()` walks the composed config and applies them before any data is loaded or any
MLflow run is created.

Adding an option = one dataclass registered in `register_schemas()` + one YAML.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from lambdaopt.errors import ConfigError


# ----------------------------------------------------------------------------- checks
@dataclass(frozen=True)
class Check:
    """A range rule: `test(value)` is True when allowed; `allowed` says what is allowed."""

    test: Callable[[Any], bool]
    allowed: str


def positive() -> dict:
    return {"check": Check(lambda v: v is not None and v > 0, "a number > 0")}


def non_negative() -> dict:
    return {"check": Check(lambda v: v is not None and v >= 0, "a number >= 0")}


def open_unit() -> dict:
    return {"check": Check(lambda v: v is not None and 0 < v < 1, "a number in (0, 1)")}


def one_of(*choices: str) -> dict:
    return {"check": Check(lambda v: v in choices, "one of " + ", ".join(choices))}


def positive_list() -> dict:
    return {
        "check": Check(
            lambda v: v is not None and len(v) > 0 and all(int(k) > 0 for k in v),
            "a non-empty list of integers > 0",
        )
    }


def field_with(default: Any, rule: dict) -> Any:
    """A dataclass field with a default and a range rule."""
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=rule)
    return field(default=default, metadata=rule)


# ----------------------------------------------------------------------------- schemas
@dataclass
class SplitConfig:
    """Per-user split. `temporal`: latest `test_ratio` of each user's interactions → test, then the
    latest `valid_ratio` of the rest → validation (the λOpt protocol, ≈60/20/20). `random`: the same
    counts, chosen at random. `leave_one_out`: latest → test, second latest → validation."""

    method: str = field_with("temporal", one_of("temporal", "random", "leave_one_out"))
    test_ratio: float = field_with(0.2, open_unit())
    valid_ratio: float = field_with(0.25, open_unit())


@dataclass
class SyntheticDataConfig:
    _target_: str = "lambdaopt.data.synthetic.load_synthetic"
    name: str = "synthetic"
    n_users: int = field_with(1500, positive())
    n_items: int = field_with(1500, positive())
    rank: int = field_with(8, positive())
    mean_interactions: float = field_with(40.0, positive())
    min_interactions: int = field_with(5, positive())
    user_activity_exponent: float = field_with(0.8, non_negative())
    item_popularity_exponent: float = field_with(0.8, non_negative())
    signal: float = field_with(5.0, non_negative())
    min_user_interactions: int = field_with(3, non_negative())
    seed: int = field_with(0, non_negative())
    split: SplitConfig = field(default_factory=SplitConfig)


@dataclass
class MFConfig:
    _target_: str = "lambdaopt.models.mf.MatrixFactorization"
    dim: int = field_with(64, positive())
    init_std: float = field_with(0.01, positive())
    user_bias: bool = False
    item_bias: bool = False


@dataclass
class NoRegularizerConfig:
    _target_: str = "lambdaopt.regularizers.fixed.NoRegularizer"


@dataclass
class FixedRegularizerConfig:
    _target_: str = "lambdaopt.regularizers.fixed.FixedL2"
    lam: float = field_with(1e-2, non_negative())


@dataclass
class SGDConfig:
    _target_: str = "torch.optim.SGD"
    _partial_: bool = True
    lr: float = field_with(0.05, positive())
    momentum: float = field_with(0.0, non_negative())
    dampening: float = field_with(0.0, non_negative())
    nesterov: bool = False
    weight_decay: float = field_with(0.0, non_negative())


@dataclass
class AdamConfig:
    _target_: str = "torch.optim.Adam"
    _partial_: bool = True
    lr: float = field_with(1e-2, positive())
    betas: List[float] = field_with([0.9, 0.999], {})
    eps: float = field_with(1e-8, positive())
    weight_decay: float = field_with(0.0, non_negative())
    amsgrad: bool = False


@dataclass
class AdagradConfig:
    _target_: str = "torch.optim.Adagrad"
    _partial_: bool = True
    lr: float = field_with(0.05, positive())
    lr_decay: float = field_with(0.0, non_negative())
    initial_accumulator_value: float = field_with(0.0, non_negative())
    eps: float = field_with(1e-10, positive())
    weight_decay: float = field_with(0.0, non_negative())


@dataclass
class RMSpropConfig:
    _target_: str = "torch.optim.RMSprop"
    _partial_: bool = True
    lr: float = field_with(1e-3, positive())
    alpha: float = field_with(0.99, open_unit())
    eps: float = field_with(1e-8, positive())
    momentum: float = field_with(0.0, non_negative())
    centered: bool = False
    weight_decay: float = field_with(0.0, non_negative())


@dataclass
class TrainerConfig:
    max_epochs: int = field_with(40, positive())
    batch_size: int = field_with(1024, positive())
    eval_every: int = field_with(1, positive())
    # Stop after `patience` evaluations without improvement of `monitor` on validation; 0 = never stop early.
    patience: int = field_with(5, non_negative())
    monitor: str = "ndcg@10"
    min_delta: float = field_with(0.0, non_negative())


@dataclass
class EvaluationConfig:
    ks: List[int] = field_with([10, 50, 100], positive_list())
    # Users scored at once in full ranking: memory is chunk_users × n_items floats.
    chunk_users: int = field_with(1024, positive())


@dataclass
class TrackingConfig:
    enabled: bool = True
    # Default: a SQLite file in the launch directory. Point at `http://host:port` for a shared server.
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "lambdaopt"
    # Where a newly created experiment keeps its artifacts (relative paths are made absolute).
    artifact_location: str = "mlartifacts"
    run_name: Optional[str] = None
    log_model: bool = True


SCHEMAS = {
    "dataset": {"synthetic": SyntheticDataConfig},
    "model": {"mf": MFConfig},
    "regularizer": {"none": NoRegularizerConfig, "fixed": FixedRegularizerConfig},
    "optimizer": {"sgd": SGDConfig, "adam": AdamConfig, "adagrad": AdagradConfig, "rmsprop": RMSpropConfig},
    "trainer": {"default": TrainerConfig},
    "evaluation": {"default": EvaluationConfig},
    "tracking": {"mlflow": TrackingConfig},
}

TOP_LEVEL_RULES = {
    "seed": Check(lambda v: isinstance(v, int) and v >= 0, "an integer >= 0"),
    "num_threads": Check(lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"),
    "device": Check(lambda v: v in ("auto", "cpu", "cuda") or str(v).startswith("cuda:"), "auto, cpu, cuda or cuda:N"),
}


def register_schemas() -> None:
    """Store every schema under `schema/<group>/<name>` so YAML options can extend it."""
    store = ConfigStore.instance()
    for group, options in SCHEMAS.items():
        for name, node in options.items():
            store.store(group=f"schema/{group}", name=name, node=node)


register_schemas()


# ----------------------------------------------------------------------------- validation
def _walk(node: DictConfig, path: str):
    """Yield (dotted key, value, Check) for every checked field in `node` and its children."""
    node_type = OmegaConf.get_type(node)
    if dataclasses.is_dataclass(node_type):
        for f in dataclasses.fields(node_type):
            rule = f.metadata.get("check")
            if rule is not None and f.name in node:
                yield f"{path}{f.name}", node[f.name], rule
    for key in node.keys():
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            yield from _walk(child, f"{path}{key}.")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value out of range, naming the key, the value and what is allowed."""
    for key, rule in TOP_LEVEL_RULES.items():
        if key in cfg and not rule.test(cfg[key]):
            raise ConfigError(f"{key}={cfg[key]!r} is not allowed: use {rule.allowed}")
    for key, value, rule in _walk(cfg, ""):
        if isinstance(value, ListConfig):
            value = list(value)
        try:
            ok = rule.test(value)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ConfigError(f"{key}={value!r} is not allowed: use {rule.allowed}")
    metric_names = {"auc"} | {f"{m}@{k}" for k in cfg.evaluation.ks for m in ("hr", "ndcg")}
    if cfg.trainer.monitor not in metric_names:
        raise ConfigError(
            f"trainer.monitor={cfg.trainer.monitor!r} is not a validation metric: use one of "
            + ", ".join(sorted(metric_names))
        )
