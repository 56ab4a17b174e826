"""One step of the model's own optimizer as a differentiable function (the λOpt look-ahead).

One registered rule per optimizer (`@register_rule`): its `torch.optim` class, its state keys, `step`
— (θ', state') exactly as `torch.optim` would update θ with gradient `grad` from its current state,
but out of place, so that λ (which enters `grad` through the penalty gradient) stays in the graph —
and `step_and_derivative` — θ' and the diagonal ∂θ'/∂g the one-step hypergradient needs. A rule
works on any slice of a parameter (e.g. only the rows a batch touches) given the matching slice of
the state (`gather_state`). Registered: SGD (momentum, dampening, nesterov), Adam/AdamW (amsgrad),
Adagrad (lr_decay) and RMSprop (momentum, centered), each with its weight decay. Adding an optimizer
= one rule class here (tests/test_hypergrad.py checks each against finite differences).

Square roots use `safe_sqrt`: where a second moment is exactly 0 (a row with no gradient), the
plain derivative of √v is ∞ and ∞·0 would poison the hypergradient with NaN.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from lambdaopt.errors import ConfigError

class _SafeSqrt(torch.autograd.Function):
    """√max(x, 0) whose derivative is 1/(2√x) where x > 0 and 0 elsewhere (not ∞): one op forward."""

    @staticmethod
    def forward(x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=0).sqrt()

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.save_for_backward(output)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (root,) = ctx.saved_tensors
        positive = root > 0
        # the inner where keeps 1/root finite, so a second derivative through here is never ∞·0 either
        return torch.where(positive, grad * 0.5 / torch.where(positive, root, 1.0), 0.0)


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    return _SafeSqrt.apply(x)


def _root_slope(root: torch.Tensor, d_inner: torch.Tensor) -> torch.Tensor:
    """∂√x/∂g = (∂x/∂g) / (2√x) where √x > 0, else 0 — the derivative `safe_sqrt` has."""
    positive = root > 0
    return torch.where(positive, d_inner / (2 * torch.where(positive, root, 1.0)), 0.0)


class LookaheadRule:
    """One optimizer's update rule. Subclasses implement `update` and `update_and_derivative` on the
    weight-decayed gradient g̃ = g + wd·θ (`decays_gradient`; AdamW decays θ itself instead)."""

    optimizer: ClassVar[type]
    state_keys: ClassVar[tuple[str, ...]] = ()
    decays_gradient: ClassVar[bool] = True

    def _decayed(self, hp: dict, theta: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        weight_decay = hp.get("weight_decay", 0.0)
        return grad + weight_decay * theta if weight_decay and self.decays_gradient else grad

    def step(self, hp: dict, theta: torch.Tensor, grad: torch.Tensor, state: dict):
        """θ' and the new state after one step with hyperparameters `hp` (a param group)."""
        return self.update(hp, theta, self._decayed(hp, theta, grad), state, state["step"] + 1)

    def step_and_derivative(self, hp: dict, theta: torch.Tensor, grad: torch.Tensor, state: dict):
        """(θ', J = ∂θ'/∂g) without the graph (see `step_and_derivative` below for the formulas)."""
        return self.update_and_derivative(hp, theta, self._decayed(hp, theta, grad), state, state["step"] + 1)

    def update(self, hp, theta, grad, state, step):
        raise NotImplementedError

    def update_and_derivative(self, hp, theta, grad, state, step):
        raise NotImplementedError


RULES: dict[str, LookaheadRule] = {}


def register_rule(kind: str):
    def register(cls: type[LookaheadRule]) -> type[LookaheadRule]:
        RULES[kind] = cls()
        return cls
    return register


@register_rule("sgd")
class SGDRule(LookaheadRule):
    optimizer = torch.optim.SGD
    state_keys = ("momentum_buffer",)

    def update(self, hp, theta, grad, state, step):
        new_state, momentum = {"step": step}, hp.get("momentum", 0.0)
        if momentum:
            previous = state.get("momentum_buffer")
            buffer = grad if previous is None else momentum * previous + (1 - hp.get("dampening", 0.0)) * grad
            new_state["momentum_buffer"] = buffer
            grad = grad + momentum * buffer if hp.get("nesterov") else buffer
        return theta - hp["lr"] * grad, new_state

    def update_and_derivative(self, hp, theta, grad, state, step):
        ahead, _ = self.update(hp, theta, grad, state, step)
        lr, momentum = hp["lr"], hp.get("momentum", 0.0)
        if not momentum:
            return ahead, -lr
        d_buffer = 1.0 if state.get("momentum_buffer") is None else 1.0 - hp.get("dampening", 0.0)
        return ahead, -lr * (1.0 + momentum * d_buffer if hp.get("nesterov") else d_buffer)


