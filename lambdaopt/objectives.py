"""Training objectives: how an epoch is cut into batches and what loss a batch has."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F

from lambdaopt.data.interactions import SplitDataset
from lambdaopt.data.sampling import NegativeSampler, bpr_triples
from lambdaopt.models.rows import Rows, score_and_rows, score_blocks

Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def bpr_loss(positive_scores: torch.Tensor, negative_scores: torch.Tensor) -> torch.Tensor:
    """mean −log σ(s_ui − s_uj). `logsigmoid` keeps it finite for large margins."""
    return -F.logsigmoid(positive_scores - negative_scores).mean()


class BPRObjective:
    """BPR on (u, i, j) triples: every positive of `fit` (default: the whole training split) once per
    epoch with a fresh uniform negative that the user never interacted with in training. λ's
    validation triples (for learned λ) pair positives of `lambda_valid` (default: the validation
    split; tasks.py passes λ's own share, see `Regularizer.lambda_data`) with negatives outside the user's
    training items and `lambda_valid` items — never excluding the data epoch selection is judged on,
    whose items would otherwise be told apart from every other non-training item by λ's signal."""

    def __init__(self, dataset: SplitDataset, batch_size: int, device: torch.device, lambda_valid=None, fit=None):
        self.dataset, self.batch_size, self.device = dataset, batch_size, device
        self.fit = dataset.train if fit is None else fit  # what the model trains on
        self.lambda_valid = dataset.valid if lambda_valid is None else lambda_valid
        self.train_sampler = NegativeSampler(dataset.n_users, dataset.n_items, dataset.train)
        self.valid_sampler = NegativeSampler(dataset.n_users, dataset.n_items, dataset.train.concat(self.lambda_valid))

    def _to_device(self, arrays) -> Batch:
        return tuple(torch.as_tensor(a, device=self.device) for a in arrays)

    def batches(self, rng: np.random.Generator) -> Iterator[Batch]:
        """One epoch of shuffled training triples, moved to the device once and sliced into batches."""
        users, positives, negatives = self._to_device(bpr_triples(self.fit, self.train_sampler, rng))
        for start in range(0, len(users), self.batch_size):
            stop = start + self.batch_size
            yield users[start:stop], positives[start:stop], negatives[start:stop]

    def n_batches(self) -> int:
        return -(-len(self.fit) // self.batch_size)

    def valid_batch(self, rng: np.random.Generator, size: int) -> Batch:
        """`size` validation triples drawn with replacement (the look-ahead target of learned λ)."""
        index = rng.integers(0, len(self.lambda_valid), size)
        users, items = self.lambda_valid.users[index], self.lambda_valid.items[index]
        return self._to_device((users, items, self.valid_sampler.sample(users, rng)))

    @staticmethod
    def loss(model, batch: Batch) -> torch.Tensor:
        users, positives, negatives = batch
        positive_scores, negative_scores = score_blocks(model, users, torch.cat([positives, negatives])).view(2, -1)
        return bpr_loss(positive_scores, negative_scores)

    @staticmethod
    def loss_and_rows(model, batch: Batch) -> tuple[torch.Tensor, Rows]:
        """The same loss, and the factor rows it read (p_u once per triple, q_i and q_j) for the penalty."""
        users, positives, negatives = batch
        scores, rows = score_and_rows(model, users, torch.cat([positives, negatives]))
        positive_scores, negative_scores = scores.view(2, -1)
        return bpr_loss(positive_scores, negative_scores), rows
