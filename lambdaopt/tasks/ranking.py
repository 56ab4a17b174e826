"""Ranking from implicit feedback (`dataset.feedback=implicit`, the default): BPR on (u, i, j) triples,
full-ranking AUC / HR@K / NDCG@K on held-out interactions (evaluation/ranking.py)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig

from lambdaopt.contracts import Rows
from lambdaopt.data.interactions import SplitDataset
from lambdaopt.data.sampling import NegativeSampler, bpr_triples
from lambdaopt.errors import ConfigError
from lambdaopt.evaluation.ranking import RankingEvaluator, metric_names
from lambdaopt.kernels import compiled_kernels
from lambdaopt.models.rows import score_and_rows, score_blocks
from lambdaopt.tasks.base import Task, lambda_data, register_task
from lambdaopt.tasks.bpr_step import ClosedFormBPRStep, dot_bpr_loss_and_grads

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def bpr_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """mean −log σ(s_ui − s_uj). `logsigmoid` keeps it finite for large margins."""
    return -F.logsigmoid(positive_scores - negative_scores).mean()


class BPRObjective:
    """BPR on (u, i, j) triples: every positive of `fit` (default: the whole training split) once per
    epoch with a fresh uniform negative that the user never interacted with in training. λ's
    validation triples (for learned λ) pair positives of `lambda_valid` (default: the validation
    split; RankingTask passes λ's own share, see `Regularizer.lambda_data`) with negatives outside the user's
    training items and `lambda_valid` items — never excluding the data epoch selection is judged on,
    whose items would otherwise be told apart from every other non-training item by λ's signal."""

    def __init__(self, dataset: SplitDataset, batch_size: int, device: torch.device, lambda_valid=None, fit=None,
                 per_sample: bool = False):
        self.dataset, self.batch_size, self.per_sample = dataset, batch_size, per_sample
        self.device = torch.device(device)
        self.fit = dataset.train if fit is None else fit  # what the model trains on
        self.lambda_valid = dataset.valid if lambda_valid is None else lambda_valid
        self.train_sampler = NegativeSampler(dataset.n_users, dataset.n_items, dataset.train)
        self.valid_sampler = NegativeSampler(dataset.n_users, dataset.n_items, dataset.train.concat(self.lambda_valid))

    def _to_device(self, arrays) -> Batch:
        if self.device.type == "cpu":  # a view of each array, by the lightest torch call (λOpt draws one per step)
            return tuple(torch.from_numpy(a) for a in arrays)
        return tuple(torch.as_tensor(a, device=self.device) for a in arrays)

    def batches(self, rng: np.random.Generator) -> Iterator[Batch]:
        """One epoch of shuffled training triples, moved to the device once and sliced into batches."""
        users, positives, negatives = self._to_device(bpr_triples(self.fit, self.train_sampler, rng))
        for start in range(0, len(users), self.batch_size):
            stop = start + self.batch_size
            yield users[start:stop], positives[start:stop], negatives[start:stop]

    def n_batches(self) -> int:
        return -(-len(self.fit) // self.batch_size)

    def closed_form_step(self, model, regularizer, optimizer) -> ClosedFormBPRStep | None:
        """The step without autograd (tasks/bpr_step.py) for a dot-product model under a penalty whose row
        gradient is known in closed form (fixed λ, L1, none); None for everything else. With `per_sample`,
        the per-sample SGD step, or a ConfigError naming what it lacks."""
        if model.dot_scores and regularizer.closed_form_gradient:
            return ClosedFormBPRStep(model, regularizer, optimizer, per_sample=self.batch_size if self.per_sample else 0)
        if self.per_sample:
            raise ConfigError(f"trainer.per_sample=true needs a dot-product model (model=mf) under a penalty with a "
                              f"closed-form gradient (regularizer=fixed, none or lambdaopt_*), not "
                              f"{type(model).__name__} with {type(regularizer).__name__}")
        return None

    @staticmethod
    def closed_form_grads(model, params, batch: Batch):
        """(loss, {name: gradient}) of `model` at `params` on `batch` without autograd, for dot-product
        models (tasks/bpr_step.py); None for every other model."""
        return dot_bpr_loss_and_grads(params, batch) if model.dot_scores else None

    @staticmethod
    def compiled_lookahead(model, kind: str, hp: dict):
        """λOpt's one-step look-ahead as compiled loops (tasks/bpr_lookahead.py) where they apply — a
        dot-product model on the CPU through SGD or Adam, numba importable — else None (hypergrad.py)."""
        kernels = compiled_kernels("bpr_lookahead")
        if kernels is None or not kernels.CompiledLookahead.applies(model, kind, hp):
            return None
        return kernels.CompiledLookahead(model)

    def state_dict(self) -> dict:
        return {}  # every draw comes from the trainer's RNG: nothing of its own to restore

    def load_state_dict(self, state: dict) -> None:
        pass

    def valid_batch(self, rng: np.random.Generator, size: int) -> Batch:
        """`size` validation triples drawn with replacement (the look-ahead target of learned λ)."""
        return self._to_device(self.valid_sampler.triples(self.lambda_valid, size, rng))

    @staticmethod
    def batch_ids(batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        """(u per triple, i of every triple then j of every triple): the rows the loss reads, in its order."""
        users, positives, negatives = batch
        return users, torch.cat([positives, negatives])

    @staticmethod
    def with_ids(batch: Batch, users: torch.Tensor, items: torch.Tensor) -> Batch:
        return users, *items.view(2, -1)

    @staticmethod
    def loss(model, batch: Batch) -> torch.Tensor:
        positive_scores, negative_scores = score_blocks(model, *BPRObjective.batch_ids(batch)).view(2, -1)
        return bpr_loss(positive_scores, negative_scores)

    @staticmethod
    def loss_and_rows(model, batch: Batch) -> tuple[torch.Tensor, Rows]:
        """The same loss, and the factor rows it read (p_u once per triple, q_i and q_j) for the penalty."""
        scores, rows = score_and_rows(model, *BPRObjective.batch_ids(batch))
        positive_scores, negative_scores = scores.view(2, -1)
        return bpr_loss(positive_scores, negative_scores), rows


@register_task("implicit")
class RankingTask(Task):
    """BPR on the training interactions; validation and test by full ranking."""

    per_sample = True

    @classmethod
    def metric_names(cls, evaluation: DictConfig) -> list[str]:
        return metric_names(evaluation.ks)

    @classmethod
    def default_monitor(cls, evaluation: DictConfig) -> str:
        ks = list(evaluation.ks)
        return f"ndcg@{10 if 10 in ks else ks[0]}"

    @classmethod
    def build(cls, cfg: DictConfig, dataset, device, regularizer) -> "RankingTask":
        """A regularizer that learns λ from held-out data gets it as `objective.valid_batch` (base.lambda_data)."""
        if not isinstance(dataset, SplitDataset):
            raise ConfigError(f"dataset '{dataset.name}' is a completion dataset: dataset.feedback must be completion")
        if max(cfg.evaluation.ks) > dataset.n_items:
            raise ConfigError(
                f"evaluation.ks={list(cfg.evaluation.ks)} asks for K > {dataset.n_items} items in "
                f"dataset '{dataset.name}': use values ≤ {dataset.n_items}"
            )
        parts = lambda_data(cfg, dataset, regularizer)
        description = (f"{dataset.n_users} users, {dataset.n_items} items, "
                       f"{len(dataset.train)}/{len(dataset.valid)}/{len(dataset.test)} train/valid/test{parts.note}")
        objective = BPRObjective(dataset, cfg.trainer.batch_size, device, lambda_valid=parts.learn, fit=parts.fit,
                                 per_sample=cfg.trainer.per_sample)
        evaluation = dict(ks=cfg.evaluation.ks, chunk_users=cfg.evaluation.chunk_users, device=device)
        valid = RankingEvaluator(dataset.n_users, dataset.n_items, parts.select, parts.select_excluded, **evaluation)
        test = RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test, dataset.train.concat(dataset.valid),
                                **evaluation)
        return cls(objective, valid, test, *cls.resolve_monitor(cfg), description)
