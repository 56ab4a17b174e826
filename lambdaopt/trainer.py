"""The one training loop: epochs of batches, periodic validation, early stopping, best weights kept,
a checkpoint after every evaluation, a clean stop on SIGINT/SIGTERM and on NaN/Inf."""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lambdaopt.console import epoch_line, within_epoch
from lambdaopt.errors import DataError, TrainingDiverged
from lambdaopt.interrupts import StopRequest, TrainingInterrupted
from lambdaopt.memory import release_free_heap

log = logging.getLogger(__name__)

FINITE_CHECK_EVERY = 32  # steps between checks of the running loss sum (one device sync each)


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0
    pruned_at: int | None = None  # the epoch an Optuna study's pruner stopped training at


def add_loss(total, loss):
    """The epoch's running loss sum plus one step's loss. A tensor step's loss is summed as a CPU tensor (no
    device sync per step); a compiled CPU step returns a NumPy float32 (tasks/bpr_step.py), summed in NumPy
    — the same float32 add as the tensor's, without a torch op (~20 µs right after a table-sized pass)."""
    if isinstance(loss, torch.Tensor):
        return total + loss.detach().cpu()
    if isinstance(total, torch.Tensor):  # the epoch's first step, or a sum restored from a checkpoint
        total = total.numpy()[()]
    return total + loss


