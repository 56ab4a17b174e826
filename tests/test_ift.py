"""The IFT hypergradient against finite differences of a converged inner problem (tiny model)."""
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


def flatten(params, names):
    return torch.cat([params[n].flatten() for n in names])


def unflatten(flat, like, names):
    out, offset = {}, 0
    for n in names:
        out[n] = flat[offset:offset + like[n].numel()].view_as(like[n])
        offset += like[n].numel()
    return out


def solve_inner(model, objective, problem, lam, values, start):
    """argmin_θ L_train(θ, λ) by L-BFGS, then Newton steps with the exact Hessian (to ~1e-14)."""
    names = list(start)

    def train_loss(flat):
        theta = unflatten(flat, start, names)
        return (objective.loss(hypergrad.FunctionalModel(model, theta), problem.train)
                + hypergrad.penalty(problem, theta, lam, values))

    flat = flatten(start, names).clone().requires_grad_(True)
    lbfgs = torch.optim.LBFGS([flat], lr=1, max_iter=3000, tolerance_grad=1e-12, tolerance_change=1e-15,
                              history_size=50, line_search_fn="strong_wolfe")

    def closure():
        lbfgs.zero_grad()
        loss = train_loss(flat)
        loss.backward()
        return loss

    lbfgs.step(closure)
    flat = flat.detach()
    for _ in range(5):
        gradient = torch.func.grad(train_loss)(flat)
        flat = flat - torch.linalg.solve(torch.func.hessian(train_loss)(flat), gradient)
    assert torch.func.grad(train_loss)(flat).abs().max() < 1e-12
    return unflatten(flat, start, names), torch.linalg.eigvalsh(torch.func.hessian(train_loss)(flat))


def test_ift_hypergradient_matches_converged_finite_differences():
    torch.manual_seed(0)
    dataset = load_synthetic(split=OmegaConf.structured(SplitConfig), n_users=12, n_items=10, rank=2,
                             mean_interactions=6, min_interactions=5, seed=1)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=2, init_std=0.5, item_bias=False).double()
    objective = BPRObjective(dataset, 10**6, torch.device("cpu"))  # the whole training set is one batch
    rng = np.random.default_rng(0)
    train, valid = next(objective.batches(rng)), objective.valid_batch(rng, 40)
    reg = LambdaOpt(granularity="dui")
    reg.setup(model, objective)
    reg.lam.double()
    with torch.no_grad():  # distinct λ per entry: no rotational symmetry, so the optimum is isolated
        for p in reg.lam.raw.values():
            p.copy_(torch.rand(p.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3)) * 0.2 + 0.05)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    problem = hypergrad.compact_problem(model, objective, optimizer, "sgd", train, valid)
    values = {k: v.detach() for k, v in reg.lam.values().items()}
    theta_star, eigenvalues = solve_inner(model, objective, problem, reg.lam, values, problem.params)
    assert eigenvalues.min() > 0  # a strict local minimum: the IFT applies

    problem.params = theta_star
    alpha = 1.0 / float(eigenvalues.max())
    steps = int(np.log(1e-12) / np.log(1 - float(eigenvalues.min()) * alpha)) + 1
    hypergrad.ift_hypergrad(model, objective, problem, reg.lam, neumann_steps=steps, alpha=alpha)
    grads = {k: p.grad.clone() for k, p in reg.lam.raw.items()}

    def valid_loss_at(lam_values):
        theta, _ = solve_inner(model, objective, problem, reg.lam, lam_values, theta_star)
        with torch.no_grad():
            return float(objective.loss(hypergrad.FunctionalModel(model, theta), problem.valid))

    gen = torch.Generator().manual_seed(5)
    for _ in range(2):
        direction = {k: torch.randn(g.shape, generator=gen, dtype=torch.float64) for k, g in grads.items()}
        eps = 1e-5
        numeric = (valid_loss_at({k: values[k] + eps * direction[k] for k in values})
                   - valid_loss_at({k: values[k] - eps * direction[k] for k in values})) / (2 * eps)
        analytic = sum(float((grads[k] * direction[k]).sum()) for k in grads)
        assert analytic == pytest.approx(numeric, rel=1e-3)
