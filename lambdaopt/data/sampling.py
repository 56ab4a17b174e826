"""Uniform negative sampling that never returns a user's known positive, vectorized."""
from __future__ import annotations

import numpy as np

from lambdaopt.data.interactions import Interactions
from lambdaopt.errors import DataError


class NegativeSampler:
    """Draws items uniformly from those a user has not interacted with.

    Known positives are kept as a sorted array of keys user·n_items + item; membership is one
    `np.searchsorted` per draw. Rejected draws are redrawn, all together, until none is left —
    the expected number of rounds is small unless a user has seen most of the catalogue.
    """

    def __init__(self, n_users: int, n_items: int, known: Interactions):
        self.n_items = n_items
        self.known_keys = np.unique(known.keys(n_items))
        per_user = np.bincount(self.known_keys // n_items, minlength=n_users)
        if (per_user >= n_items).any():
            raise DataError(
                f"{int((per_user >= n_items).sum())} users have interacted with every item, so no negative "
                "item can be sampled for them; filter them out of the dataset"
            )

    def is_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        position = np.searchsorted(self.known_keys, keys)
        position = np.minimum(position, len(self.known_keys) - 1)
        return self.known_keys[position] == keys

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of `users`."""
        negatives = rng.integers(0, self.n_items, len(users))
        pending = np.flatnonzero(self.is_known(users, negatives))
        while len(pending):
            negatives[pending] = rng.integers(0, self.n_items, len(pending))
            pending = pending[self.is_known(users[pending], negatives[pending])]
        return negatives


def bpr_triples(
    positives: Interactions, sampler: NegativeSampler, rng: np.random.Generator, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, positive items, negative items): every positive once, a fresh negative for each."""
    order = rng.permutation(len(positives)) if shuffle else np.arange(len(positives))
    users, items = positives.users[order], positives.items[order]
    return users, items, sampler.sample(users, rng)
