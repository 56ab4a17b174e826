"""Every config option composes; wrong types, unknown keys and out-of-range values fail early."""
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf.errors import ConfigKeyError, ValidationError

from lambdaopt.config import validate
from lambdaopt.errors import ConfigError

from conftest import CONF_DIR, compose_config

# `sweep` holds multirun presets (`+sweep=NAME`), not options of the default config: tests/test_sweeps.py
GROUPS = sorted(p.name for p in Path(CONF_DIR).iterdir() if p.is_dir() and p.name != "sweep")
OPTIONS = [(group, yaml.stem) for group in GROUPS for yaml in sorted((Path(CONF_DIR) / group).glob("*.yaml"))]


def test_groups_exist():
    assert {"dataset", "model", "regularizer", "optimizer"} <= set(GROUPS)


@pytest.mark.parametrize("group,option", OPTIONS)
def test_every_option_composes_and_validates(group, option):
    if group == "experiment":  # presets are appended (+experiment=...), not a default group
        validate(compose_config([f"+experiment={option}"]))
        return
    cfg = compose_config([f"{group}={option}"])
    validate(cfg)
    assert cfg[group] is not None


def test_wrong_type_fails_at_compose():
    with pytest.raises((ConfigCompositionException, ValidationError)):
        compose_config(["model.dim=abc"])


def test_unknown_key_fails_at_compose():
    with pytest.raises((ConfigCompositionException, ConfigKeyError)):
        compose_config(["optimizer.learning_rate=0.1"])


@pytest.mark.parametrize("override,key", [
    ("optimizer.lr=0", "optimizer.lr"),
    ("optimizer.lr=-1", "optimizer.lr"),
    ("model.dim=0", "model.dim"),
    ("regularizer.lam=-0.1", "regularizer.lam"),
    ("trainer.batch_size=0", "trainer.batch_size"),
    ("evaluation.ks=[]", "evaluation.ks"),
    ("evaluation.ks=[10,-1]", "evaluation.ks"),
    ("dataset.split.test_ratio=1.5", "dataset.split.test_ratio"),
    ("dataset.split.method=weekly", "dataset.split.method"),
    ("trainer.monitor=ndcg@7", "trainer.monitor"),
    ("trainer.mode=up", "trainer.mode"),
    ("dataset=lowrank trainer.monitor=auc", "trainer.monitor"),
    ("model=deep_mf model.depth=0", "model.depth"),
    ("model=deep_mf model.init=zeros", "model.init"),
    ("dataset=lowrank dataset.n_train_samples=0", "dataset.n_train_samples"),
    ("optimizer=group_rmsprop optimizer.alpha=1", "optimizer.alpha"),
    ("num_threads=0", "num_threads"),
    ("device=tpu", "device"),
])
def test_out_of_range_values_name_the_key(override, key):
    cfg = compose_config(override.split())
    with pytest.raises(ConfigError) as error:
        validate(cfg)
    message = str(error.value)
    assert message.startswith(key) and "\n" not in message


def test_constructors_default_to_the_schema_defaults():
    """A notebook user calling a class gets the experiment the CLI runs: every lambdaopt target's keyword
    defaults equal its schema's (the one loader of several datasets takes each dataset's from its schema)."""
    import dataclasses
    import inspect

    from hydra.utils import get_method

    from lambdaopt.config import all_schemas

    checked = 0
    for group, options in all_schemas().items():
        for name, schema in options.items():
            fields = {f.name: f for f in dataclasses.fields(schema)}
            target = fields["_target_"].default if "_target_" in fields else ""
            if not target.startswith("lambdaopt.") or target.endswith("load_dataset"):
                continue
            parameters = inspect.signature(get_method(target)).parameters
            for key, field in fields.items():
                if key.startswith("_") or key not in parameters or parameters[key].default is inspect.Parameter.empty:
                    continue
                default = field.default_factory() if field.default is dataclasses.MISSING else field.default
                if dataclasses.is_dataclass(default):
                    continue  # a nested node (the split): the constructor's None means the same node
                expected = tuple(default) if isinstance(default, list) else default
                found = tuple(parameters[key].default) if isinstance(parameters[key].default, list) else parameters[key].default
                assert found == expected, f"{group}/{name}: {target}({key}={found!r}) but the schema says {expected!r}"
                checked += 1
    assert checked > 12  # datasets, optimizers, trainer (models and regularizers: schemas from their constructors)


@pytest.mark.parametrize("metric,lower", [
    ("rmse", True), ("test/rmse", True), ("eval/effective_rank", True), ("best_valid/nuclear_norm", True),
    ("relative_error", True), ("train_loss", True), ("auc", False), ("test/ndcg_at_10", False),
    ("best_valid/ndcg_at_10_smoothed", False), ("hr@10", False),
])
def test_one_table_says_which_way_every_metric_improves(metric, lower):
    from lambdaopt.tasks import lower_is_better
    from lambdaopt.report import table

    assert lower_is_better(metric) is lower
    assert table.lower_is_better is lower_is_better  # the report reads the same table as the trainer
