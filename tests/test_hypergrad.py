"""λOpt hypergradients against central finite differences of the *real* look-ahead.

The reference look-ahead copies the model and its torch.optim optimizer (state included), takes
real optimizer steps on the training batch with the penalty at λ ± εv, and reads the validation
loss; the hypergradient must match (L(λ+εv) − L(λ−εv)) / 2ε along random directions v.
"""
import copy
import inspect

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from lambdaopt.config.core import SplitConfig
from lambdaopt.data.synthetic import load_synthetic
from lambdaopt.models.mf import MatrixFactorization
from lambdaopt.tasks.ranking import BPRObjective
from lambdaopt.regularizers import hypergrad
from lambdaopt.regularizers.lambdaopt import LambdaOpt
from lambdaopt.regularizers.lambdas import GRANULARITIES
from lambdaopt.regularizers.lookahead import optimizer_kind

OPTIMIZERS = {
    # fused=True where the configs default to it (lambdaopt/conf/optimizer); AdamW and RMSprop cover the unfused kernels
    "sgd": lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, weight_decay=1e-3, fused=True),
    "sgd_nesterov_dampening": lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9, nesterov=True),
    "sgd_dampening": lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.5, dampening=0.3),
    "adam": lambda p: torch.optim.Adam(p, lr=0.05, weight_decay=1e-3, fused=True),
    "adam_amsgrad": lambda p: torch.optim.Adam(p, lr=0.05, amsgrad=True, fused=True),
    "adamw": lambda p: torch.optim.AdamW(p, lr=0.05, weight_decay=1e-2),
    "adagrad": lambda p: torch.optim.Adagrad(p, lr=0.1, lr_decay=0.01, weight_decay=1e-3, fused=True),
    "rmsprop": lambda p: torch.optim.RMSprop(p, lr=0.01, weight_decay=1e-3),
    "rmsprop_centered_momentum": lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5, centered=True),
}
CORE_OPTIMIZERS = ["sgd", "adam", "adagrad", "rmsprop"]


@pytest.fixture(scope="module")
def dataset():
    return load_synthetic(split=OmegaConf.structured(SplitConfig), n_users=40, n_items=30, rank=3,
                          mean_interactions=10, min_interactions=5, seed=1)


def make_setup(dataset, optimizer_name, granularity, dim=4, batch_size=24, warm_steps=2, item_bias=False):
    torch.manual_seed(0)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=dim, init_std=0.3, item_bias=item_bias).double()
    objective = BPRObjective(dataset, batch_size, torch.device("cpu"))
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    rng = np.random.default_rng(0)
    batches = objective.batches(rng)
    for _ in range(warm_steps):  # non-trivial optimizer state
        batch = next(batches)
        optimizer.zero_grad()
        objective.loss(model, batch).backward()
        optimizer.step()
    train, valid = next(batches), objective.valid_batch(rng, batch_size)
    reg = LambdaOpt(granularity=granularity, init=0.0)
    reg.setup(model, objective)
    reg.lam.double()
    with torch.no_grad():  # λ strictly positive, away from the clamp boundary
        for p in reg.lam.raw.values():
            p.copy_(torch.rand(p.shape, generator=torch.Generator().manual_seed(3), dtype=torch.float64) * 0.5 + 0.05)
    return model, objective, optimizer, reg, train, valid


def real_lookahead(model, objective, optimizer, reg, lam_values, train, valid, steps):
    """Validation loss after `steps` real torch.optim steps with the training penalty at λ."""
    model = copy.deepcopy(model)
    accepted = inspect.signature(type(optimizer)).parameters
    group = {k: v for k, v in optimizer.param_groups[0].items() if k != "params" and k in accepted}
    real = type(optimizer)(model.parameters(), **group)
    real.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    for _ in range(steps):
        rows = model.factor_rows(train[0], torch.cat(train[1:]))
        pen = sum((reg.lam.for_rows(role, idx, lam_values) * getattr(model, name)[idx] ** 2).sum()
                  for name, (role, idx) in rows.items()) / len(train[0])
        real.zero_grad()
        (objective.loss(model, train) + pen).backward()
        real.step()
    with torch.no_grad():
        return float(objective.loss(model, valid))


