"""The compiled one-step λ hypergradient (tasks/bpr_lookahead.py) against the tensor path it stands in for
(`hypergrad.one_step_hypergrad`, itself checked against finite differences of real optimizer steps in
test_hypergrad.py), in float64 so that a slip in a formula shows far above rounding."""
import numpy as np
import pytest
import torch

from lambdaopt.models.mf import MatrixFactorization
from lambdaopt.regularizers import hypergrad
from lambdaopt.regularizers.lambda_step import set_row_grads
from lambdaopt.regularizers.lambdaopt import _NO_STATE, LambdaOpt
from lambdaopt.regularizers.lambdas import GRANULARITIES
from lambdaopt.regularizers.lookahead import optimizer_kind
from lambdaopt.tasks.bpr_lookahead import CompiledLookahead
from lambdaopt.tasks.ranking import BPRObjective

from lookahead_setup import OPTIMIZERS, make_setup, train_with_lambda

COMPILED = {"sgd": lambda p: torch.optim.SGD(p, lr=0.5), "adam": lambda p: torch.optim.Adam(p, lr=0.05, fused=True),
            "adam_amsgrad": OPTIMIZERS["adam_amsgrad"]}


def both_paths(model, objective, optimizer, reg, train, valid, sgda=False):
    """(loss, {λ name: gradient}) by the tensor path, then by the compiled one."""
    state, kind = (_NO_STATE, "sgd") if sgda else (optimizer, optimizer_kind(optimizer))
    hp = {"lr": optimizer.param_groups[0]["lr"]} if sgda else optimizer.param_groups[0]
    assert CompiledLookahead.applies(model, kind, hp)
    results = []
    for compiled in (False, True):
        for p in reg.lam.raw.values():
            p.grad = None
        if compiled:
            loss, rows = CompiledLookahead(model)(model, state, kind, hp, reg.lam, train, valid)
            set_row_grads(reg.lam, rows)
        else:
            problem = hypergrad.compact_problem(model, objective, state, kind, train, valid)
            loss = hypergrad.one_step_hypergrad(model, objective, problem, reg.lam, kind, hp)
        results.append((float(loss), {name: p.grad.clone() for name, p in reg.lam.raw.items()}))
    return results


