"""The registries: every regularizer option × every task, the schemas built from constructors, and the
worked example of the README (a new regularizer is one class + one YAML, and shows up in the report)."""
import math
from pathlib import Path

import pytest

import lambdaopt
from lambdaopt.errors import ConfigError
from lambdaopt.registry import MODELS, REGULARIZERS
from lambdaopt.tasks import TASKS

from conftest import CONF_DIR, TINY, empty_store_in

REGULARIZER_OPTIONS = sorted(p.stem for p in (Path(CONF_DIR) / "regularizer").glob("*.yaml"))
# the smallest data of each task (completion: the low-rank matrix, a few full-batch steps)
TASK_DATA = {
    "implicit": [*TINY, "trainer.max_epochs=2"],
    "explicit": [*TINY, "trainer.max_epochs=2", "dataset.feedback=explicit", "optimizer=adam"],
    "completion": ["dataset=lowrank", "dataset.n=12", "dataset.rank=2", "dataset.n_train_samples=80", "model=deep_mf",
                   "model.depth=2", "trainer.max_epochs=2", "trainer.steps_per_epoch=5"],
}


def test_every_task_has_data_here():
    assert set(TASK_DATA) == set(TASKS)


@pytest.mark.parametrize("feedback", sorted(TASK_DATA))
@pytest.mark.parametrize("option", REGULARIZER_OPTIONS)
def test_every_regularizer_on_every_task_runs_or_is_refused_in_one_line(option, feedback):
    cfg = lambdaopt.compose([*TASK_DATA[feedback], f"regularizer={option}", "tracking.enabled=false", "device=cpu"])
    regularizer = REGULARIZERS.by_class[cfg.regularizer._target_.rsplit(".", 1)[-1]]
    if feedback not in regularizer.feedback:
        with pytest.raises(ConfigError, match=f"works with {' or '.join(regularizer.feedback)} feedback"):
            lambdaopt.run(cfg)
        return
    result = lambdaopt.run(cfg)
    assert result.test and all(math.isfinite(v) for v in result.test.values())
    assert result.monitor in result.valid and result.model is not None


def test_every_registered_class_has_a_yaml_option_extending_its_schema():
    for registry in (REGULARIZERS, MODELS):
        texts = [p.read_text() for p in (Path(CONF_DIR) / registry.group).glob("*.yaml")]
        for name in registry.by_name:
            assert any(f"/schema/{registry.group}/{name}@_here_" in t for t in texts), f"{registry.group}={name}"


def test_the_schema_is_the_constructor_defaults_and_ranges_included():
    from lambdaopt.regularizers.fixed import FixedL2

    cfg = lambdaopt.compose(["regularizer=fixed"])
    assert cfg.regularizer.lam == 5e-3 and FixedL2().lam == 5e-3
    with pytest.raises(ConfigError, match=r"^regularizer.lam=-1.0 is not allowed: use a number >= 0$"):
        FixedL2(lam=-1.0)  # a notebook gets the command line's message
    with pytest.raises(ConfigError, match=r"^regularizer.lam=-1.0 is not allowed: use a number >= 0$"):
        lambdaopt.run(["regularizer=fixed", "regularizer.lam=-1.0"])
    with pytest.raises(Exception, match="Could not override 'regularizer.lamda'"):
        lambdaopt.compose(["regularizer=fixed", "regularizer.lamda=1"])  # typed: an unknown key fails
    with pytest.raises(Exception, match="Error merging override regularizer.lam=abc"):
        lambdaopt.compose(["regularizer=fixed", "regularizer.lam=abc"])  # and a wrong type


def test_worked_example_l1_is_one_grid_row_of_the_report(tmp_path):
    """README "Adding a regularizer": L1 registered in one file with one YAML; a λ grid of it is one
    report row, λ selected per seed on validation, named by its display name."""
    from lambdaopt.report import label_runs, load_runs, paper_table

    uri = f"sqlite:///{empty_store_in(tmp_path)}"
    for lam in (1e-4, 1e-2):
        lambdaopt.run([*TINY, "regularizer=l1", f"regularizer.lam={lam}", f"tracking.uri={uri}", "device=cpu",
                       f"tracking.artifact_location={tmp_path}/artifacts"])
    runs = label_runs(load_runs(uri, "lambdaopt"))
    assert set(runs["row"]) == {"MF-λL1"} and runs["is_grid"].all()
    table = paper_table(runs, ["ndcg_at_10"])
    assert table.loc["MF-λL1", "runs"] == 2 and table.loc["MF-λL1", "selected_lam"] in ("0.0001", "0.01")
    assert "L1 λ=0.01 · MF · synthetic · seed 0" in set(runs["tags.mlflow.runName"])
