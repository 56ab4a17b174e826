"""λOpt hypergradients against central finite differences of the *real* look-ahead.

The reference look-ahead copies the model and its torch.optim optimizer (state included), takes
real optimizer steps on the training batch with the penalty at λ ± εv, and reads the validation
loss; the hypergradient must match (L(λ+εv) − L(λ−εv)) / 2ε along random directions v.
"""
import numpy as np
import pytest
import torch

from lambdaopt.regularizers import hypergrad
from lambdaopt.regularizers.lambdaopt import LambdaOpt
from lambdaopt.regularizers.lambdas import GRANULARITIES
from lambdaopt.regularizers.lookahead import optimizer_kind
from lambdaopt.tasks.ranking import BPRObjective

from lookahead_setup import CORE_OPTIMIZERS, OPTIMIZERS, check_against_fd, make_setup

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
    problem = hypergrad.compact_problem(model, objective, optimizer, kind, train, valid)
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
        problem = hypergrad.compact_problem(model, objective, optimizer, kind, train, valid)
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
    problem = hypergrad.compact_problem(model, objective, optimizer, kind, train, valid)
    hypergrad.unrolled_hypergrad(model, objective, problem, reg.lam, kind, optimizer.param_groups[0], steps=steps)
    check_against_fd(model, objective, optimizer, reg, train, valid, steps=steps)


@pytest.mark.parametrize("optimizer_name", CORE_OPTIMIZERS)
def test_compact_truncated_equals_full_second_order_at_one_step(dataset, optimizer_name):
    """One step from θ_t: truncated (rows only, plain autograd) = fully second-order (all params, torch.func)."""
    model, objective, optimizer, reg, train, valid = make_setup(dataset, optimizer_name, "dui")
    kind, hp = optimizer_kind(optimizer), optimizer.param_groups[0]
    hypergrad.truncated_hypergrad(model, objective, hypergrad.compact_problem(model, objective, optimizer, kind, train, valid),
                                  reg.lam, kind, hp)
    compact = {k: p.grad.clone() for k, p in reg.lam.raw.items()}
    hypergrad.unrolled_hypergrad(model, objective, hypergrad.full_problem(model, objective, optimizer, kind, train, valid),
                                 reg.lam, kind, hp, steps=1)
    for k, p in reg.lam.raw.items():
        torch.testing.assert_close(p.grad, compact[k], rtol=1e-9, atol=1e-14)
    # and two unrolled steps agree between the compact and the full problem
    hypergrad.unrolled_hypergrad(model, objective, hypergrad.compact_problem(model, objective, optimizer, kind, train, valid),
                                 reg.lam, kind, hp, steps=2)
    compact = {k: p.grad.clone() for k, p in reg.lam.raw.items()}
    hypergrad.unrolled_hypergrad(model, objective, hypergrad.full_problem(model, objective, optimizer, kind, train, valid),
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
    problem = hypergrad.compact_problem(model, objective, optimizer, kind, train, valid)
    assert "hidden.0" in problem.params
    one_step(method, model, objective, problem, reg.lam, kind, optimizer.param_groups[0])
    check_against_fd(model, objective, optimizer, reg, train, valid, steps=1)


@pytest.mark.parametrize("granularity", ["dui", "d", "user_item"])
@pytest.mark.parametrize("optimizer_name", CORE_OPTIMIZERS)
def test_rating_hypergradients_match_finite_differences(dataset, optimizer_name, granularity):
    """λOpt on rating regression (MSE batches of (user, item, rating)): the one-step hypergradient on the
    compact problem, the two-step unrolled one on the full graph, each against the real look-ahead."""
    for steps, build in ((1, hypergrad.compact_problem), (2, hypergrad.full_problem)):
        model, objective, optimizer, reg, train, valid = make_setup(dataset, optimizer_name, granularity,
                                                                    item_bias=True, task="rating")
        assert len(train) == 3 and train[2].dtype == torch.float64 and train[2].max() > 1  # ratings, not triples
        kind, hp = optimizer_kind(optimizer), optimizer.param_groups[0]
        problem = build(model, objective, optimizer, kind, train, valid)
        if steps == 1:
            hypergrad.one_step_hypergrad(model, objective, problem, reg.lam, kind, hp)
        else:
            hypergrad.unrolled_hypergrad(model, objective, problem, reg.lam, kind, hp, steps=steps)
        check_against_fd(model, objective, optimizer, reg, train, valid, steps=steps)
