"""Synthetic implicit feedback from a seeded low-rank latent model (no download needed).

Each user u draws n_u items without replacement from the softmax over items of

    logit(u, i) = log popularity_i + signal · ⟨a_u, b_i⟩,   a_u, b_i ~ N(0, I_rank / rank)

(Gumbel top-k), so there is real low-rank structure for MF to find on top of a popularity skew.
Activity n_u and popularity follow power laws in their rank (exponents configurable).
"""
from __future__ import annotations

import numpy as np

from lambdaopt.data.interactions import Interactions, SplitDataset
from lambdaopt.data.preprocess import build_split_dataset


def _power_law_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Weights ∝ rank^(−exponent), assigned to entities in random order."""
    weights = np.arange(1, n + 1, dtype=np.float64) ** (-exponent)
    return weights[rng.permutation(n)]


def generate_implicit(
    n_users: int = 1500,
    n_items: int = 1500,
    rank: int = 8,
    mean_interactions: float = 40.0,
    min_interactions: int = 5,
    user_activity_exponent: float = 0.8,
    item_popularity_exponent: float = 0.8,
    signal: float = 5.0,
    seed: int = 0,
    chunk_users: int = 4096,
) -> Interactions:
    """Draw the interaction log. Ratings are 1–5 from the quintiles of the latent affinity."""
    rng = np.random.default_rng(seed)
    max_per_user = max(min_interactions, n_items // 2)
    activity = _power_law_weights(n_users, user_activity_exponent, rng)
    extra = max(mean_interactions - min_interactions, 0.0)
    n_per_user = np.clip(
        min_interactions + np.rint(activity / activity.mean() * extra), min_interactions, max_per_user
    ).astype(np.int64)
    log_popularity = np.log(_power_law_weights(n_items, item_popularity_exponent, rng))
    user_factors = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_users, rank))
    item_factors = rng.normal(0.0, 1.0 / np.sqrt(rank), (n_items, rank))

    users, items, affinities = [], [], []
    for start in range(0, n_users, chunk_users):
        stop = min(start + chunk_users, n_users)
        affinity = user_factors[start:stop] @ item_factors.T
        keys = log_popularity + signal * affinity + rng.gumbel(size=affinity.shape)
        ranked = np.argsort(-keys, axis=1)
        chosen = np.arange(n_items)[None, :] < n_per_user[start:stop, None]
        rows, cols = np.nonzero(chosen)
        users.append(rows + start)
        items.append(ranked[rows, cols])
        affinities.append(affinity[rows, ranked[rows, cols]])
    users, items, affinity = np.concatenate(users), np.concatenate(items), np.concatenate(affinities)
    ratings = 1 + np.searchsorted(np.quantile(affinity, [0.2, 0.4, 0.6, 0.8]), affinity)
    timestamps = rng.integers(0, 10**9, len(users))
    return Interactions.from_arrays(users, items, timestamps, ratings)


def load_synthetic(
    name: str = "synthetic",
    split=None,
    feedback: str = "implicit",
    min_user_interactions: int = 3,
    seed: int = 0,
    **generator_options,
) -> SplitDataset:
    """The `dataset=synthetic` entry point: generate, then the shared preprocessing and split.

    `feedback` only selects the task (implicit: BPR + ranking; explicit: the 1–5 ratings, MSE + RMSE);
    the log always carries both the interactions and their ratings."""
    log = generate_implicit(seed=seed, **generator_options)
    return build_split_dataset(name, log, split, min_user_interactions=min_user_interactions, seed=seed)
