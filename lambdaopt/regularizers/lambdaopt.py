"""λOpt: per-dimension / per-user / per-item λ learned by alternating bi-level optimization.

Before every `update_every`-th model step on a train batch (u, i, j):
  1. draw a batch of triples from λ's validation data (by default a random half of each user's
     validation interactions, the rest selecting the epoch; see `Regularizer.lambda_data`);
  2. simulate the model optimizer's step(s) from θ_t with the penalty Ω(θ, λ) in the graph —
     scaled exactly like the training penalty (Σ over batch rows / B);
  3. the BPR loss of the look-ahead parameters on the validation batch → hypergradient (hypergrad.py);
  4. clip its norm, take a λ-optimizer step (Adam with amsgrad by default), project λ ≥ 0;
then the trainer takes the real model step with the new λ (`penalty`).
"""
from __future__ import annotations

import math
from typing import Annotated, Optional

import numpy as np
import torch

from lambdaopt.config.checks import non_negative, one_of, open_unit, optional_positive, positive, seed_range, share
from lambdaopt.contracts import LambdaSource
from lambdaopt.errors import ConfigError, TrainingDiverged
from lambdaopt.registry import REGULARIZERS
from lambdaopt.regularizers import hypergrad
from lambdaopt.regularizers.base import Regularizer
from lambdaopt.regularizers.lambda_step import FusedLambdaAdam, FusedLambdaSparseAdam, lambda_rows, set_row_grads
from lambdaopt.regularizers.lambdas import GRANULARITIES, LambdaTables
from lambdaopt.regularizers.lookahead import optimizer_kind
from lambdaopt.regularizers.trajectory import LambdaTrajectory


class _NoState:
    """An optimizer stand-in with empty state, for a look-ahead that ignores the model optimizer's state."""

    state: dict = {}


_NO_STATE = _NoState()


