"""Hypergradients of the look-ahead validation loss with respect to λ.

Notation: θ_t the model parameters now, g(θ, λ) = ∇_θ [L_fit(θ; train batch) + Ω(θ, λ)], with
Ω(θ, λ) = Σ_{occurrences r in the batch} λ_r ⊙ θ_r² / B exactly as in training, and
θ_{k+1} = step(θ_k, g(θ_k, λ); optimizer state) the model's own optimizer (lookahead.py).
The λ-objective is the validation BPR loss after K simulated steps, L_val(θ_K(λ)).

* truncated — ∂L_val(θ_K)/∂λ with each fit gradient ∇L_fit(θ_k) treated as a constant. For K = 1
  this is exact: θ_0 = θ_t does not depend on λ, so λ reaches θ_1 only through ∇Ω = 2λ⊙θ/B (and,
  for Adam/RMSprop/Adagrad, through the moment estimates that contain it). Plain autograd.
* unrolled — the exact derivative for K steps: later fit gradients depend on λ through θ_k, which
  brings in Hessian-vector products. Built with `torch.func.grad` nested in `torch.func.grad` (the
  first fit gradient, at θ_t, does not depend on λ and is computed once outside).
* ift — the implicit-function-theorem hypergradient at θ_t taken as the inner optimum θ*(λ):
      dL_val/dλ = − ∇_θL_val · H⁻¹ · ∂²L_train/∂θ∂λ,   H = ∇²_θ L_train(θ_t, λ),
  with H⁻¹v ≈ α Σ_{j=0}^{J} (I − αH)^j v (Neumann series, Lorraine et al. 2020).

All three run on a *compact* problem: only the rows of the user/item tables touched by the train
or validation batch enter (the others cannot change the look-ahead validation loss), with the
optimizer's state sliced to those rows; parameters shared by all users/items (the inner factors of
a deep MF) enter whole. `full_problem` builds the same problem over every model
parameter (no slicing) — the generic, fully second-order path used by `regularizer=higher`.

For MF-BPR on the CPU looking ahead through SGD or Adam, `one_step_hypergrad`'s result comes from one
compiled pass instead (the objective's `compiled_lookahead`: tasks/bpr_lookahead.py; LambdaOpt picks it).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.func import functional_call, grad as func_grad

from lambdaopt.regularizers.lambdas import LambdaTables
from lambdaopt.regularizers.lookahead import gather_state, simulate_step, step_and_derivative


class FunctionalModel:
    """`model` with its parameters swapped for `params` (a dict, possibly of compact row tables)."""

    def __init__(self, model, params: dict[str, torch.Tensor]):
        self.model, self.params = model, params
        self.scores_item_blocks = model.scores_item_blocks

    def score(self, users, items):
        return functional_call(self.model, self.params, (users, items))


@dataclass
class LookaheadProblem:
    """θ_t, the optimizer state and both batches, with ids pointing into `params`' rows.

    penalized: (param name, role, entity id of each row of params[name], how often the train batch
    penalizes that row (float, 0 for rows only the validation batch touches))."""

    params: dict[str, torch.Tensor]
    state: dict[str, dict]
    train: tuple
    valid: tuple
    penalized: list[tuple[str, str, torch.Tensor, torch.Tensor]]
    batch_size: int


def compact_problem(model, objective, optimizer, kind, train, valid) -> LookaheadProblem:
    """Restrict the look-ahead to the rows the two batches touch (see module docstring); the objective
    names them (`batch_ids`) and rebuilds its batches on the compact row numbers (`with_ids`)."""
    (users, items), (v_users, v_items) = objective.batch_ids(train), objective.batch_ids(valid)
    unique_users, user_index = torch.unique(torch.cat([users, v_users]), return_inverse=True)
    unique_items, item_index = torch.unique(torch.cat([items, v_items]), return_inverse=True)
    unique = {"user": unique_users, "item": unique_items}
    n_u, n_i = len(users), len(items)
    train_c = objective.with_ids(train, user_index[:n_u], item_index[:n_i])
    valid_c = objective.with_ids(valid, user_index[n_u:], item_index[n_i:])
    params, state = {}, {}
    tables = model.entity_tables()
    for name, param in model.named_parameters():
        if name in tables:  # only the rows the batches touch
            params[name] = param.detach().index_select(0, unique[tables[name]])
            state[name] = gather_state(optimizer, kind, param, unique[tables[name]])
        else:  # shared weights (deep factors, MLPs) step too, whole
            params[name] = param.detach()
            state[name] = gather_state(optimizer, kind, param)
    occurrences = {"user": user_index[:n_u], "item": item_index[:n_i]}  # the train batch's reads: penalized
    counts = {role: torch.bincount(occurrences[role], minlength=len(unique[role])).to(params_dtype(params))
              for role in unique}
    penalized = [(name, role, unique[role], counts[role]) for name, (role, _) in model.factor_rows(users, items).items()]
    return LookaheadProblem(params, state, train_c, valid_c, penalized, len(train[0]))


def full_problem(model, objective, optimizer, kind, train, valid) -> LookaheadProblem:
    """The same problem over every parameter of the model (dense; any model with factor_rows)."""
    params = {name: p.detach() for name, p in model.named_parameters()}
    state = {name: gather_state(optimizer, kind, p) for name, p in model.named_parameters()}
    penalized = []
    for name, (role, rows) in model.factor_rows(*objective.batch_ids(train)).items():
        n_rows = params[name].shape[0]
        entities = torch.arange(n_rows, device=rows.device)
        penalized.append((name, role, entities, torch.bincount(rows, minlength=n_rows).to(params[name].dtype)))
    return LookaheadProblem(params, state, train, valid, penalized, len(train[0]))


def params_dtype(params: dict[str, torch.Tensor]) -> torch.dtype:
    return next(iter(params.values())).dtype


def penalty(problem: LookaheadProblem, params, lam: LambdaTables, values) -> torch.Tensor:
    """Ω(θ, λ) = Σ_rows count · λ ⊙ θ_row² / B — the training penalty, term for term."""
    terms = [(params[name], role, entities, counts) for name, role, entities, counts in problem.penalized]
    return lam.penalty(terms, values, problem.batch_size)


def penalty_grad(problem: LookaheadProblem, params, lam: LambdaTables, values) -> dict[str, torch.Tensor]:
    """∇_θ Ω = 2 · count · λ ⊙ θ / B for every penalized row (rows are distinct: no scatter needed)."""
    return {name: lam.penalty_grad(params[name], role, entities, counts, values, problem.batch_size)
            for name, role, entities, counts in problem.penalized}


def loss_grads(model, objective, params: dict[str, torch.Tensor], batch) -> tuple[torch.Tensor, dict]:
    """The objective's loss on `batch` at `params` (detached) and its gradient for every entry of
    `params` — zeros where the loss does not reach — from one backward, or in closed form where the
    objective has one for this model (MF-BPR: tasks/bpr_step.py)."""
    closed = objective.closed_form_grads(model, params, batch)
    if closed is not None:
        return closed
    theta = {name: t.detach().requires_grad_(True) for name, t in params.items()}
    with torch.enable_grad():
        loss = objective.loss(FunctionalModel(model, theta), batch)
        grads = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
    return loss.detach(), {name: torch.zeros_like(t) if g is None else g for (name, t), g in zip(theta.items(), grads)}


def _step_all(kind, hp, params, grads, state):
    new_params, new_state = {}, {}
    for name, theta in params.items():
        new_params[name], new_state[name] = simulate_step(kind, hp, theta, grads[name], state[name])
    return new_params, new_state


def one_step_hypergrad(model, objective, problem, lam: LambdaTables, kind, hp) -> torch.Tensor:
    """The K = 1 hypergradient in closed form; set `.grad` of λ's raw parameters, return L_val(θ').

    At one step the fit gradient is taken at θ_t and does not depend on λ, so this is exact (the
    truncated and fully second-order hypergradients coincide). With g = ∇L_fit(θ_t) + 2·c·λ⊙θ_t/B
    (c: occurrences of the row in the train batch) and θ' = step(θ_t, g):

        dL_val/dλ = Σ_rows  G' ⊙ J ⊙ ∂g/∂λ,   G' = ∇_θ' L_val(θ'),   J = ∂θ'/∂g (lookahead.step_and_derivative)

    J is diagonal because every supported optimizer updates elementwise, so no graph through the
    optimizer step is built: one backward of L_val at θ' gives G', and the last product — linear in
    λ through the penalty gradient — is differentiated by autograd, which maps the per-row λ back to
    λ's shape (per dimension, user, item, ...) and through its parametrization (softplus, exp).
    """
    params, state = problem.params, problem.state
    _, fit_grads = loss_grads(model, objective, params, problem.train)
    with torch.no_grad():
        values = {name: v.detach() for name, v in lam.values().items()}
        pen = penalty_grad(problem, params, lam, values)
        ahead, jacobians = {}, {}
        for name, theta_t in params.items():
            grad = fit_grads[name] + pen.get(name, 0.0)
            if name in pen:
                ahead[name], jacobians[name] = step_and_derivative(kind, hp, theta_t, grad, state[name])
            else:  # not penalized: its step does not depend on λ
                ahead[name] = simulate_step(kind, hp, theta_t, grad, state[name])[0]
    valid_loss, outer = loss_grads(model, objective, ahead, problem.valid)
    with torch.enable_grad():
        values = lam.values()
        chain = 0.0
        for name, role, entities, counts in problem.penalized:
            chain = chain + (lam.penalty_grad(params[name], role, entities, counts, values, problem.batch_size)
                             * (outer[name] * jacobians[name])).sum()
        raw = list(lam.raw.values())
        lam_grads = torch.autograd.grad(chain, raw, allow_unused=True) if torch.is_tensor(chain) else [None] * len(raw)
    for tensor, g in zip(raw, lam_grads):
        # row-sparse λ (lam.sparse_rows): no gradient = no update, not a dense zero its optimizer would reject
        tensor.grad = g if g is not None or lam.sparse_rows else torch.zeros_like(tensor)
    return valid_loss


def truncated_hypergrad(model, objective, problem, lam: LambdaTables, kind, hp, steps: int = 1) -> torch.Tensor:
    """Set `.grad` of λ's raw parameters; return the look-ahead validation loss (plain autograd
    through the simulated steps; `one_step_hypergrad` is the fast exact form of steps = 1)."""
    values = lam.values()
    params, state = problem.params, problem.state
    for _ in range(steps):
        _, fit_grads = loss_grads(model, objective, params, problem.train)
        pen = penalty_grad(problem, params, lam, values)
        grads = {name: g + pen.get(name, 0.0) for name, g in fit_grads.items()}
        params, state = _step_all(kind, hp, params, grads, state)
    valid_loss = objective.loss(FunctionalModel(model, params), problem.valid)
    raw = list(lam.raw.values())
    for tensor, g in zip(raw, torch.autograd.grad(valid_loss, raw, allow_unused=True)):
        tensor.grad = torch.zeros_like(tensor) if g is None else g
    return valid_loss.detach()


def unrolled_hypergrad(model, objective, problem, lam: LambdaTables, kind, hp, steps: int = 1) -> torch.Tensor:
    """Exact K-step hypergradient with torch.func (fit gradients differentiated through θ_k)."""

    def lookahead_loss(raw):
        values = lam.values(raw)
        params, state = problem.params, problem.state
        for step in range(steps):
            if step == 0:  # at θ_t the fit gradient does not depend on λ: computed once, outside (exact)
                pen = penalty_grad(problem, params, lam, values)
                grads = {name: g + pen[name] if name in pen else g for name, g in first_fit.items()}
            else:
                def train_loss(theta):
                    return objective.loss(FunctionalModel(model, theta), problem.train) + penalty(problem, theta, lam, values)
                grads = func_grad(train_loss)(params)
            params, state = _step_all(kind, hp, params, grads, state)
        loss = objective.loss(FunctionalModel(model, params), problem.valid)
        return loss, loss

    _, first_fit = loss_grads(model, objective, problem.params, problem.train)
    raw = {name: t.detach() for name, t in lam.raw.items()}
    grads, valid_loss = func_grad(lookahead_loss, has_aux=True)(raw)
    for name, tensor in lam.raw.items():
        tensor.grad = grads[name]
    return valid_loss.detach()


def ift_hypergrad(model, objective, problem, lam: LambdaTables, neumann_steps: int = 10,
                  alpha: float = 1.0) -> torch.Tensor:
    """IFT hypergradient at θ_t with a Neumann-series inverse Hessian (see module docstring)."""
    values = lam.values()
    theta = {name: t.detach().requires_grad_(True) for name, t in problem.params.items()}
    names = list(theta)
    with torch.enable_grad():
        valid_loss = objective.loss(FunctionalModel(model, theta), problem.valid)
        v = torch.autograd.grad(valid_loss, [theta[n] for n in names], allow_unused=True)
        v = [torch.zeros_like(theta[n]) if g is None else g for n, g in zip(names, v)]
        detached_values = {k: t.detach() for k, t in values.items()}
        train_loss = (objective.loss(FunctionalModel(model, theta), problem.train)
                      + penalty(problem, theta, lam, detached_values))
        train_grads = torch.autograd.grad(train_loss, [theta[n] for n in names], create_graph=True)
        term, total = list(v), list(v)
        for _ in range(neumann_steps):
            dot = sum((g * t).sum() for g, t in zip(train_grads, term))
            hvp = torch.autograd.grad(dot, [theta[n] for n in names], retain_graph=True, allow_unused=True)
            term = [t - alpha * (torch.zeros_like(t) if h is None else h) for t, h in zip(term, hvp)]
            total = [s + t for s, t in zip(total, term)]
        inverse_hvp = {n: alpha * s.detach() for n, s in zip(names, total)}
        pen = penalty_grad(problem, {n: t.detach() for n, t in theta.items()}, lam, values)
        mixed = sum((pen[n] * inverse_hvp[n]).sum() for n in pen)
        raw = list(lam.raw.values())
        for tensor, g in zip(raw, torch.autograd.grad(-mixed, raw, allow_unused=True)):
            tensor.grad = torch.zeros_like(tensor) if g is None else g
    return valid_loss.detach()