@register_rule("adam")
class AdamRule(LookaheadRule):
    optimizer = torch.optim.Adam
    state_keys = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def _decay_theta(self, hp, theta):
        return theta

    def update(self, hp, theta, grad, state, step):
        lr, (beta1, beta2) = hp["lr"], hp["betas"]
        theta = self._decay_theta(hp, theta)
        exp_avg = beta1 * state.get("exp_avg", torch.zeros_like(theta)) + (1 - beta1) * grad
        exp_avg_sq = beta2 * state.get("exp_avg_sq", torch.zeros_like(theta)) + (1 - beta2) * grad * grad
        new_state = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        second = exp_avg_sq
        if hp.get("amsgrad"):
            second = torch.maximum(state.get("max_exp_avg_sq", torch.zeros_like(theta)), exp_avg_sq)
            new_state["max_exp_avg_sq"] = second
        denom = safe_sqrt(second) / (1 - beta2 ** step) ** 0.5 + hp["eps"]
        return theta - (lr / (1 - beta1 ** step)) * exp_avg / denom, new_state

    def update_and_derivative(self, hp, theta, grad, state, step):
        """Shares its intermediates between the step and J (a third of the ops of computing both)."""
        lr, (beta1, beta2) = hp["lr"], hp["betas"]
        theta = self._decay_theta(hp, theta)
        exp_avg = grad * (1 - beta1) if "exp_avg" not in state else torch.lerp(state["exp_avg"], grad, 1 - beta1)
        exp_avg_sq = (grad * grad).mul_(1 - beta2)
        if "exp_avg_sq" in state:
            exp_avg_sq.add_(state["exp_avg_sq"], alpha=beta2)
        second, slope_weight = exp_avg_sq, None
        if hp.get("amsgrad") and "max_exp_avg_sq" in state:
            previous = state["max_exp_avg_sq"]
            second = torch.maximum(previous, exp_avg_sq)
            slope_weight = (exp_avg_sq > previous).to(theta.dtype).add_((exp_avg_sq == previous).to(theta.dtype), alpha=0.5)
        root = second.sqrt()  # a second moment is ≥ 0
        correction2 = (1 - beta2 ** step) ** 0.5
        scale = lr / (1 - beta1 ** step)
        denom = (root / correction2).add_(hp["eps"])
        ahead = theta.addcdiv(exp_avg, denom, value=-scale)
        d_root = _root_slope(root, grad * (2 * (1 - beta2)))
        if slope_weight is not None:
            d_root.mul_(slope_weight)
        jacobian = (exp_avg * d_root).div_(denom * correction2).neg_().add_(1 - beta1).div_(denom).mul_(-scale)
        return ahead, jacobian


@register_rule("adamw")
class AdamWRule(AdamRule):
    """Decoupled weight decay: θ shrinks by lr·wd before the Adam step; the gradient is not decayed."""

    optimizer = torch.optim.AdamW
    decays_gradient = False

    def _decay_theta(self, hp, theta):
        weight_decay = hp.get("weight_decay", 0.0)
        return theta * (1 - hp["lr"] * weight_decay) if weight_decay else theta


@register_rule("adagrad")
class AdagradRule(LookaheadRule):
    optimizer = torch.optim.Adagrad
    state_keys = ("sum",)

    def _total(self, hp, theta, grad, state):
        return state.get("sum", torch.full_like(theta, hp.get("initial_accumulator_value", 0.0))) + grad * grad

    def update(self, hp, theta, grad, state, step):
        clr = hp["lr"] / (1 + (step - 1) * hp.get("lr_decay", 0.0))
        total = self._total(hp, theta, grad, state)
        return theta - clr * grad / (safe_sqrt(total) + hp["eps"]), {"step": step, "sum": total}

    def update_and_derivative(self, hp, theta, grad, state, step):
        ahead, new_state = self.update(hp, theta, grad, state, step)
        clr = hp["lr"] / (1 + (step - 1) * hp.get("lr_decay", 0.0))
        root = safe_sqrt(new_state["sum"])
        denom = root + hp["eps"]
        return ahead, -clr * (1 / denom - grad / (denom * denom) * _root_slope(root, 2 * grad))


@register_rule("rmsprop")
class RMSpropRule(LookaheadRule):
    optimizer = torch.optim.RMSprop
    state_keys = ("square_avg", "momentum_buffer", "grad_avg")

    def _root(self, hp, theta, grad, state, new_state):
        """(√r, ∂r/∂g) with r = q − a² (centered) or q, recording q (and a) in `new_state`."""
        alpha = hp["alpha"]
        square_avg = alpha * state.get("square_avg", torch.zeros_like(theta)) + (1 - alpha) * grad * grad
        new_state["square_avg"] = square_avg
        if hp.get("centered"):
            grad_avg = alpha * state.get("grad_avg", torch.zeros_like(theta)) + (1 - alpha) * grad
            new_state["grad_avg"] = grad_avg
            return safe_sqrt(square_avg - grad_avg * grad_avg), 2 * (1 - alpha) * (grad - grad_avg)
        return safe_sqrt(square_avg), 2 * (1 - alpha) * grad

    def update(self, hp, theta, grad, state, step):
        new_state = {"step": step}
        root, _ = self._root(hp, theta, grad, state, new_state)
        avg = root + hp["eps"]
        momentum = hp.get("momentum", 0.0)
        if momentum > 0:
            buffer = momentum * state.get("momentum_buffer", torch.zeros_like(theta)) + grad / avg
            new_state["momentum_buffer"] = buffer
            return theta - hp["lr"] * buffer, new_state
        return theta - hp["lr"] * grad / avg, new_state

    def update_and_derivative(self, hp, theta, grad, state, step):
        ahead, _ = self.update(hp, theta, grad, state, step)
        root, d_inner = self._root(hp, theta, grad, state, {})
        avg = root + hp["eps"]
        return ahead, -hp["lr"] * (1 / avg - grad / (avg * avg) * _root_slope(root, d_inner))


