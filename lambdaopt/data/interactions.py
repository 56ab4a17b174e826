"""Plain containers for interaction logs and their train/validation/test splits."""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Interactions:
    """An interaction log as parallel arrays of length n.

    users, items: int64 ids in [0, n_users), [0, n_items); timestamps: int64; ratings: float32
    (1.0 for implicit feedback).
    """

    users: np.ndarray
    items: np.ndarray
    timestamps: np.ndarray
    ratings: np.ndarray

    @classmethod
    def from_arrays(cls, users, items, timestamps=None, ratings=None) -> "Interactions":
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        n = len(users)
        timestamps = np.zeros(n, np.int64) if timestamps is None else np.asarray(timestamps, dtype=np.int64)
        ratings = np.ones(n, np.float32) if ratings is None else np.asarray(ratings, dtype=np.float32)
        if not (len(items) == len(timestamps) == len(ratings) == n):
            raise ValueError("users, items, timestamps and ratings must have the same length")
        return cls(users, items, timestamps, ratings)

    def __len__(self) -> int:
        return len(self.users)

    def take(self, index: np.ndarray) -> "Interactions":
        return Interactions(self.users[index], self.items[index], self.timestamps[index], self.ratings[index])

    def keys(self, n_items: int) -> np.ndarray:
        """One int64 key per (user, item) pair: user * n_items + item."""
        return self.users * n_items + self.items

    def csr(self, n_users: int) -> tuple[np.ndarray, np.ndarray]:
        """(indptr, items) with each user's items in a contiguous, item-sorted slice."""
        order = np.lexsort((self.items, self.users))
        indptr = np.zeros(n_users + 1, np.int64)
        np.cumsum(np.bincount(self.users, minlength=n_users), out=indptr[1:])
        return indptr, self.items[order]

    def concat(self, other: "Interactions") -> "Interactions":
        return Interactions(*(np.concatenate([a, b]) for a, b in zip(self.astuple(), other.astuple())))

    def astuple(self) -> tuple:
        return (self.users, self.items, self.timestamps, self.ratings)


@dataclass(frozen=True)
class SplitDataset:
    """A dataset after preprocessing and splitting; ids are contiguous from 0."""

    name: str
    n_users: int
    n_items: int
    train: Interactions
    valid: Interactions
    test: Interactions

    @property
    def fingerprint(self) -> str:
        """A short hash of the exact split contents, logged as a tag so runs on different data never mix."""
        digest = hashlib.sha1(f"{self.n_users},{self.n_items}".encode())
        for part in (self.train, self.valid, self.test):
            for array in (part.users, part.items, part.timestamps):
                digest.update(np.ascontiguousarray(array).tobytes())
        return digest.hexdigest()[:12]

    def statistics(self) -> dict:
        n_total = len(self.train) + len(self.valid) + len(self.test)
        item_counts = np.bincount(
            np.concatenate([self.train.items, self.valid.items, self.test.items]), minlength=self.n_items
        )
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "n_interactions": n_total,
            "n_train": len(self.train),
            "n_valid": len(self.valid),
            "n_test": len(self.test),
            "density": n_total / (self.n_users * self.n_items),
            "item_gini": gini(item_counts),
        }


def gini(counts: np.ndarray) -> float:
    """Gini coefficient of a count vector (0 = all equal, → 1 = all mass on one entry)."""
    sorted_counts = np.sort(np.asarray(counts, dtype=np.float64))
    n = len(sorted_counts)
    total = sorted_counts.sum()
    if n == 0 or total == 0:
        return 0.0
    ranks = np.arange(1, n + 1)
    return float((2 * (ranks * sorted_counts).sum()) / (n * total) - (n + 1) / n)