class Trainer:
    """Runs `objective` batches through `model` + `regularizer` with `optimizer`; evaluates on
    validation every `eval_every` epochs; stops after `patience` evaluations without an improvement
    of `monitor` larger than `min_delta` (in the direction `mode`: max or min), or once the last
    step's training loss is ≤ `stop_loss` (0 disables it); restores the weights of the best evaluation.

    Selection and stopping read the mean of `monitor` over the last `smoothing` evaluations, and an
    evaluation is a candidate only once that window is full and `min_epochs` are done (a run that ends
    before any candidate keeps its last epoch); patience counts candidates only. Why:
    on ranking data a barely trained model is a popularity ranker whose validation NDCG can spike in
    epochs 1–2 above everything until much later; judged on raw values, patience then decided which λ
    won. A window of 3 averages the spike with the dip after it. The weights kept are those at the end
    of the best window; `best_valid` holds that epoch's raw metrics and `<monitor>_smoothed`.

    An epoch is whatever `objective.batches` yields: every training triple once for BPR, or
    `steps_per_epoch` full-batch steps for completion. The evaluator's metrics are logged under its
    `log_prefix` (default `valid`).

    Reliability: `state_dict()` holds everything the rest of the run depends on, so a run restored with
    `load_state_dict()` continues bit for bit (same device, 1 thread). `checkpointer.save(state)` runs
    after every evaluated epoch and on SIGINT/SIGTERM (after the current step; the state then records
    the step inside the epoch, and a resumed run redraws that epoch's batches from the RNG state of its
    start and skips those already trained on). NaN/Inf in the loss (checked every
    FINITE_CHECK_EVERY steps) or, with `check_finite_grads`, in any gradient raises TrainingDiverged."""

    def __init__(self, model, regularizer, optimizer, objective, valid_evaluator, tracker, *,
                 max_epochs: int, eval_every: int = 1, patience: int = 5, monitor: str = "ndcg@10",
                 mode: str = "max", min_delta: float = 0.0, smoothing: int = 1, min_epochs: int = 0,
                 stop_loss: float = 0.0, seed: int = 0,
                 check_finite_grads: bool = False, closed_form_step: bool = True, release_memory_every: int = 64, checkpointer=None,
                 trial=None):
        self.model, self.regularizer, self.optimizer = model, regularizer, optimizer
        self.objective, self.valid_evaluator, self.tracker = objective, valid_evaluator, tracker
        self.max_epochs, self.eval_every, self.patience = max_epochs, eval_every, patience
        self.monitor, self.min_delta, self.stop_loss, self.smoothing = monitor, min_delta, stop_loss, smoothing
        self.min_epochs = min_epochs
        self.check_finite_grads, self.checkpointer = check_finite_grads, checkpointer
        self.release_memory_every = release_memory_every
        # the objective's step without autograd, where it has one (tasks/bpr_step.py); None: `_autograd_step`
        self.closed_form = (objective.closed_form_step(model, regularizer, optimizer)
                            if closed_form_step and not check_finite_grads else None)
        # an Optuna trial (lambdaopt/search.py): gets every evaluation's selection value, may stop training
        self.trial, self.pruned_at, self.selection_value = trial, None, math.nan
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.sign = 1.0 if mode == "max" else -1.0  # compare sign·value so "larger is better" either way
        # None: a trainer that only trains (benchmarks time `train_epoch`); `fit` evaluates and needs one
        self.prefix = valid_evaluator.log_prefix if valid_evaluator is not None else "valid"
        self.rng = np.random.default_rng(seed)
        # progress: everything below is in state_dict()
        self.epoch = 0  # last completed epoch
        self.step_in_epoch = 0  # steps done in epoch + 1 (non-zero only when interrupted mid-epoch)
        self.epoch_start: dict = {}  # RNG + objective state when epoch + 1 began (to redraw its batches)
        self.loss_total = torch.zeros(())
        self.last_loss = math.inf
        self.best_score, self.best_epoch, self.best_valid, self.best_state = -math.inf, 0, {}, None
        self.evaluations_since_best, self.history, self.done, self.train_seconds = 0, [], False, 0.0

    # ------------------------------------------------------------------ one epoch
    def train_epoch(self, stop: StopRequest | None = None) -> float | None:
        """Mean training loss of the epoch, or None when `stop` was requested before its end."""
        self.model.train()
        if self.step_in_epoch == 0:
            self.epoch_start = {"rng": self.rng.bit_generator.state, "objective": self.objective.state_dict()}
            self.loss_total = torch.zeros(())
        else:  # resumed inside an epoch: replay its draws from where it began, skip the steps already taken
            self.rng.bit_generator.state = self.epoch_start["rng"]
            self.objective.load_state_dict(self.epoch_start["objective"])
        done_before, loss = self.step_in_epoch, None
        batches = within_epoch(self.objective.batches(self.rng), self.objective.n_batches(), self.epoch + 1)
        for index, batch in enumerate(batches):
            if index < done_before:
                continue
            self.regularizer.update(self.model, self.optimizer, batch, index)
            loss = self.closed_form(batch) if self.closed_form is not None else self._autograd_step(batch)
            self.loss_total = add_loss(self.loss_total, loss)
            self.step_in_epoch = index + 1
            if self.step_in_epoch % FINITE_CHECK_EVERY == 0:
                self._check_finite_loss()
            if self.release_memory_every and self.step_in_epoch % self.release_memory_every == 0:
                release_free_heap()  # freed per-step buffers would otherwise stay resident (lambdaopt/memory.py)
            if stop is not None and stop.requested:
                break
        if loss is not None:
            self.last_loss = float(loss.detach() if isinstance(loss, torch.Tensor) else loss)
        self._check_finite_loss()
        if stop is not None and stop.requested:
            return None
        mean_loss = float(self.loss_total) / max(self.step_in_epoch, 1)
        self.step_in_epoch = 0  # a whole epoch: the next call starts a new one (callers outside fit() too)
        return mean_loss

    def _autograd_step(self, batch) -> torch.Tensor:
        fit, rows = self.objective.loss_and_rows(self.model, batch)  # rows gathered once, shared
        loss = fit + self.regularizer.penalty(self.model, rows, len(batch[0]), batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.check_finite_grads:
            self._check_finite_grads()
        self.optimizer.step()
        return loss

    def _check_finite_loss(self) -> None:
        if not math.isfinite(float(self.loss_total)):
            raise TrainingDiverged(f"training loss became {float(self.loss_total)} in epoch {self.epoch + 1} "
                                   f"(by step {self.step_in_epoch}); lower optimizer.lr or raise the regularization")

    def _check_finite_grads(self) -> None:
        grads = [p.grad.coalesce().values() if p.grad.is_sparse else p.grad  # sparse under optimizer=sparse_adam
                 for p in self.model.parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            raise TrainingDiverged(f"a gradient became NaN/Inf in epoch {self.epoch + 1} step {self.step_in_epoch + 1}; "
                                   "lower optimizer.lr or raise the regularization")

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            return self.valid_evaluator(self.model)

    # ------------------------------------------------------------------ the loop
    def fit(self) -> FitResult:
        started = time.perf_counter()
        with StopRequest() as stop:
            while not self.done and self.epoch < self.max_epochs:
                epoch, epoch_start = self.epoch + 1, time.perf_counter()
                train_loss = self.train_epoch(stop)
                if train_loss is None:
                    self._interrupt(stop, started, f"in epoch {epoch} after step {self.step_in_epoch}")
                record = {"train_loss": train_loss, "epoch_seconds": time.perf_counter() - epoch_start}
                reached_loss = self.stop_loss > 0 and self.last_loss <= self.stop_loss
                evaluated = epoch % self.eval_every == 0 or epoch == self.max_epochs or reached_loss
                if evaluated:
                    record.update(self._evaluate_epoch(epoch, train_loss, record["epoch_seconds"]))
                self.tracker.log_metrics(record, step=epoch)
                self.history.append({"epoch": epoch, **record})
                self.epoch, self.step_in_epoch = epoch, 0
                if reached_loss:
                    log.info("stop: training loss %.3g <= stop_loss %.3g", self.last_loss, self.stop_loss)
                    self.done = True
                elif self.patience and self.evaluations_since_best >= self.patience:
                    log.info("early stop: no %s improvement in %d evaluations", self.monitor, self.patience)
                    self.done = True
                if evaluated and self.trial is not None and self.trial.report(epoch, self.selection_value) \
                        and not self.done and epoch < self.max_epochs:
                    log.info("pruned: the Optuna study's pruner stops this trial at epoch %d", epoch)
                    self.done, self.pruned_at = True, epoch
                if evaluated:
                    self._save_checkpoint(started)
                if stop.requested:
                    self._interrupt(stop, started, f"after epoch {epoch}")
        self.train_seconds += time.perf_counter() - started
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        else:  # no candidate yet (a run shorter than min_epochs or the window): the last evaluation's model
            self._select_last_evaluation()
        self.regularizer.on_train_end(self.tracker, selected_epoch=self.best_epoch)
        return FitResult(self.best_epoch, self.best_valid, self.epoch, self.history, self.train_seconds, self.pruned_at)

    def _smoothed(self, value: float) -> tuple[float, bool]:
        """(mean of `monitor` over the last `smoothing` evaluations ending with `value`, window full?)."""
        key = f"{self.prefix}/{self.monitor}"
        window = ([h[key] for h in self.history if key in h] + [value])[-self.smoothing:]
        return sum(window) / len(window), len(window) == self.smoothing

    def _evaluate_epoch(self, epoch: int, train_loss: float, epoch_seconds: float) -> dict[str, float]:
        valid = self.evaluate()
        if self.monitor not in valid:
            raise DataError(f"trainer.monitor={self.monitor} is undefined on this validation data (see the warning "
                            f"above); select on another metric: trainer.monitor=one of {', '.join(valid) or '-'}")
        record = {f"{self.prefix}/{name}": value for name, value in valid.items()}
        record.update({f"reg/{name}": value for name, value in self.regularizer.metrics().items()})
        self.regularizer.on_evaluation(epoch, self.tracker)
        smoothed, full = self._smoothed(valid[self.monitor])
        self.selection_value = smoothed  # what epochs (and a search's trials) are selected on
        if self.smoothing > 1:
            record[f"{self.prefix}/{self.monitor}_smoothed"] = smoothed
        candidate = full and epoch >= self.min_epochs
        improved = candidate and self.sign * smoothed > self.best_score + self.min_delta
        if improved:
            # the smoothed value too: what the epoch was selected on, and what a grid is selected on (report)
            extra = {f"{self.monitor}_smoothed": smoothed} if self.smoothing > 1 else {}
            self.best_score, self.best_epoch, self.best_valid = self.sign * smoothed, epoch, {**valid, **extra}
            self.best_state = copy.deepcopy(self.model.state_dict())
            self.evaluations_since_best = 0
        elif candidate:
            self.evaluations_since_best += 1
        mean = (self.smoothing, smoothed) if self.smoothing > 1 and full else None
        log.info("%s", epoch_line(epoch, train_loss, self.prefix, valid, self.monitor, mean, improved, record, epoch_seconds))
        return record

    def _select_last_evaluation(self) -> None:
        """The model as it is, reported as selected at its last evaluation (always the last epoch: fit()
        evaluates the last one). Nothing is stored, so a resumed run with more epochs selects as usual."""
        last = next((h for h in reversed(self.history) if f"{self.prefix}/{self.monitor}" in h), None)
        if last is not None:
            prefix = f"{self.prefix}/"
            self.best_epoch = last["epoch"]
            self.best_valid = {k[len(prefix):]: v for k, v in last.items() if k.startswith(prefix)}

    def _save_checkpoint(self, started: float) -> None:
        if self.checkpointer is not None:
            elapsed = time.perf_counter() - started
            self.train_seconds += elapsed  # counted into the checkpoint, then restarted from here
            self.checkpointer.save(self.state_dict())
            self.train_seconds -= elapsed

    def _interrupt(self, stop: StopRequest, started: float, where: str):
        self._save_checkpoint(started)
        saved = "checkpoint written" if self.checkpointer is not None else "no checkpoint (trainer.checkpoint=false)"
        resume = f"; continue with resume={self.tracker.run_id}" if self.checkpointer and self.tracker.run_id else ""
        raise TrainingInterrupted(f"interrupted by {stop.name()} {where}; {saved}{resume}", stop.signum)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Model, optimizer, regularizer (λ, its optimizer and RNG), objective and evaluator state, and
        the trainer's own progress and RNGs: all a resumed run needs to continue identically."""
        trajectory = self.valid_evaluator.trajectory
        return {
            "trainer": {
                "epoch": self.epoch, "step_in_epoch": self.step_in_epoch, "epoch_start": self.epoch_start,
                "loss_total": torch.as_tensor(self.loss_total), "last_loss": self.last_loss,
                "best_score": self.best_score,
                "best_epoch": self.best_epoch, "best_valid": self.best_valid, "best_state": self.best_state,
                "evaluations_since_best": self.evaluations_since_best, "history": self.history,
                "done": self.done, "train_seconds": self.train_seconds,
                "rng": self.rng.bit_generator.state, "torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            },
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "regularizer": self.regularizer.state_dict(),
            "objective": self.objective.state_dict(),
            "evaluator_trajectory": vars(trajectory).copy() if trajectory is not None else None,
        }

    def load_state_dict(self, state: dict) -> None:
        own = state["trainer"]
        for name in ("epoch", "step_in_epoch", "epoch_start", "loss_total", "last_loss", "best_score", "best_epoch",
                     "best_valid", "best_state", "evaluations_since_best", "history", "done", "train_seconds"):
            setattr(self, name, own[name])
        self.rng.bit_generator.state = own["rng"]
        torch.set_rng_state(own["torch_rng"])
        if own["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(own["cuda_rng"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.regularizer.load_state_dict(state["regularizer"])
        self.objective.load_state_dict(state["objective"])
        trajectory = self.valid_evaluator.trajectory
        if trajectory is not None and state["evaluator_trajectory"] is not None:
            vars(trajectory).update(state["evaluator_trajectory"])