def optimizer_kind(optimizer: torch.optim.Optimizer) -> str:
    """The registered rule of `optimizer` (Adam with decoupled weight decay is AdamW)."""
    kind = next((k for k, rule in RULES.items() if type(optimizer) is rule.optimizer), None)
    if kind is None:
        raise ConfigError(f"λOpt looks ahead through the model's optimizer, and {type(optimizer).__name__} is not "
                          f"supported: use optimizer={', '.join(k for k in RULES if k != 'adamw')}")
    if len(optimizer.param_groups) != 1 or optimizer.param_groups[0].get("maximize"):
        raise ConfigError("λOpt needs a single minimizing parameter group in the model's optimizer")
    if kind == "adam" and optimizer.param_groups[0].get("decoupled_weight_decay"):
        return "adamw"
    return kind


def gather_state(optimizer: torch.optim.Optimizer, kind: str, param: torch.Tensor,
                 rows: torch.Tensor | None = None) -> dict:
    """The optimizer's state for `param` (only `rows` of it when given), detached; missing
    buffers (before the first step) are absent, and `step` is a Python number."""
    state = optimizer.state.get(param, {})
    gathered = {"step": float(state["step"]) if "step" in state else 0.0}
    for key in RULES[kind].state_keys:
        buffer = state.get(key)
        if buffer is not None:
            gathered[key] = (buffer if rows is None else buffer.index_select(0, rows)).detach()
    return gathered


def simulate_step(kind: str, hp: dict, theta: torch.Tensor, grad: torch.Tensor, state: dict):
    """θ' and the new state after one `kind` step with hyperparameters `hp` (a param group)."""
    return RULES[kind].step(hp, theta, grad, state)


def step_and_derivative(kind: str, hp: dict, theta: torch.Tensor, grad: torch.Tensor, state: dict):
    """(θ', J): the step of `simulate_step` (no graph) and J = ∂θ'/∂g — diagonal, since every supported
    update is elementwise — as a tensor like θ (or a number when it is constant). Used by the one-step
    hypergradient; Adam, the default, shares its intermediates between the two (a third of the ops).

    With g̃ = g + wd·θ (∂g̃/∂g = 1; AdamW's decay does not touch g) and t the new step count:
      SGD       θ' = θ − lr·u,  u = g̃ | b = μ·b₀ + (1−τ)·g̃ (b = g̃ at the first step) | g̃ + μ·b (nesterov)
                J = −lr·∂u/∂g, a constant.
      Adam      m = β₁m₀ + (1−β₁)g̃,  v = β₂v₀ + (1−β₂)g̃²,  s = √v̂ (v̂ = max(v_max, v) with amsgrad),
                D = s/√(1−β₂ᵗ) + ε,  θ' = θ − lr/(1−β₁ᵗ) · m/D
                J = −lr/(1−β₁ᵗ) · [(1−β₁)/D − m/D² · ∂s/∂g / √(1−β₂ᵗ)],  ∂s/∂g = (1−β₂)g̃/s · w,
                w = 1 where v > v_max, ½ at a tie (torch.maximum's derivative), 0 below (1 without amsgrad).
      Adagrad   S = S₀ + g̃²,  s = √S,  θ' = θ − c·g̃/(s + ε),  c = lr/(1 + (t−1)·lr_decay)
                J = −c · [1/(s + ε) − g̃/(s + ε)² · g̃/s].
      RMSprop   q = αq₀ + (1−α)g̃²,  (centered: a = αa₀ + (1−α)g̃, r = q − a²; else r = q),  A = √r + ε,
                θ' = θ − lr·g̃/A (with momentum b = μb₀ + g̃/A, θ' = θ − lr·b: the same J)
                J = −lr · [1/A − g̃/A² · ∂√r/∂g],  ∂r/∂g = 2(1−α)(g̃ − a) (centered) or 2(1−α)g̃.
    Every √ at 0 has slope 0 (safe_sqrt). tests/test_hypergrad.py checks the result against finite
    differences of real torch.optim steps for each optimizer and option.
    """
    return RULES[kind].step_and_derivative(hp, theta, grad, state)
