"""Shared by the hypergradient tests: a small MF-BPR problem after a few real optimizer steps, and
central finite differences of the *real* look-ahead (a copy of the model and its torch.optim optimizer
stepped with the penalty at λ ± εv) to check hypergradients against."""
import copy
import dataclasses
import inspect

import numpy as np
import pytest
import torch

from lambdaopt.models.mf import MatrixFactorization
from lambdaopt.regularizers.lambdaopt import LambdaOpt
from lambdaopt.data.interactions import Interactions
from lambdaopt.tasks.ranking import BPRObjective
from lambdaopt.tasks.rating import RatingObjective

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


def with_ratings(dataset):
    """`dataset` with ratings 1–5 drawn at random in place of the implicit 1s: a rating-regression problem."""
    rng = np.random.default_rng(5)

    def rated(part):
        return Interactions(part.users, part.items, part.timestamps, rng.integers(1, 6, len(part)).astype(np.float32))

    return dataclasses.replace(dataset, train=rated(dataset.train), valid=rated(dataset.valid), test=rated(dataset.test))


def make_setup(dataset, optimizer_name, granularity, dim=4, batch_size=24, warm_steps=2, item_bias=False,
               task="ranking", device="cpu"):
    """task: ranking (BPR triples) or rating (MSE on the ratings of `with_ratings(dataset)`); everything on
    `device` (the model's init and λ's draw are the CPU's either way)."""
    torch.manual_seed(0)
    device = torch.device(device)
    model = MatrixFactorization(dataset.n_users, dataset.n_items, dim=dim, init_std=0.3, item_bias=item_bias)
    model = model.double().to(device)
    if task == "rating":
        objective = RatingObjective(with_ratings(dataset), batch_size, device)
        objective.train, objective.valid_ratings = (tuple(t.double() if t.is_floating_point() else t for t in part)
                                                    for part in (objective.train, objective.valid_ratings))
    else:
        objective = BPRObjective(dataset, batch_size, device)
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
    reg.to(device)
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
        rows = model.factor_rows(*objective.batch_ids(train))
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
    directions = [{k: torch.randn(g.shape, generator=gen, dtype=torch.float64).to(g.device) for k, g in grads.items()}
                  for _ in range(n_directions)]
    directions.append({k: g / (g.norm() + 1e-300) for k, g in grads.items()})  # along the gradient itself
    for direction in directions:
        analytic = sum(float((grads[k] * direction[k]).sum()) for k in grads)
        numeric = finite_difference(model, objective, optimizer, reg, train, valid, steps, direction)
        assert analytic == pytest.approx(numeric, rel=1e-3, abs=1e-10)


def train_with_lambda(model, objective, optimizer, reg, steps: int, batch_size: int = 24) -> None:
    """`steps` training steps as the trainer takes them with learned λ: λ's update, then the model's step
    (autograd) under the new λ, on batches of a fixed draw."""
    batches = objective.batches(np.random.default_rng(0))
    for step in range(steps):
        batch = next(batches)
        reg.update(model, optimizer, batch, step)
        optimizer.zero_grad()
        (objective.loss(model, batch) + reg.penalty(model, {}, batch_size)).backward()
        optimizer.step()
