"""The one training loop: epochs of batches, periodic validation, early stopping, best weights kept."""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from lambdaopt.errors import TrainingDiverged

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    best_epoch: int
    best_valid: dict[str, float]
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    train_seconds: float = 0.0


class Trainer:
    """Runs `objective` batches through `model` + `regularizer` with `optimizer`; evaluates on
    validation every `eval_every` epochs; stops after `patience` evaluations without an improvement
    of `monitor` larger than `min_delta` (in the direction `mode`: max or min), or once the last
    step's training loss is ≤ `stop_loss` (0 disables it); restores the weights of the best evaluation.

    An epoch is whatever `objective.batches` yields: every training triple once for BPR, or
    `steps_per_epoch` full-batch steps for completion. The evaluator's metrics are logged under its
    `log_prefix` (default `valid`)."""

    def __init__(self, model, regularizer, optimizer, objective, valid_evaluator, tracker, *,
                 max_epochs: int, eval_every: int = 1, patience: int = 5, monitor: str = "ndcg@10",
                 mode: str = "max", min_delta: float = 0.0, stop_loss: float = 0.0, seed: int = 0, **_unused):
        self.model, self.regularizer, self.optimizer = model, regularizer, optimizer
        self.objective, self.valid_evaluator, self.tracker = objective, valid_evaluator, tracker
        self.max_epochs, self.eval_every, self.patience = max_epochs, eval_every, patience
        self.monitor, self.min_delta, self.stop_loss = monitor, min_delta, stop_loss
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.sign = 1.0 if mode == "max" else -1.0  # compare sign·value so "larger is better" either way
        self.prefix = getattr(valid_evaluator, "log_prefix", "valid")
        self.last_loss = math.inf
        self.rng = np.random.default_rng(seed)

    def train_epoch(self) -> float:
        self.model.train()
        total, n_batches, loss = torch.zeros(()), 0, torch.zeros(())
        for batch in self.objective.batches(self.rng):
            self.regularizer.update(self.model, self.optimizer, batch, n_batches)
            fit = self.objective.loss(self.model, batch)
            penalty = self.regularizer.penalty(self.model, self.objective.rows(self.model, batch), len(batch[0]), batch)
            loss = fit + penalty
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            total = total + loss.detach().cpu()  # summed lazily: no device sync per step
            n_batches += 1
        mean_loss = float(total) / max(n_batches, 1)
        self.last_loss = float(loss.detach())
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"training loss became {mean_loss}; lower optimizer.lr or raise the regularization"
            )
        return mean_loss

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        with torch.no_grad():
            return self.valid_evaluator(self.model)

    def fit(self) -> FitResult:
        best_score, best_epoch, best_valid, best_state = -math.inf, 0, {}, None  # best_score is sign·value
        evaluations_since_best, history = 0, []
        started = time.perf_counter()
        epoch = 0
        for epoch in range(1, self.max_epochs + 1):
            epoch_start = time.perf_counter()
            train_loss = self.train_epoch()
            epoch_seconds = time.perf_counter() - epoch_start
            record = {"train_loss": train_loss, "epoch_seconds": epoch_seconds}
            reached_loss = self.stop_loss > 0 and self.last_loss <= self.stop_loss
            if epoch % self.eval_every == 0 or epoch == self.max_epochs or reached_loss:
                valid = self.evaluate()
                record.update({f"{self.prefix}/{name}": value for name, value in valid.items()})
                record.update({f"reg/{name}": value for name, value in self.regularizer.metrics().items()})
                self.regularizer.on_evaluation(epoch, self.tracker)
                improved = self.sign * valid[self.monitor] > best_score + self.min_delta
                if improved:
                    best_score, best_epoch, best_valid = self.sign * valid[self.monitor], epoch, valid
                    best_state = copy.deepcopy(self.model.state_dict())
                    evaluations_since_best = 0
                else:
                    evaluations_since_best += 1
                headline = f"{self.prefix} auc {valid['auc']:.4f} " if "auc" in valid else f"{self.prefix} "
                log.info("epoch %3d | loss %.4g | %s%s %.4g%s | %.2fs", epoch, train_loss, headline,
                         self.monitor, valid[self.monitor], " *" if improved else "", epoch_seconds)
            self.tracker.log_metrics(record, step=epoch)
            history.append({"epoch": epoch, **record})
            if reached_loss:
                log.info("stop: training loss %.3g <= stop_loss %.3g", self.last_loss, self.stop_loss)
                break
            if self.patience and evaluations_since_best >= self.patience:
                log.info("early stop: no %s improvement in %d evaluations", self.monitor, self.patience)
                break
        self.regularizer.on_train_end(self.tracker)
        if best_state is not None:
            self.model.load_state_dict(best_state)
        return FitResult(best_epoch, best_valid, epoch, history, time.perf_counter() - started)
