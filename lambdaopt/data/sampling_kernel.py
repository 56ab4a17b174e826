"""The rejection test of negative sampling as one compiled pass (numba, CPU): which of the pending draws hit a
known (user, item) cell of the bitmap. sampling.py draws every random number itself, with numpy, so the
draws — and the triples — are the same as without it (tests/test_data.py)."""
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
