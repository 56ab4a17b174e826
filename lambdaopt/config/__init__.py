"""Typed config schemas and their range checks.

Every YAML option in `conf/<group>/` extends one dataclass (through its defaults list,
`/schema/<group>/<name>@_here_`), so Hydra rejects unknown keys and wrong types while it
composes. Value ranges live next to the types, in each field's metadata (`check=...`, see
`checks.py`), and `validate()` walks the composed config and applies them before any data is
loaded or any MLflow run is created.

Adding an option = one dataclass in a module here, listed in that module's SCHEMAS, + one YAML.
"""
from __future__ import annotations

import dataclasses

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, ListConfig, OmegaConf

from lambdaopt.config import baselines, core, datasets, deep, learned
from lambdaopt.config.checks import Check, resume_value
from lambdaopt.config.monitor import metric_names, task_kind
from lambdaopt.errors import ConfigError

SCHEMA_MODULES = [core, datasets, deep, learned, baselines]


def all_schemas() -> dict[str, dict[str, type]]:
    """{group: {option: dataclass}} merged over every schema module."""
    merged: dict[str, dict[str, type]] = {}
    for module in SCHEMA_MODULES:
        for group, options in module.SCHEMAS.items():
            merged.setdefault(group, {}).update(options)
    return merged


TOP_LEVEL_RULES = {
    "seed": Check(lambda v: type(v) is int and v >= 0, "an integer >= 0"),
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
    names = metric_names(cfg)
    if cfg.trainer.monitor != "auto" and cfg.trainer.monitor not in names:
        raise ConfigError(
            f"trainer.monitor={cfg.trainer.monitor!r} is not a {task_kind(cfg)} validation metric: use auto or one of "
            + ", ".join(sorted(names))
        )
