"""Optimizers that torch.optim does not have. `optimizer=group_rmsprop` builds `GroupRMSprop`."""
from __future__ import annotations

import torch


class GroupRMSprop(torch.optim.Optimizer):
    """RMSprop with ONE scalar second moment shared by every parameter (Arora et al. 2019).

    With g_p the gradient of parameter p at step t (t = 1, 2, ...):

        v_t  = α · v_{t−1} + (1 − α) · Σ_p ‖g_p‖²            (v_0 = 0; the sum runs over all groups)
        η_t  = lr / ( sqrt(v_t / (1 − α^t)) + eps )           (bias-corrected, like Adam's)
        p   ← p − η_t · g_p

    So it is plain gradient descent whose global step size adapts to the overall gradient scale:
    the direction is the true gradient (unlike per-coordinate RMSprop, which would distort the
    implicit bias towards low rank that deep-MF experiments study). Each group may set its own `lr`;
    `alpha` and `eps` are read from the first group because the second moment is shared.
    """

    def __init__(self, params, lr: float = 1e-3, alpha: float = 0.99, eps: float = 1e-4):
        if lr <= 0 or not 0 < alpha < 1 or eps <= 0:
            raise ValueError(f"GroupRMSprop needs lr > 0, 0 < alpha < 1, eps > 0 (got {lr}, {alpha}, {eps})")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps))
        # The shared state lives outside per-parameter `state` because it belongs to no parameter.
        self.second_moment = 0.0
        self.steps = 0

    def state_dict(self):
        state = super().state_dict()
        state["group_second_moment"] = {"v": self.second_moment, "t": self.steps}
        return state

    def load_state_dict(self, state_dict):
        shared = state_dict.get("group_second_moment", {"v": 0.0, "t": 0})
        super().load_state_dict({k: v for k, v in state_dict.items() if k != "group_second_moment"})
        self.second_moment, self.steps = float(shared["v"]), int(shared["t"])

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.apply_gradients()
        return loss

    def apply_gradients(self) -> None:
        """The update from the parameters' `.grad`, without torch's `Optimizer.step` wrapper, whose hooks and
        profiler record cost about a sixth of a deep-MF step at n = 100 (bench/README.md)."""
        grouped = [[p for p in group["params"] if p.grad is not None] for group in self.param_groups]
        self.apply_to([[p.detach() for p in params] for params in grouped],
                      [[p.grad for p in params] for params in grouped])

    def apply_to(self, tables: list[list[torch.Tensor]], grads: list[list[torch.Tensor]]) -> None:
        """The update of `tables[k]` (detached views of group k's parameters, updated in place: no autograd
        context needed) by `grads[k]`; the closed-form step (tasks/completion_step.py) calls this with lists
        it keeps, skipping even the per-step lists of `apply_gradients`."""
        flat = [g for group in grads for g in group]
        if not flat:
            return
        alpha, eps = self.param_groups[0]["alpha"], self.param_groups[0]["eps"]
        # One fused norm over all gradients; a single float() sync per step is cheap next to the matmuls.
        squared_norm = float(torch.stack(torch._foreach_norm(flat)).square().sum())
        self.steps += 1
        self.second_moment = alpha * self.second_moment + (1 - alpha) * squared_norm
        scale = (self.second_moment / (1 - alpha ** self.steps)) ** 0.5 + eps
        for group, params, gradients in zip(self.param_groups, tables, grads):
            if params:
                torch._foreach_add_(params, gradients, alpha=-group["lr"] / scale)
