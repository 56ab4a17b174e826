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
        # the compiled draws (sampling_kernel.py), for the bitmap; None: NumPy's rounds
        self.kernels = compiled_kernels("sampling_kernel", "lambdaopt.data") if self.bits is not None else None

    def is_known(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        keys = users * self.n_items + items
        if self.bits is not None:
            return (self.bits[keys >> 3] >> (keys & 7).astype(np.uint8) & 1).astype(bool)
        position = np.searchsorted(self.known_keys, keys)
        position = np.minimum(position, len(self.known_keys) - 1)
        return self.known_keys[position] == keys

    def sample(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One negative item per entry of `users`."""
        if self._compiled(rng):  # the same draws in one call
            return self.kernels.sample_negatives(rng, self.bits, self.n_items, np.ascontiguousarray(users, np.int64))
        negatives = rng.integers(0, self.n_items, len(users))
        pending = np.flatnonzero(self.is_known(users, negatives))
        while len(pending):
            negatives[pending] = rng.integers(0, self.n_items, len(pending))
            pending = pending[self.is_known(users[pending], negatives[pending])]
        return negatives

    def triples(self, pool: Interactions, size: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
        """(users, items, negatives): `size` interactions of `pool` drawn uniformly with replacement, each with
        a negative for its user."""
        if self._compiled(rng) and len(pool):  # the same draws in one call
            return self.kernels.draw_triples(rng, pool.users, pool.items, size, self.bits, self.n_items)
        index = rng.integers(0, len(pool), size)
        users, items = pool.users[index], pool.items[index]
        return users, items, self.sample(users, rng)

    def _compiled(self, rng) -> bool:
        """Whether the compiled draws apply: a bitmap, numba, and a NumPy Generator (what numba can draw from)."""
        return self.kernels is not None and isinstance(rng, np.random.Generator)


def bpr_triples(
    positives: Interactions, sampler: NegativeSampler, rng: np.random.Generator, shuffle: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, positive items, negative items): every positive once, a fresh negative for each."""
    order = rng.permutation(len(positives)) if shuffle else np.arange(len(positives))
    users, items = positives.users[order], positives.items[order]
    return users, items, sampler.sample(users, rng)
