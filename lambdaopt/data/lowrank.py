"""`dataset=lowrank`: a seeded low-rank ground truth W* and its observations (Arora et al. 2019).

    U ∈ R^{n×r}, V ∈ R^{m×r} i.i.d. N(0, 1),   W* = c · U Vᵀ with c such that ‖W*‖_F = √(n·m)

(RMS entry 1, so the mean squared error over all entries equals the relative squared error).

Completion observes `n_train_samples` entries drawn uniformly without replacement. Sensing observes
as many linear measurements y_k = ⟨A_k, W*⟩ with A_k ∈ R^{n×m} i.i.d. N(0, 1/(n·m)), scaled so that
E_A ⟨A, Δ⟩² = ‖Δ‖_F² / (n·m): the sensing loss estimates the same all-entries MSE.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from lambdaopt.errors import ConfigError


@dataclass(frozen=True)
class CompletionData:
    """Observations of one n × m matrix, plus the ground truth when it is known.

    rows, cols: int64 (K,) observed positions (completion; empty for sensing);
    values: float32 (K,) observed entries or measurements;
    measurements: float32 (K, n·m) row-major sensing matrices, or None for completion;
    truth: float32 (n, m) W*, or None (real data).
    """

    name: str
    n_users: int
    n_items: int
    rows: np.ndarray
    cols: np.ndarray
    values: np.ndarray
    truth: Optional[np.ndarray] = None
    measurements: Optional[np.ndarray] = None
    rank: Optional[int] = None

    @property
    def n_train_samples(self) -> int:
        return len(self.values)

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha1(f"{self.n_users},{self.n_items}".encode())
        for array in (self.rows, self.cols, self.values, self.truth):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:12]

    def statistics(self) -> dict:
        stats = {"n_users": self.n_users, "n_items": self.n_items, "n_train": self.n_train_samples,
                 "density": self.n_train_samples / (self.n_users * self.n_items),
                 "sensing": float(self.measurements is not None)}
        if self.rank is not None:
            stats["rank"] = self.rank
        if self.truth is not None:
            stats["truth_fro_norm"] = float(np.linalg.norm(self.truth))
        return stats


def low_rank_truth(n: int, m: int, rank: int, rng: np.random.Generator) -> np.ndarray:
    """W* = c · U Vᵀ, U (n × r), V (m × r) i.i.d. N(0, 1), ‖W*‖_F = √(n·m). float64 (n, m)."""
    truth = rng.standard_normal((n, rank)) @ rng.standard_normal((m, rank)).T
    return truth * (np.sqrt(n * m) / np.linalg.norm(truth))


def load_lowrank(name: str = "lowrank", feedback: str = "completion", n: int = 100, m: Optional[int] = None, rank: int = 5,
                 n_train_samples: int = 2000, sensing: bool = False, seed: int = 0) -> CompletionData:
    """The `dataset=lowrank` entry point: ground truth, then observed entries or measurements.

    Raises ConfigError (one line, before any run starts) on a rank or sample count that cannot work.
    """
    m = n if m is None else m
    if not 1 <= rank <= min(n, m):
        raise ConfigError(f"dataset.rank={rank} is not allowed for a {n} × {m} matrix: use 1 <= rank <= {min(n, m)}")
    if not 1 <= n_train_samples <= n * m and not sensing:
        raise ConfigError(f"dataset.n_train_samples={n_train_samples} is not allowed for a {n} × {m} matrix: "
                          f"use 1 <= n_train_samples <= {n * m}")
    if sensing and n_train_samples * n * m > 2 * 10**8:
        raise ConfigError(f"dataset.n_train_samples={n_train_samples} Gaussian measurements of a {n} × {m} matrix "
                          f"need {n_train_samples * n * m * 4 / 1e9:.1f} GB: use fewer, or completion (sensing=false)")
    rng = np.random.default_rng(seed)
    truth = low_rank_truth(n, m, rank, rng)
    if sensing:
        measurements = rng.standard_normal((n_train_samples, n * m)) / np.sqrt(n * m)
        values = measurements @ truth.ravel()
        empty = np.zeros(0, np.int64)
        return CompletionData(name, n, m, empty, empty, values.astype(np.float32), truth.astype(np.float32),
                              measurements.astype(np.float32), rank)
    flat = rng.choice(n * m, size=n_train_samples, replace=False)
    rows, cols = np.divmod(flat, m)
    return CompletionData(name, n, m, rows.astype(np.int64), cols.astype(np.int64),
                          truth[rows, cols].astype(np.float32), truth.astype(np.float32), None, rank)
