"""Registries: a regularizer or a model is one class, registered under the name its config option uses.

The class's constructor is its schema. Each parameter's type, default and range rule
(`Annotated[float, non_negative()]`, rules from config/checks.py) become a typed dataclass stored as
`schema/<group>/<name>` in Hydra's ConfigStore, which the option's YAML extends:

    # lambdaopt/conf/regularizer/l1.yaml
    defaults:
      - /schema/regularizer/l1@_here_
      - _self_

So Hydra rejects unknown keys and wrong types while composing, `config.validate()` applies the range
rules before any data is loaded, and the same rules run again when the class is built from Python
(a notebook calling `FixedL2(lam=-1)` gets the CLI's error). Defaults live in the signature only.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
import typing
from typing import Any, Callable

from typing import TYPE_CHECKING

from hydra.core.config_store import ConfigStore

from lambdaopt.errors import ConfigError

if TYPE_CHECKING:  # not imported: the config package imports every registered class (and so this module)
    from lambdaopt.config.checks import Check

# Constructor arguments the experiment supplies, not the config (the data's sizes, the optimizer's needs).
SUPPLIED = {"self", "n_users", "n_items", "sparse_grad"}


def _rule(annotation) -> tuple[Any, Check | None]:
    """(the plain type, its range rule) of `Annotated[T, {"check": rule}]`, or (annotation, None)."""
    if typing.get_origin(annotation) is typing.Annotated:
        plain, *extras = typing.get_args(annotation)
        return plain, next((e["check"] for e in extras if isinstance(e, dict) and "check" in e), None)
    return annotation, None


def _schema_type(plain):
    """The type OmegaConf can check: sequences become lists."""
    origin = typing.get_origin(plain)
    if origin in (list, tuple, typing.Sequence) or plain is list:
        args = typing.get_args(plain)
        return typing.List[args[0]] if args else typing.List[Any]
    if origin is typing.Union:
        args = [a for a in typing.get_args(plain) if a is not type(None)]
        return typing.Optional[_schema_type(args[0])] if len(args) == 1 else Any
    return plain


def schema_of(cls: type, group: str) -> tuple[type, dict[str, Check]]:
    """(a dataclass with `_target_` and one field per constructor parameter, {parameter: range rule})."""
    hints = typing.get_type_hints(cls.__init__, include_extras=True)
    fields: list[tuple] = [("_target_", str, dataclasses.field(default=f"{cls.__module__}.{cls.__qualname__}"))]
    rules: dict[str, Check] = {}
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name in SUPPLIED or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if parameter.default is inspect.Parameter.empty:
            raise TypeError(f"{cls.__name__}.{name} needs a default: it is the config option's default")
        plain, rule = _rule(hints.get(name, Any))
        metadata = {"check": rule} if rule is not None else {}
        default = parameter.default
        if isinstance(default, (list, tuple)):
            field = dataclasses.field(default_factory=functools.partial(list, default), metadata=metadata)
        else:
            field = dataclasses.field(default=default, metadata=metadata)
        fields.append((name, _schema_type(plain), field))
        if rule is not None:
            rules[name] = rule
    return dataclasses.make_dataclass(f"{cls.__name__}Config", fields), rules


def _checked(init: Callable, rules: dict[str, Check], group: str) -> Callable:
    """`init`, checking every ruled argument first (the message `config.validate()` would give)."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def checked(self, *args, **kwargs):
        arguments = signature.bind(self, *args, **kwargs)
        arguments.apply_defaults()
        for name, rule in rules.items():
            value = arguments.arguments[name]
            try:
                ok = rule.test(list(value) if isinstance(value, tuple) else value)
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"{group}.{name}={value!r} is not allowed: use {rule.allowed}")
        init(self, *args, **kwargs)

    return checked


class Registry:
    """Classes of one config group by option name (`by_name`) and by class name (`by_class`, what the
    MLflow tag `regularizer`/`model` of a run holds, read by the report)."""

    def __init__(self, group: str):
        self.group = group
        self.by_name: dict[str, type] = {}
        self.by_class: dict[str, type] = {}

    def register(self, name: str):
        def add(cls: type) -> type:
            schema, rules = schema_of(cls, self.group)
            if "__init__" in vars(cls):  # wrap the class's own constructor once (subclasses inherit it checked)
                cls.__init__ = _checked(cls.__init__, rules, self.group)
            cls.option_name = name
            self.by_name[name] = cls
            self.by_class[cls.__name__] = cls
            ConfigStore.instance().store(group=f"schema/{self.group}", name=name, node=schema)
            return cls
        return add

    def schema(self, name: str) -> type:
        return schema_of(self.by_name[name], self.group)[0]


REGULARIZERS = Registry("regularizer")
MODELS = Registry("model")
