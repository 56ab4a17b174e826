"""The same runs on a CUDA device as on the CPU: every model, regularizer and optimizer family trains on
the GPU, keeps its tensors there, and lands where the CPU run lands; λOpt's hypergradients on the GPU match
finite differences of the real look-ahead there.

Skipped without a CUDA device — the one hardware reason CI skips anything (CI machines have no GPU). A run
on either device draws the same batches (negative sampling is NumPy's) from the same initial weights (built
on the CPU, then moved), so the two differ only by floating-point rounding (CUDA's reductions and atomic
adds sum in another order): the test metrics must agree to a tolerance, not bit for bit.
"""
import math

import pytest
import torch

import lambdaopt
from lambdaopt.errors import ConfigError
from lambdaopt.regularizers import hypergrad
from lambdaopt.regularizers.lookahead import optimizer_kind

from conftest import TINY
from lookahead_setup import check_against_fd, make_setup

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

# Ranking runs on TINY's data, 6 epochs of 64-triple batches with Adam: long enough that every
# regularizer moves the metrics away from the others' (3 epochs of the default SGD leave λ at its bound).
RANKING = [*TINY, "trainer.max_epochs=6", "trainer.batch_size=64", "optimizer=adam"]
COMPLETION = ["dataset=lowrank", "trainer.max_epochs=30"]  # 3,000 full-batch steps
RUNS = {
    "MF-BPR, fixed λ, SGD (the default run, TINY)": TINY,
    "MF-BPR, fixed λ, Adam": RANKING,
    "MF-BPR, fixed λ, SparseAdam": [*TINY, "optimizer=sparse_adam", "model.item_bias=false"],
    "MF-BPR, fixed λ, autograd step": [*RANKING, "trainer.closed_form_step=false"],
    "MF-BPR, L1": [*RANKING, "regularizer=l1"],
    **{f"λOpt {g}": [*RANKING, f"regularizer=lambdaopt_{g}"]
       for g in ("global", "d", "double_d", "user", "item", "user_item", "du", "di", "dui")},
    "λOpt DUI, λ by SparseAdam": [*RANKING, "regularizer=lambdaopt_dui", "regularizer.lambda_optimizer=sparse_adam"],
    "λOpt DUI, unrolled K=2": [*RANKING, "regularizer=lambdaopt_dui", "regularizer.hypergrad=unrolled",
                               "regularizer.unroll_steps=2"],
    "λOpt DUI, IFT": [*RANKING, "regularizer=lambdaopt_dui", "regularizer.hypergrad=ift"],
    "higher (all parameters)": [*RANKING, "regularizer=higher"],
    "SGDA": [*RANKING, "regularizer=sgda"],
    "AMF": [*RANKING, "regularizer=amf"],
    "NeuMF": [*TINY, "trainer.max_epochs=6", "trainer.batch_size=64", "model=neumf"],
    "rating MF (explicit feedback)": [*RANKING, "dataset.feedback=explicit"],
    "deep MF, GroupRMSprop": [*COMPLETION, "model=deep_mf"],
    "SVD-parametrized MF": [*COMPLETION, "model=svd_mf"],
    "nuclear norm (SVT)": ["dataset=lowrank", "model=nuclear_norm"],
}


def tiny_run(overrides: list[str], device: str):
    return lambdaopt.run([*overrides, f"device={device}", "tracking.enabled=false"])


@pytest.mark.parametrize("overrides", list(RUNS.values()), ids=list(RUNS))
def test_a_run_on_cuda_lands_where_the_cpu_run_lands(overrides):
    cpu, cuda = tiny_run(overrides, "cpu"), tiny_run(overrides, "cuda")
    assert all(p.is_cuda for p in cuda.model.parameters())
    assert cuda.test.keys() == cpu.test.keys()
    for key, expected in cpu.test.items():
        got = cuda.test[key]
        assert math.isfinite(got), key
        # ranking metrics live in [0, 1]: an item swapped near the cut moves HR/NDCG by ~1/|test| per user
        bounded = key == "auc" or "@" in key
        assert got == pytest.approx(expected, rel=0.05, abs=0.02 if bounded else 1e-6), key


def test_per_sample_sgd_on_cuda_is_refused_in_one_line():
    with pytest.raises(ConfigError, match="compiled CPU loop"):
        tiny_run([*TINY, "trainer.per_sample=true"], "cuda")


@pytest.mark.parametrize("granularity", ["global", "d", "user_item", "dui"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_hypergradient_on_cuda_matches_finite_differences(dataset, optimizer_name, granularity):
    model, objective, optimizer, reg, train, valid = make_setup(dataset, optimizer_name, granularity, device="cuda")
    kind = optimizer_kind(optimizer)
    problem = hypergrad.compact_problem(model, objective, optimizer, kind, train, valid)
    hypergrad.one_step_hypergrad(model, objective, problem, reg.lam, kind, optimizer.param_groups[0])
    assert all(p.grad.is_cuda for p in reg.lam.raw.values())
    check_against_fd(model, objective, optimizer, reg, train, valid, steps=1)
