"""Preprocessing shared by every dataset: dedupe, k-core filtering, id remapping, splitting."""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from lambdaopt.data.interactions import Interactions, SplitDataset
from lambdaopt.data.splits import split_per_user
from lambdaopt.errors import DataError

log = logging.getLogger(__name__)


def dedupe(interactions: Interactions) -> Interactions:
    """Keep the earliest interaction of each (user, item) pair (ties: the first in the log), in log
    order; warn with the count dropped. A stable sort by time, then a hash pass for first occurrences
    (cheaper than a two-key lexsort on 10M rows)."""
    n_items = int(interactions.items.max()) + 1 if len(interactions) else 1
    order = np.argsort(interactions.timestamps, kind="stable")
    first = ~pd.Series(interactions.keys(n_items)[order]).duplicated().to_numpy()
    n_dropped = int((~first).sum())
    if n_dropped:
        log.warning("dropped %d duplicate (user, item) interactions, keeping the earliest of each", n_dropped)
    return interactions.take(np.sort(order[first]))


def filter_min_interactions(
    interactions: Interactions, min_user: int, min_item: int, iterative: bool = True
) -> Interactions:
    """Keep items with ≥ min_item users, then users with ≥ min_user items.

    iterative=True repeats both filters until nothing changes (a true k-core); False makes the
    single item-then-user pass of the λOpt reference code.
    """
    current = interactions
    while True:
        keep = np.ones(len(current), bool)
        if min_item > 1:
            keep &= np.bincount(current.items)[current.items] >= min_item
        kept = current.take(np.flatnonzero(keep))
        if min_user > 1 and len(kept):
            kept = kept.take(np.flatnonzero(np.bincount(kept.users)[kept.users] >= min_user))
        if not iterative or len(kept) == len(current):
            return kept
        current = kept


def remap_ids(interactions: Interactions) -> tuple[Interactions, int, int]:
    """Map user and item ids onto 0..n-1 (in order of the original ids)."""
    users, users_unique = pd.factorize(interactions.users, sort=True)
    items, items_unique = pd.factorize(interactions.items, sort=True)
    remapped = Interactions(users.astype(np.int64), items.astype(np.int64), interactions.timestamps, interactions.ratings)
    return remapped, len(users_unique), len(items_unique)


def build_split_dataset(
    name: str,
    interactions: Interactions,
    split,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    iterative_filter: bool = True,
    seed: int = 0,
) -> SplitDataset:
    """Remap ids → dedupe → filter → remap ids → split per user. `split` has method, test_ratio, valid_ratio.

    Ids are made dense first: the file's own ids may be anything up to 2^63 (an id near 2^40 would make
    the counts below an 8 TiB array); remapping again after filtering keeps the same order, so the
    final ids do not depend on the first remap."""
    interactions = remap_ids(interactions)[0]
    cleaned = filter_min_interactions(dedupe(interactions), min_user_interactions, min_item_interactions, iterative_filter)
    if len(cleaned) == 0:
        raise DataError(
            f"dataset '{name}': no interactions left after filtering users with < {min_user_interactions} "
            f"and items with < {min_item_interactions} interactions; lower dataset.min_user_interactions "
            "or dataset.min_item_interactions"
        )
    cleaned, n_users, n_items = remap_ids(cleaned)
    train, valid, test = split_per_user(cleaned, n_users, split.method, split.test_ratio, split.valid_ratio, seed)
    return SplitDataset(name, n_users, n_items, train, valid, test)