@REGULARIZERS.register("lambdaopt")
class LambdaOpt(Regularizer):
    """Options (the `regularizer=lambdaopt_*` YAMLs set granularity and the λ step):
    granularity: λ's shape (lambdas.py); nonneg: λ ≥ 0 by projection after each λ step (clamp), or
    λ = softplus(ρ) / exp(ρ) (need init > 0); lambda_optimizer: sparse_adam is a lazy Adam on the λ rows
    of the batch only (per-user/item λ, clamp, truncated K=1) — for large tables; hypergrad: truncated
    (one-step look-ahead, the paper's), unrolled (exact K-step, torch.func) or ift (implicit function
    theorem); full_graph: every model parameter enters the look-ahead (generic, dense) instead of the
    rows the batches touch; lambda_data / holdout_ratio / validation_share: where λ's validation signal
    comes from (base.py); lookahead: through the model's own optimizer (λOpt) or through plain SGD at its
    lr (SGDA, Rendle 2012)."""

    feedback = ("implicit", "explicit")  # λ looks ahead on validation triples or ratings (contracts.LambdaSource)
    closed_form_gradient = True  # the model step (after `update`) under the current λ: add_rows_gradient

    def __init__(self, granularity: Annotated[str, one_of(*GRANULARITIES)] = "dui",
                 init: Annotated[float, non_negative()] = 0.0,
                 nonneg: Annotated[str, one_of("clamp", "softplus", "exp")] = "clamp",
                 lambda_optimizer: Annotated[str, one_of("adam", "sgd", "sparse_adam")] = "adam",
                 lambda_lr: Annotated[float, positive()] = 1e-4, amsgrad: bool = True,
                 grad_clip: Annotated[Optional[float], optional_positive()] = 1.0,
                 update_every: Annotated[int, positive()] = 1,
                 hypergrad: Annotated[str, one_of("truncated", "unrolled", "ift")] = "truncated",
                 unroll_steps: Annotated[int, positive()] = 1, full_graph: bool = False,
                 neumann_steps: Annotated[int, non_negative()] = 10, ift_alpha: Annotated[float, positive()] = 1.0,
                 valid_batch_size: Annotated[Optional[int], optional_positive()] = None,
                 snapshot_every: Annotated[int, positive()] = 1,
                 lambda_data: Annotated[str, one_of("split", "holdout", "validation")] = "split",
                 holdout_ratio: Annotated[float, open_unit()] = 0.1,
                 validation_share: Annotated[float, share()] = 0.5,
                 lookahead: Annotated[str, one_of("model", "sgd")] = "model",
                 seed: Annotated[int, seed_range()] = 0):
        super().__init__()
        self.lookahead = lookahead
        self.lambda_data, self.holdout_ratio, self.validation_share = lambda_data, holdout_ratio, validation_share
        self.options = dict(granularity=granularity, init=init, nonneg=nonneg)
        self.lambda_optimizer_name, self.lambda_lr, self.amsgrad = lambda_optimizer, lambda_lr, amsgrad
        self.grad_clip, self.update_every, self.hypergrad = grad_clip, update_every, hypergrad
        self.unroll_steps, self.full_graph = unroll_steps, full_graph
        self.neumann_steps, self.ift_alpha = neumann_steps, ift_alpha
        self.valid_batch_size, self.snapshot_every = valid_batch_size, snapshot_every
        self.rng = np.random.default_rng(seed + 7919)  # its own stream: validation draws don't shift training
        # Running sum of the look-ahead validation losses since the last metrics(): a sum, not a list of
        # per-step scalars, whose thousands of tiny live allocations pin heap pages (memory.py) — an
        # ML-10M-sized epoch grew ~10 MB per 100 steps with the list.
        self._reset_valid_loss()
        self.kind: str | None = None
        # the objective's compiled look-ahead (or None), decided at the first λ step: nothing it depends on
        # (model, device, dtype, optimizer) changes during a run
        self._compiled, self._compiled_decided = None, False
        self._fused: FusedLambdaAdam | None = None  # λ's clip + Adam + projection in one pass, where it applies
        self._train_fit = None  # the compiled look-ahead's fit of the last train batch, for the model step

    @classmethod
    def display_name(cls, params) -> str:
        """SGDA, or λOpt-<granularity> with the hypergradient's variant when not the default."""
        if params.get("lookahead") == "sgd":
            return "SGDA"
        notes = [str(params["hypergrad"])] if params.get("hypergrad", "truncated") not in ("truncated", None) else []
        if str(params.get("full_graph")) == "True":
            notes.append("full graph")
        label = f"λOpt-{str(params.get('granularity', '')).upper()}"
        return label + (f" ({', '.join(notes)})" if notes else "")

    @classmethod
    def run_label(cls, params) -> str:
        return "SGDA" if params.get("lookahead") == "sgd" else f"λOpt-{str(params.get('granularity', '')).upper()}"

    # ------------------------------------------------------------------ setup
    def setup(self, model, objective) -> None:
        if not model.entity_tables():
            raise ConfigError(f"λOpt regularizes user/item factor tables and model {type(model).__name__} has none: "
                              "use model=mf, deep_mf or neumf")
        if not isinstance(objective, LambdaSource):
            raise ConfigError("λOpt learns λ from validation batches of a ranking or rating task: use "
                              "dataset.feedback=implicit or explicit")
        if len(objective.lambda_valid) == 0:
            raise ConfigError("λOpt has no data to learn λ from: every user has a single training interaction "
                              "(keep users with more: dataset.min_user_interactions), or check dataset.split")
        dims = {getattr(model, name).shape[-1] for name in model.entity_tables() if getattr(model, name).dim() == 2}
        if len(dims) != 1:
            raise ConfigError(f"λOpt needs every user/item factor table of {type(model).__name__} to have the same "
                              f"width (got {sorted(dims)}); e.g. set model.mlp_dim=model.dim")
        self.objective = objective
        device = next(model.parameters()).device
        self.lam = LambdaTables(n_users=model.n_users, n_items=model.n_items, dim=dims.pop(), **self.options).to(device)
        params = list(self.lam.parameters())
        if self.lambda_optimizer_name == "sparse_adam":
            self._check_sparse()
            self.lam.sparse_rows = True
            self.lambda_optimizer = torch.optim.SparseAdam(params, lr=self.lambda_lr)
        elif self.lambda_optimizer_name == "adam":
            # fused: one kernel per step instead of a dozen passes over |U|·d + |I|·d λ entries (≈3× here)
            self.lambda_optimizer = torch.optim.Adam(params, lr=self.lambda_lr, amsgrad=self.amsgrad, fused=True)
        else:
            self.lambda_optimizer = torch.optim.SGD(params, lr=self.lambda_lr)
        self._fused = (FusedLambdaAdam.build(self.lam, self.lambda_optimizer)
                       or FusedLambdaSparseAdam.build(self.lam, self.lambda_optimizer))
        self.trajectory = LambdaTrajectory(self.lam, objective.dataset, self.snapshot_every)
        # Users with training data but no λ data: their λ rows never get a hypergradient and stay at init
        # (ML-100K under leave-one-out with a per-interaction validation share: 52 % of users).
        trained = self.trajectory.counts["user"] > 0
        covered = np.bincount(objective.lambda_valid.users, minlength=model.n_users) > 0
        self.uncovered_users = float((trained & ~covered).sum() / max(trained.sum(), 1))

    def _check_sparse(self) -> None:
        """Lazy λ updates need every λ to be per user/item rows (their gradient is row-sparse), the
        clamp parametrization (a softplus/exp of the whole table is dense) and the one-step hypergradient."""
        dense = [role for role, per_entity in self.lam.per_entity.items() if not per_entity]
        if dense:
            raise ConfigError(f"regularizer.lambda_optimizer=sparse_adam needs per-user and per-item λ and granularity "
                              f"{self.lam.granularity} shares λ across {' and '.join(s + 's' for s in dense)}: use "
                              "granularity user_item or dui, or lambda_optimizer=adam")
        if self.lam.nonneg != "clamp" or self.hypergrad != "truncated" or self.unroll_steps != 1 or self.full_graph:
            raise ConfigError("regularizer.lambda_optimizer=sparse_adam works with nonneg=clamp and the one-step "
                              "truncated hypergradient (unroll_steps=1, full_graph=false): use lambda_optimizer=adam")

    # ------------------------------------------------------------------ training hooks
    def penalty(self, model, rows, batch_size, batch=None):
        values = {name: v.detach() for name, v in self.lam.values().items()}
        terms = [(gathered, role, index, None) for role, index, gathered in rows.values()]
        return self.lam.penalty(terms, values, batch_size)

    def add_rows_gradient(self, grad, role, ids, values, batch_size, scale):
        """∂Ω/∂θ_r = 2·λ_r ⊙ θ_r / B per occurrence, λ fixed at its current value (`penalty` detaches it too)."""
        lam = self.lam.for_rows(role, ids, {name: v.detach() for name, v in self.lam.values().items()})
        grad.addcmul_(lam, values, value=2.0 * scale / batch_size)

    def l2_weights(self):
        values = self.lam.values()
        return {role: values[name].detach() for role, name in self.lam.param_of_role.items()}

    def train_fit(self, batch):
        fit, self._train_fit = self._train_fit, None
        return fit if fit is not None and fit.batch is batch else None

    def update(self, model, optimizer, train_batch, batch_index):
        self._train_fit = None
        if batch_index % self.update_every:
            return
        if self.kind is None:
            self.kind = "sgd" if self.lookahead == "sgd" else optimizer_kind(optimizer)
        size = self.valid_batch_size or train_batch[0].shape[0]  # (len() of a tensor: a Python-level torch call)
        valid_batch = self.objective.valid_batch(self.rng, size)
        state = optimizer if self.lookahead == "model" else _NO_STATE
        hp = optimizer.param_groups[0] if self.lookahead == "model" else {"lr": optimizer.param_groups[0]["lr"]}
        loss, rows = self._hypergradient(model, state, hp, train_batch, valid_batch)
        if rows is not None:  # the compiled look-ahead's: it summed the train batch's fit gradient at θ too
            self._train_fit = self._compiled.last_fit
        if rows is not None and self._fused is not None:  # clip, Adam and λ ≥ 0 in one pass (lambda_step.py)
            parts = lambda_rows(self.lam, rows)
            self._check_finite(self._fused.clip_(parts, self.grad_clip))
            self._fused.step(parts)
        else:
            if rows is not None:
                set_row_grads(self.lam, rows)
            if self.lam.sparse_rows:
                norm = self._clip_sparse()
            elif self.grad_clip:
                norm = torch.nn.utils.clip_grad_norm_(self.lam.parameters(), self.grad_clip)
            else:
                norm = torch.sqrt(sum((p.grad ** 2).sum() for p in self.lam.parameters()))
            self._check_finite(norm)
            self.lambda_optimizer.step()
            self.lam.project_()
        if isinstance(loss, float):  # the compiled look-ahead's (CPU): a float sum, no torch op per step
            self.valid_loss_sum = self.valid_loss_sum + loss  # (the same float64 adds as a float64 tensor's)
        else:  # a new tensor (a checkpoint may hold the last one), no device sync per step
            total = torch.as_tensor(self.valid_loss_sum, dtype=torch.float64, device=loss.device)
            self.valid_loss_sum = total + loss.detach()
        self.valid_loss_steps += 1

    @staticmethod
    def _check_finite(norm) -> None:
        if not math.isfinite(float(norm)):
            raise TrainingDiverged("the λ hypergradient became NaN/Inf; lower regularizer.lambda_lr or optimizer.lr")

    def _hypergradient(self, model, state, hp, train, valid) -> tuple[torch.Tensor | float, dict | None]:
        """(the look-ahead validation loss, the hypergradient per touched row where the compiled look-ahead
        made it — else None, and `.grad` of λ's raw parameters is set). `state`: the optimizer whose state
        the look-ahead starts from."""
        one_step = self.hypergrad == "truncated" and self.unroll_steps == 1  # exact: closed-form ∂θ'/∂g
        if one_step and not self.full_graph:
            if not self._compiled_decided:
                self._compiled, self._compiled_decided = self.objective.compiled_lookahead(model, self.kind, hp), True
            if self._compiled is not None:  # the same hypergradient in one compiled pass (tasks/bpr_lookahead.py)
                return self._compiled(model, state, self.kind, hp, self.lam, train, valid)
        self.lambda_optimizer.zero_grad(set_to_none=True)  # the tensor paths set `.grad`
        build = hypergrad.full_problem if self.full_graph else hypergrad.compact_problem
        problem = build(model, self.objective, state, self.kind, train, valid)
        if one_step:
            return hypergrad.one_step_hypergrad(model, self.objective, problem, self.lam, self.kind, hp), None
        if self.hypergrad in ("truncated", "unrolled"):
            method = hypergrad.truncated_hypergrad if self.hypergrad == "truncated" else hypergrad.unrolled_hypergrad
            return method(model, self.objective, problem, self.lam, self.kind, hp, self.unroll_steps), None
        ift = hypergrad.ift_hypergrad(model, self.objective, problem, self.lam, self.neumann_steps, self.ift_alpha)
        return ift, None

    def _reset_valid_loss(self) -> None:
        self.valid_loss_sum, self.valid_loss_steps = 0.0, 0  # a float, or a float64 tensor once a tensor loss is added

    def _clip_sparse(self) -> torch.Tensor:
        """The norm of the row-sparse λ gradient, clipped to grad_clip as clip_grad_norm_ would."""
        params = [p for p in self.lam.parameters() if p.grad is not None]
        for p in params:
            p.grad = p.grad.coalesce()  # duplicate rows summed, so the norm is that of the dense gradient
        norm = torch.sqrt(sum(p.grad.values().square().sum() for p in params))
        if self.grad_clip:
            scale = torch.clamp(self.grad_clip / (norm + 1e-6), max=1.0)
            for p in params:
                p.grad = p.grad * scale
        return norm

    def metrics(self) -> dict[str, float]:
        metrics = {**self.trajectory.summary(), "user/frac_without_lambda_data": self.uncovered_users}
        if self.valid_loss_steps:
            metrics["lookahead_valid_loss"] = float(self.valid_loss_sum) / self.valid_loss_steps
            self._reset_valid_loss()
        if not all(math.isfinite(v) for v in metrics.values()):
            raise TrainingDiverged("λ became NaN/Inf; lower regularizer.lambda_lr")
        return metrics

    def on_evaluation(self, epoch: int, tracker) -> None:
        self.trajectory.snapshot(epoch, tracker)

    def on_train_end(self, tracker, selected_epoch: int | None = None) -> None:
        for name, value in self.trajectory.finish(tracker, selected_epoch).items():
            tracker.log_metrics({name: value})

    # ------------------------------------------------------------------ checkpoints
    # λ itself is a parameter (in `state_dict()` through `self.lam`); torch's extra-state hook adds
    # what is not a tensor of the module: the λ optimizer, the validation-draw RNG, the trajectory.
    def get_extra_state(self) -> dict:
        if not hasattr(self, "lambda_optimizer"):  # before setup(): nothing learned yet
            return {}
        return {"lambda_optimizer": self.lambda_optimizer.state_dict(), "rng": self.rng.bit_generator.state,
                "trajectory": self.trajectory.state_dict(),
                "valid_loss_sum": torch.as_tensor(self.valid_loss_sum, dtype=torch.float64).detach(),
                "valid_loss_steps": self.valid_loss_steps, "kind": self.kind}

    def set_extra_state(self, state: dict) -> None:
        if not state:
            return
        self.lambda_optimizer.load_state_dict(state["lambda_optimizer"])
        self.rng.bit_generator.state = state["rng"]
        self.trajectory.load_state_dict(state["trajectory"])
        if "valid_losses" in state:  # a checkpoint from before the running sum: the per-step losses
            self._reset_valid_loss()
            for loss in state["valid_losses"]:
                self.valid_loss_sum, self.valid_loss_steps = self.valid_loss_sum + loss, self.valid_loss_steps + 1
        else:
            self.valid_loss_sum, self.valid_loss_steps = state["valid_loss_sum"], state["valid_loss_steps"]
        self.kind = state["kind"]
