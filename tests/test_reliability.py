"""Divergence stops a run FAILED with a reason (and a sweep goes on); the same config and seed give
bit-identical metrics on CPU with one thread."""
import pytest

from conftest import TINY, compose_config, empty_store_in, run_in, run_in_process, tracked_runs
from lambdaopt.experiment import run

DIVERGING = ["optimizer=sgd", "optimizer.lr=1e30"]  # embeddings overflow float32 within a few steps


@pytest.mark.slow
@pytest.mark.parametrize("extra,needle", [([], "training loss became nan"),
                                          (["trainer.check_finite_grads=true"], "a gradient became NaN/Inf")])
def test_nan_stops_the_run_failed_with_a_reason(tmp_path, extra, needle):
    """In process; the command's one `error:` line for it: test_a_diverging_job_fails_and_the_sweep_goes_on."""
    from lambdaopt.errors import TrainingDiverged

    with pytest.raises(TrainingDiverged, match=needle) as error:
        run_in(tmp_path, [*TINY, *DIVERGING, *extra])
    assert "\n" not in str(error.value)
    (run_,) = tracked_runs(tmp_path, with_parents=True)[1]
    assert run_.info.status == "FAILED"
    assert run_.data.tags["failure_reason"].startswith("TrainingDiverged: ") and needle in run_.data.tags["failure_reason"]


@pytest.mark.slow
def test_a_diverging_job_fails_and_the_sweep_goes_on(tmp_path):
    empty_store_in(tmp_path)
    result = run_in_process("run.py", ["-m", *TINY, "optimizer=sgd", "optimizer.lr=1e30,0.05"], tmp_path, {})
    assert result.returncode == 0, result.stderr
    runs = tracked_runs(tmp_path, with_parents=True)[1]
    parent = [r for r in runs if r.data.tags.get("sweep_role") == "parent"]
    children = [r for r in runs if r.data.tags.get("sweep_role") != "parent"]
    status = {r.data.params["optimizer.lr"]: r.info.status for r in children}
    assert status == {"1e+30": "FAILED", "0.05": "FINISHED"}
    assert result.stderr.count("error: training loss became nan") == 1
    # the sweep's parent run ends FAILED and lists the failed child
    assert len(parent) == 1 and parent[0].info.status == "FAILED" and parent[0].data.tags["n_failed"] == "1"
    assert "optimizer.lr=1e+30" in parent[0].data.tags["failed_jobs"] and "nan" in parent[0].data.tags["failed_jobs"]


@pytest.mark.slow
def test_a_failed_job_returns_its_run_id_to_the_sweep(tmp_path, monkeypatch):
    """What a sweep callback (e.g. a parent run listing failed children) receives from a diverging job."""
    from types import SimpleNamespace

    from hydra.core.hydra_config import HydraConfig

    from lambdaopt.experiment import hydra_task

    job = SimpleNamespace(mode=SimpleNamespace(name="MULTIRUN"), overrides=SimpleNamespace(task=[]),
                          sweep=SimpleNamespace(dir="multirun/x"), job=SimpleNamespace(num=0))
    empty_store_in(tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(HydraConfig, "initialized", staticmethod(lambda: True))
    monkeypatch.setattr(HydraConfig, "get", staticmethod(lambda: job))
    returned = hydra_task(compose_config([*TINY, *DIVERGING]))
    (run_,) = tracked_runs(tmp_path, with_parents=True)[1]
    assert returned["status"] == "FAILED" and returned["run_id"] == run_.info.run_id and run_.info.status == "FAILED"


@pytest.mark.parametrize("regularizer", ["fixed", "lambdaopt_dui"])
def test_same_config_and_seed_give_bit_identical_metrics(regularizer):
    cfg = compose_config([*TINY, f"regularizer={regularizer}", "tracking.enabled=false", "num_threads=1"])
    first, second = run(cfg), run(cfg)
    assert first.test == second.test and first.valid == second.valid and first.best_epoch == second.best_epoch
