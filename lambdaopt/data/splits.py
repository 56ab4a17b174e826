"""Per-user splits of an interaction log into train / validation / test, fully vectorized."""
from __future__ import annotations

import numpy as np

from lambdaopt.data.interactions import Interactions
from lambdaopt.errors import DataError


def _heldout_counts(n_per_user: np.ndarray, method: str, test_ratio: float, valid_ratio: float):
    """How many of each user's interactions go to test and to validation.

    ratio splits: n_test = max(1, round(test_ratio · n)), n_valid = max(1, round(valid_ratio · (n − n_test)));
    leave-one-out: one each. Rounding is half-to-even (numpy), so 60/20/20 is exact where n allows.
    """
    if method == "leave_one_out":
        return np.ones_like(n_per_user), np.ones_like(n_per_user)
    n_test = np.maximum(1, np.rint(test_ratio * n_per_user).astype(np.int64))
    n_valid = np.maximum(1, np.rint(valid_ratio * (n_per_user - n_test)).astype(np.int64))
    return n_test, n_valid


def split_validation(valid: Interactions, share: float | None, seed: int = 0) -> tuple[Interactions, Interactions]:
    """(learn, select): each validation interaction goes to `learn` with probability `share`.

    share None or 1: both are the whole validation split (selection then reuses what was learned from).
    """
    if share is None or share >= 1:
        return valid, valid
    to_learn = np.random.default_rng(seed).random(len(valid)) < share
    return valid.take(np.flatnonzero(to_learn)), valid.take(np.flatnonzero(~to_learn))


def split_per_user(
    log: Interactions,
    n_users: int,
    method: str = "temporal",
    test_ratio: float = 0.2,
    valid_ratio: float = 0.25,
    seed: int = 0,
) -> tuple[Interactions, Interactions, Interactions]:
    """Split every user's interactions into (train, valid, test).

    temporal / leave_one_out: ordered by timestamp (ties broken by position in the log), the latest go
    to test, the next latest to validation. random: the same counts as temporal, order drawn at random.
    Every user with interactions gets ≥ 1 train, ≥ 1 validation and ≥ 1 test interaction, or DataError.
    """
    if method not in ("temporal", "random", "leave_one_out"):
        raise DataError(f"unknown split method {method!r}: use temporal, random or leave_one_out")
    if method == "random":
        order_key = np.random.default_rng(seed).permutation(len(log))
    else:
        order_key = log.timestamps
    # Sort by user, then by time (stable, so equal timestamps keep log order).
    order = np.lexsort((np.arange(len(log)), order_key, log.users))
    users = log.users[order]
    n_per_user = np.bincount(users, minlength=n_users)
    n_test, n_valid = _heldout_counts(n_per_user, method, test_ratio, valid_ratio)
    active = n_per_user > 0
    too_short = active & (n_per_user - n_test - n_valid < 1)
    if too_short.any():
        shortest = int(n_per_user[too_short].min())
        need = int((n_test + n_valid)[too_short].max()) + 1
        raise DataError(
            f"split '{method}': {int(too_short.sum())} users have too few interactions (fewest {shortest}) "
            f"for non-empty train/validation/test splits; keep users with ≥ {need} interactions "
            f"(dataset.min_user_interactions={need}) or lower the ratios"
        )
    start = np.zeros(n_users + 1, np.int64)
    np.cumsum(n_per_user, out=start[1:])
    position_from_end = start[users + 1] - 1 - np.arange(len(users))
    is_test = position_from_end < n_test[users]
    is_valid = ~is_test & (position_from_end < (n_test + n_valid)[users])
    is_train = ~(is_test | is_valid)
    return log.take(order[is_train]), log.take(order[is_valid]), log.take(order[is_test])
