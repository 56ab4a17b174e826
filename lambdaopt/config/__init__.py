"""Typed config schemas and their range checks.

Every YAML option in `lambdaopt/conf/<group>/` extends one dataclass (through its defaults list,
`/schema/<group>/<name>@_here_`), so Hydra rejects unknown keys and wrong types while it
composes. Models and regularizers register theirs from their constructors (lambdaopt/registry.py);
the other groups' dataclasses are here. Value ranges live next to the types, in each field's metadata (`check=...`, see
`checks.py`), and `validate()` walks the composed config and applies them before any data is
loaded or any MLflow run is created.

Adding a dataset or optimizer option = one dataclass in a module here, listed in that module's SCHEMAS,
+ one YAML; a model or regularizer = one registered class + one YAML.
"""
from __future__ import annotations

import dataclasses
import math

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from lambdaopt.config import core, datasets, deep
from lambdaopt.config.checks import Check, resume_value
from lambdaopt.errors import ConfigError

SCHEMA_MODULES = [core, datasets, deep]


def all_schemas() -> dict[str, dict[str, type]]:
    """{group: {option: dataclass}} merged over every schema module."""
    merged: dict[str, dict[str, type]] = {}
    for module in SCHEMA_MODULES:
        for group, options in module.SCHEMAS.items():
            merged.setdefault(group, {}).update(options)
    return merged


TOP_LEVEL_RULES = {
    "seed": Check(lambda v: type(v) is int and 0 <= v < 2**32, "an integer in [0, 2^32 - 1]"),
    "num_threads": Check(lambda v: type(v) is int and v >= 1, "an integer >= 1"),
    "init_from": Check(lambda v: v is None or (isinstance(v, str) and len(v) > 0), "null or an MLflow run id"),
    "device": Check(lambda v: v in ("auto", "cpu", "cuda") or str(v).startswith("cuda:"), "auto, cpu, cuda or cuda:N"),
    "resume": resume_value(),
}


def register_schemas() -> None:
    """Store every schema under `schema/<group>/<name>` so YAML options can extend it."""
    store = ConfigStore.instance()
    for group, options in all_schemas().items():
        for name, node in options.items():
            store.store(group=f"schema/{group}", name=name, node=node)


register_schemas()
# models and regularizers store their schemas as they register (imported here so composing finds them)
import lambdaopt.models  # noqa: E402,F401
import lambdaopt.regularizers  # noqa: E402,F401


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


def _non_finite(node, path: str = ""):
    """(dotted key, value) of the first float that is inf or nan anywhere in `node`, or None."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, value in items:
        where = f"{path}{key}" if isinstance(node, dict) else f"{path[:-1]}[{key}]"
        if isinstance(value, float) and not math.isfinite(value):
            return where, value
        if isinstance(value, (dict, list)) and (found := _non_finite(value, f"{where}.")):
            return found
    return None


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError on the first value out of range, naming the key, the value and what is allowed.
    No number anywhere may be inf or nan (a range check like `> 0` lets inf through)."""
    found = _non_finite(OmegaConf.to_container(cfg, resolve=False))
    if found:
        raise ConfigError(f"{found[0]}={found[1]} is not allowed: use a finite number")
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
    from lambdaopt.tasks import task_class  # the task's metric table; imported here, config loads first

    task = task_class(cfg)
    names = task.metric_names(cfg.evaluation)
    if cfg.trainer.monitor != "auto" and cfg.trainer.monitor not in names:
        raise ConfigError(
            f"trainer.monitor={cfg.trainer.monitor!r} is not a validation metric of {task.feedback} feedback: use auto or one of "
            + ", ".join(sorted(names))
        )