def finite_difference(model, objective, optimizer, reg, train, valid, steps, direction, eps=1e-6):
    base = {k: v.detach().clone() for k, v in reg.lam.values().items()}
    plus = {k: base[k] + eps * direction[k] for k in base}
    minus = {k: base[k] - eps * direction[k] for k in base}
    return (real_lookahead(model, objective, optimizer, reg, plus, train, valid, steps)
            - real_lookahead(model, objective, optimizer, reg, minus, train, valid, steps)) / (2 * eps)


def check_against_fd(model, objective, optimizer, reg, train, valid, steps, n_directions=2):
    grads = {name: p.grad.clone() for name, p in reg.lam.raw.items()}
    assert any(g.abs().sum() > 0 for g in grads.values())
    gen = torch.Generator().manual_seed(11)
    directions = [{k: torch.randn(g.shape, generator=gen, dtype=torch.float64) for k, g in grads.items()}
                  for _ in range(n_directions)]
    directions.append({k: g / (g.norm() + 1e-300) for k, g in grads.items()})  # along the gradient itself
    for direction in directions:
        analytic = sum(float((grads[k] * direction[k]).sum()) for k in grads)
        numeric = finite_difference(model, objective, optimizer, reg, train, valid, steps, direction)
        assert analytic == pytest.approx(numeric, rel=1e-3, abs=1e-10)


def one_step(method, model, objective, problem, lam, kind, hp):
    """The K = 1 hypergradient by `method`: closed-form ∂θ'/∂g (what training uses) or autograd through the step."""
    if method == "closed_form":
        return hypergrad.one_step_hypergrad(model, objective, problem, lam, kind, hp)
    return hypergrad.truncated_hypergrad(model, objective, problem, lam, kind, hp, steps=1)


@pytest.mark.parametrize("method", ["closed_form", "autograd"])
@pytest.mark.parametrize("granularity", list(GRANULARITIES))
@pytest.mark.parametrize("optimizer_name", list(OPTIMIZERS))
def test_truncated_hypergradient_matches_finite_differences(dataset, optimizer_name, granularity, method):
    model, objective, optimizer, reg, train, valid = make_setup(dataset, optimizer_name, granularity)
    kind = optimizer_kind(optimizer)
    problem = hypergrad.compact_problem(model, optimizer, kind, train, valid)
    one_step(method, model, objective, problem, reg.lam, kind, optimizer.param_groups[0])
    check_against_fd(model, objective, optimizer, reg, train, valid, steps=1)


