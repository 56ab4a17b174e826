"""Uniform negative sampling that never returns a user's known positive, vectorized."""
from __future__ import annotations

import numpy as np

from lambdaopt.data.interactions import Interactions
from lambdaopt.errors import DataError
from lambdaopt.kernels import compiled_kernels


# A bitmap of every (user, item) cell is used when it takes at most this many bytes, or no more than
# twice the sorted-key array it replaces (ML-10M: 94 MB of bits vs 80 MB of keys).
BITMAP_BYTES = 64 * 2**20


class NegativeSampler:
    """Draws items uniformly from those a user has not interacted with.

    Known positives are kept as a bitmap over the user × item grid (bit user·n_items + item; one
    lookup per draw, and it stays in cache on ML-100K-sized data) when that is small — see
    BITMAP_BYTES — else as a sorted array of the keys with one `np.searchsorted` per draw. Rejected
    draws are redrawn, all together, until none is left — the expected number of rounds is small
    unless a user has seen most of the catalogue.
    """

    def __init__(self, n_users: int, n_items: int, known: Interactions, lookup: str = "auto"):
        """`lookup`: "bitmap", "sorted", or "auto" (a bitmap when it is small, see BITMAP_BYTES)."""
        self.n_items = n_items
        keys = np.unique(known.keys(n_items))
        per_user = np.bincount(keys // n_items, minlength=n_users)
        if (per_user >= n_items).any():
            raise DataError(
                f"{int((per_user >= n_items).sum())} users have interacted with every item, so no negative "
                "item can be sampled for them; filter them out of the dataset"
            )
        bitmap_bytes = -(-n_users * n_items // 8)
        if lookup == "bitmap" or (lookup == "auto" and bitmap_bytes <= max(BITMAP_BYTES, 2 * keys.nbytes)):
            self.bits, self.known_keys = np.zeros(bitmap_bytes, dtype=np.uint8), None
            byte = keys >> 3  # keys are unique and sorted: the bits of one byte are adjacent, and their sum is their OR
            starts = np.flatnonzero(np.r_[True, byte[1:] != byte[:-1]])
            self.bits[byte[starts]] = np.add.reduceat(np.left_shift(1, keys & 7), starts) if len(keys) else 0
        else:
            self.bits, self.known_keys = None, keys
        kernels = compiled_kernels("sampling_kernel", "lambdaopt.data")
        self.kernel = kernels.still_known if kernels is not None else None

    def is_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        if self.bits is not None:
            return (self.bits[keys >> 3] >> (keys & 7).astype(np.uint8) & 1).astype(bool)
        position = np.searchsorted(self.known_keys, keys)
        position = np.minimum(position, len(self.known_keys) - 1)
        return self.known_keys[position] == keys

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of `users`."""
        negatives = rng.integers(0, self.n_items, len(users))
        if self.bits is not None and self.kernel is not None:  # the same draws, each round's test in one pass
            users = np.ascontiguousarray(users, dtype=np.int64)
            pending = self.kernel(self.bits, self.n_items, users, negatives, np.arange(len(users)))
            while len(pending):
                negatives[pending] = rng.integers(0, self.n_items, len(pending))
                pending = self.kernel(self.bits, self.n_items, users, negatives, pending)
            return negatives
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
