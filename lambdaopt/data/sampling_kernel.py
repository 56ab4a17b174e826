"""Negative sampling on the known-cell bitmap as compiled loops (numba, CPU), random numbers included: numba's
`Generator.integers` is NumPy's algorithm on the same bit generator, so the draws — and the generator's state
after them — are the numbers sampling.py's NumPy route draws (tests/test_data.py). One call instead of a dozen
NumPy calls per draw, each ~10–50 µs when a training step has just evicted NumPy's code from the caches
(bench/README.md, λOpt epoch time)."""
from __future__ import annotations

import numba
import numpy as np


@numba.njit(cache=True, nogil=True)
def still_known(bits, n_items, users, negatives, pending):  # pragma: no cover  (compiled; its result is tested)
    """The entries of `pending` (indices into users / negatives) whose (user, negative) is a known cell, in
    order: bit user·n_items + item of `bits` (little-endian within each byte)."""
    out = np.empty_like(pending)
    n = 0
    for t in range(pending.shape[0]):
        k = pending[t]
        key = users[k] * n_items + negatives[k]
        if (bits[key >> 3] >> (key & 7)) & 1:
            out[n] = k
            n += 1
    return out[:n]


@numba.njit(cache=True, nogil=True)
def sample_negatives(rng, bits, n_items, users):  # pragma: no cover  (compiled; its result is tested)
    """One uniform draw per user, then every draw that hit a known cell drawn again, all together, until none
    does: `NegativeSampler.sample`'s rounds."""
    negatives = rng.integers(0, n_items, users.shape[0])
    pending = still_known(bits, n_items, users, negatives, np.arange(users.shape[0]))
    while pending.shape[0]:
        negatives[pending] = rng.integers(0, n_items, pending.shape[0])
        pending = still_known(bits, n_items, users, negatives, pending)
    return negatives


@numba.njit(cache=True, nogil=True)
def draw_triples(rng, pool_users, pool_items, size, bits, n_items):  # pragma: no cover  (compiled; tested)
    """`size` (user, item) pairs of the pool drawn uniformly with replacement, each with a negative:
    `NegativeSampler.triples`'s draws."""
    index = rng.integers(0, pool_users.shape[0], size)
    users, items = pool_users[index], pool_items[index]
    return users, items, sample_negatives(rng, bits, n_items, users)