@pytest.mark.parametrize("nonneg", ["softplus", "exp"])
@pytest.mark.parametrize("optimizer_name", ["adam_amsgrad", "adamw", "rmsprop_centered_momentum"])
def test_closed_form_one_step_equals_autograd_through_the_step(dataset, optimizer_name, nonneg):
    """Also through λ's parametrization, and at the first step (no optimizer state yet)."""
    for warm_steps in (0, 2):
        model, objective, optimizer, reg, train, valid = make_setup(dataset, optimizer_name, "dui", warm_steps=warm_steps)
        reg.lam.nonneg = nonneg
        kind, hp = optimizer_kind(optimizer), optimizer.param_groups[0]
        problem = hypergrad.compact_problem(model, optimizer, kind, train, valid)
        loss = hypergrad.one_step_hypergrad(model, objective, problem, reg.lam, kind, hp)
        closed = {k: p.grad.clone() for k, p in reg.lam.raw.items()}
        assert float(loss) == pytest.approx(float(hypergrad.truncated_hypergrad(model, objective, problem, reg.lam, kind, hp)), rel=1e-12)
        for k, p in reg.lam.raw.items():
            torch.testing.assert_close(closed[k], p.grad, rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("steps", [2, 3])
@pytest.mark.parametrize("granularity", ["dui", "d", "user_item"])
@pytest.mark.parametrize("optimizer_name", CORE_OPTIMIZERS)
def test_unrolled_hypergradient_matches_finite_differences(dataset, optimizer_name, granularity, steps):
    model, objective, optimizer, reg, train, valid = make_setup(dataset, optimizer_name, granularity, item_bias=True)
    kind = optimizer_kind(optimizer)
    problem = hypergrad.compact_problem(model, optimizer, kind, train, valid)
    hypergrad.unrolled_hypergrad(model, objective, problem, reg.lam, kind, optimizer.param_groups[0], steps=steps)
    check_against_fd(model, objective, optimizer, reg, train, valid, steps=steps)


@pytest.mark.parametrize("optimizer_name", CORE_OPTIMIZERS)
def test_compact_truncated_equals_full_second_order_at_one_step(dataset, optimizer_name):
    """One step from θ_t: truncated (rows only, plain autograd) = fully second-order (all params, torch.func)."""
    model, objective, optimizer, reg, train, valid = make_setup(dataset, optimizer_name, "dui")
    kind, hp = optimizer_kind(optimizer), optimizer.param_groups[0]
    hypergrad.truncated_hypergrad(model, objective, hypergrad.compact_problem(model, optimizer, kind, train, valid),
                                  reg.lam, kind, hp)
    compact = {k: p.grad.clone() for k, p in reg.lam.raw.items()}
    hypergrad.unrolled_hypergrad(model, objective, hypergrad.full_problem(model, optimizer, kind, train, valid),
                                 reg.lam, kind, hp, steps=1)
    for k, p in reg.lam.raw.items():
        torch.testing.assert_close(p.grad, compact[k], rtol=1e-9, atol=1e-14)
    # and two unrolled steps agree between the compact and the full problem
    hypergrad.unrolled_hypergrad(model, objective, hypergrad.compact_problem(model, optimizer, kind, train, valid),
                                 reg.lam, kind, hp, steps=2)
    compact = {k: p.grad.clone() for k, p in reg.lam.raw.items()}
    hypergrad.unrolled_hypergrad(model, objective, hypergrad.full_problem(model, optimizer, kind, train, valid),
                                 reg.lam, kind, hp, steps=2)
    for k, p in reg.lam.raw.items():
        torch.testing.assert_close(p.grad, compact[k], rtol=1e-9, atol=1e-14)


@pytest.mark.parametrize("method", ["closed_form", "autograd"])
@pytest.mark.parametrize("optimizer_name", ["sgd", "adam"])
def test_truncated_hypergradient_through_a_deep_factorization(dataset, optimizer_name, method):
    """Learned λ on the outer factors of W = W_3 W_2 W_1: the inner factor steps in the look-ahead too."""
    from lambdaopt.models.deep_mf import DeepMatrixFactorization

    torch.manual_seed(0)
    model = DeepMatrixFactorization(dataset.n_users, dataset.n_items, depth=3, hidden_sizes=[4, 4],
                                    init="gaussian", init_scale=2.0).double()
    objective = BPRObjective(dataset, 24, torch.device("cpu"))
    optimizer = OPTIMIZERS[optimizer_name](model.parameters())
    rng = np.random.default_rng(0)
    batches = objective.batches(rng)
    for _ in range(2):
        batch = next(batches)
        optimizer.zero_grad()
        objective.loss(model, batch).backward()
        optimizer.step()
    train, valid = next(batches), objective.valid_batch(rng, 24)
    reg = LambdaOpt(granularity="dui")
    reg.setup(model, objective)
    reg.lam.double()
    with torch.no_grad():
        for p in reg.lam.raw.values():
            p.uniform_(0.05, 0.5)
    kind = optimizer_kind(optimizer)
    problem = hypergrad.compact_problem(model, optimizer, kind, train, valid)
    assert "hidden.0" in problem.params
    one_step(method, model, objective, problem, reg.lam, kind, optimizer.param_groups[0])
    check_against_fd(model, objective, optimizer, reg, train, valid, steps=1)