def assert_same(results):
    (tensor_loss, tensor_grads), (compiled_loss, compiled_grads) = results
    assert compiled_loss == pytest.approx(tensor_loss, rel=1e-12)
    assert any(g.abs().max() > 0 for g in tensor_grads.values())  # a check that could fail
    for name in tensor_grads:
        torch.testing.assert_close(compiled_grads[name], tensor_grads[name], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("granularity,warm_steps,item_bias",
                         [(g, 2, True) for g in GRANULARITIES] + [("dui", 0, True), ("dui", 2, False), ("d", 0, False)])
@pytest.mark.parametrize("optimizer_name", list(COMPILED))
def test_compiled_lookahead_equals_the_tensor_path(dataset, optimizer_name, granularity, warm_steps, item_bias):
    """Every granularity, through SGD / Adam / AMSGrad, from a warm optimizer state and from none (the first
    step: torch's zero moments), with and without the item bias."""
    setup = make_setup(dataset, "adam", granularity, warm_steps=warm_steps, item_bias=item_bias)
    model, objective, _, reg, train, valid = setup
    optimizer = COMPILED[optimizer_name](model.parameters())
    for _ in range(warm_steps):  # its own state, from steps on other batches
        optimizer.zero_grad()
        objective.loss(model, objective.valid_batch(np.random.default_rng(9), 24)).backward()
        optimizer.step()
    assert_same(both_paths(model, objective, optimizer, reg, train, valid))


@pytest.mark.parametrize("nonneg", ["softplus", "exp"])
def test_compiled_lookahead_through_the_parametrization_and_for_sgda(dataset, nonneg):
    """λ = softplus(ρ) / exp(ρ) (autograd maps h through it), and SGDA's look-ahead: plain SGD at the
    model optimizer's lr, without its state."""
    model, objective, optimizer, reg, train, valid = make_setup(dataset, "adam_amsgrad", "dui", item_bias=True)
    reg.lam.nonneg = nonneg
    assert_same(both_paths(model, objective, optimizer, reg, train, valid))
    assert_same(both_paths(model, objective, optimizer, reg, train, valid, sgda=True))


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw", "adagrad", "rmsprop"])
def test_compiled_lookahead_declines_what_it_does_not_compute(dataset, optimizer_name):
    """Momentum, weight decay and the other rules stay on the tensor path (lookahead_setup's `sgd` has
    momentum and weight decay, its `adam` weight decay)."""
    model, objective, optimizer, *_ = make_setup(dataset, optimizer_name, "dui", warm_steps=0)
    assert objective.compiled_lookahead(model, optimizer_kind(optimizer), optimizer.param_groups[0]) is None


def test_lambdaopt_takes_the_compiled_path_and_learns_the_same_lambda(dataset):
    """In training (float32, Adam): λ after two λ steps equals the tensor path's to float32 rounding (λ
    stepped by SGD: an Adam step's sign flips with rounding where a gradient entry is ~0)."""
    lams = []
    for compiled in (True, False):
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=8, init_std=0.3)
        objective = BPRObjective(dataset, 24, torch.device("cpu"))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05, amsgrad=True, fused=True)
        reg = LambdaOpt(granularity="dui", init=0.1, lambda_optimizer="sgd", lambda_lr=10.0, grad_clip=None)
        reg.setup(model, objective)
        if not compiled:
            reg._compiled_decided = True  # force the tensor path
        train_with_lambda(model, objective, optimizer, reg, steps=2)
        assert (reg._compiled is not None) == compiled
        lams.append({name: p.detach().clone() for name, p in reg.lam.raw.items()})
    assert (lams[0]["user"] - 0.1).abs().max() > 1e-3  # λ moved
    for name in lams[0]:
        torch.testing.assert_close(lams[0][name], lams[1][name], rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("granularity", ["dui", "global"])  # λ per entry, and one λ (the kernel's 1 × 1 branch)
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_the_model_step_reuses_the_lookaheads_fit_gradient(dataset, optimizer_name, granularity):
    """After λ's step, the model step on the same batch takes the fit gradient the look-ahead summed
    (`TrainFit`) and adds the penalty's under the new λ: the same step as from the triples, to float32
    rounding; handed over once, and only for that batch. Adam for one step: over more, an entry whose
    gradient is ~0 moves by ±lr·(its sign), which rounding decides (here 1 of 320 entries by step 3)."""
    from lambdaopt.tasks.bpr_step import ClosedFormBPRStep

    steps = 3 if optimizer_name == "sgd" else 1

    def step(shared: bool):
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=8, init_std=0.3, item_bias=True)
        objective = BPRObjective(dataset, 24, torch.device("cpu"))
        optimizer = COMPILED[optimizer_name](model.parameters())
        reg = LambdaOpt(granularity=granularity, init=0.1, lambda_lr=0.05)
        reg.setup(model, objective)
        closed_form = ClosedFormBPRStep(model, reg, optimizer)
        calls, from_fit = [], closed_form.compiled.step_from_fit
        closed_form.compiled.step_from_fit = lambda *a, **k: calls.append(1) or from_fit(*a, **k)
        batches = objective.batches(np.random.default_rng(0))
        for index in range(steps):
            batch = next(batches)
            reg.update(model, optimizer, batch, index)
            assert reg._train_fit is not None and reg._train_fit.batch is batch
            loss = closed_form(batch if shared else (*batch,))  # another tuple: not the batch λ looked through
            assert reg._train_fit is None  # taken (or dropped) by the step
        assert reg.train_fit(batch) is None and len(calls) == (steps if shared else 0)
        return float(loss), {name: p.detach().clone() for name, p in model.named_parameters()}

    (shared_loss, shared), (own_loss, own) = step(True), step(False)
    assert shared_loss == pytest.approx(own_loss, rel=1e-5)
    for name in own:
        torch.testing.assert_close(shared[name], own[name], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("granularity", ["dui", "user", "d", "global"])  # λ views, and λ expanded by a copy
def test_kept_views_give_the_lambda_a_fresh_lookahead_gives(dataset, granularity):
    """`CompiledLookahead` and the compiled model step keep NumPy views of the tables, the optimizer state and
    λ between steps; where λ reaches a kernel as a copy (one λ per user, per dimension, shared), the copy is
    made again at every step. λ and θ after several steps must be the bits that a look-ahead and a model step
    made afresh at every step give — also across the step where the optimizer creates its state."""
    lams = []
    for fresh in (False, True):
        torch.manual_seed(0)
        model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=8, init_std=0.3)
        objective = BPRObjective(dataset, 24, torch.device("cpu"))
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05, fused=True)
        reg = LambdaOpt(granularity=granularity, init=0.1, lambda_lr=0.05)
        reg.setup(model, objective)
        batches = objective.batches(np.random.default_rng(0))
        model_step = objective.closed_form_step(model, reg, optimizer)
        for step in range(5):
            if fresh:  # a new CompiledLookahead and model step: nothing kept from the step before
                reg._compiled_decided = False
                model_step = objective.closed_form_step(model, reg, optimizer)
            batch = next(batches)
            reg.update(model, optimizer, batch, step)
            assert reg._compiled is not None and model_step.compiled is not None
            model_step(batch)
        lams.append({**{name: p.detach().clone() for name, p in reg.lam.raw.items()}, **model.state_dict()})
    assert any((lams[0][name] - 0.1).abs().max() > 1e-4 for name in reg.lam.raw)  # λ moved
    for name in lams[0]:
        assert torch.equal(lams[0][name], lams[1][name]), name
