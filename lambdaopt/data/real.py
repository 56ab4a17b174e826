"""The `dataset=ml-100k | ml-1m | ml-10m | amazon-food` entry point: raw file → cached splits.

    raw file (fetched into the cache, or dataset.path)
      → parse (formats.py)                       user, item, rating, timestamp per row
      → feedback: implicit keeps rows with rating ≥ implicit_threshold (all rows when null) and sets
        rating = 1; explicit keeps every row and its rating
      → dedupe (earliest of each (user, item), with a warning) → filter → remap ids → per-user split
      → parquet cache keyed by sha256(raw file) + these options (cache.py)

Filtering (min_user_interactions = k_u, min_item_interactions = k_i): items with < k_i users are
dropped, then users with < k_u items. iterative_filter=false stops after that one pass (the λOpt
reference; some kept items may fall below k_i); true repeats it to a fixed point (a true k-core).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from lambdaopt.data import cache
from lambdaopt.data.fetch import DatasetSpec, cache_root, fetch, set_aside, sha256_of, spec_for
from lambdaopt.data.formats import READERS, check_file
from lambdaopt.data.interactions import Interactions, SplitDataset
from lambdaopt.data.preprocess import build_split_dataset
from lambdaopt.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def _split_options(split) -> dict:
    """The split node (DictConfig or SplitConfig) as a plain dict; None → the λOpt 60/20/20 temporal split."""
    if split is None:
        return {"method": "temporal", "test_ratio": 0.2, "valid_ratio": 0.25}
    return {"method": str(split.method), "test_ratio": float(split.test_ratio), "valid_ratio": float(split.valid_ratio)}


def resolve_raw(spec: DatasetSpec, path: str | None, cache_dir: str | None) -> tuple[Path, str, bool]:
    """(raw file, reader, strict): the user's dataset.path, else the cached/fetched file.

    strict: the counts must equal the published ones (files from the cache); a user's own file may
    be a subset, so it only gets a warning.
    """
    if path:
        raw = Path(path).expanduser()
        check_file(raw, f"give the {spec.manual[0][0]} file of {spec.name} from {spec.where_to_get}, or drop "
                        "dataset.path to use the cache")
        reader = "widedeep-parquet" if raw.suffix in (".parquet", ".brotli") else spec.user_reader
        return raw, reader, False
    raw, reader = fetch(spec.name, cache_dir)
    check_file(raw, f"delete it and fetch again (python -m lambdaopt.data fetch {spec.name})", key="dataset.cache_dir")
    return raw, reader, True


def check_counts(spec: DatasetSpec, frame: pd.DataFrame, raw: Path, strict: bool) -> None:
    """Compare (ratings, users, items) with the published counts: DataError (strict) or a warning."""
    if spec.expected is None:
        return
    found = (len(frame), int(frame["user"].nunique()), int(frame["item"].nunique()))
    if found == spec.expected:
        return
    message = (f"{raw}: {found[0]:,} ratings, {found[1]:,} users, {found[2]:,} items; the published "
               f"{spec.name} has {spec.expected[0]:,} / {spec.expected[1]:,} / {spec.expected[2]:,}")
    if strict and spec.sources:
        raise DataError(f"{message}: {set_aside(raw, message)} and not used; fetch it again")
    log.warning("%s (a subset or another version?)", message)


def to_interactions(frame: pd.DataFrame, feedback: str, implicit_threshold: float | None, raw: Path) -> Interactions:
    """Apply the feedback mode: implicit → rows with rating ≥ threshold, rating 1; explicit → as read."""
    if feedback == "implicit":
        if implicit_threshold is not None:
            frame = frame[frame["rating"].to_numpy() >= implicit_threshold]
            if len(frame) == 0:
                raise DataError(f"{raw}: no rating ≥ dataset.implicit_threshold={implicit_threshold}; "
                                "lower it, or set it to null to count every rating as positive")
        ratings = np.ones(len(frame), np.float32)
    else:
        ratings = frame["rating"].to_numpy(np.float32)
    return Interactions(frame["user"].to_numpy(np.int64), frame["item"].to_numpy(np.int64),
                        frame["timestamp"].to_numpy(np.int64), ratings)


def load_dataset(
    name: str,
    path: str | None = None,
    cache_dir: str | None = None,
    feedback: str = "implicit",
    implicit_threshold: float | None = None,
    min_user_interactions: int = 0,
    min_item_interactions: int = 0,
    iterative_filter: bool = False,
    seed: int = 0,
    split=None,
    use_cache: bool = True,
) -> SplitDataset:
    """Build (or load from the cache) the train/valid/test splits of a real dataset."""
    spec = spec_for(name)
    if feedback not in ("implicit", "explicit"):
        raise ConfigError(f"dataset.feedback={feedback!r} is not allowed: use implicit or explicit")
    if feedback == "explicit" and implicit_threshold is not None:
        raise ConfigError("dataset.implicit_threshold applies to feedback=implicit only: set it to null "
                          "with dataset.feedback=explicit")
    started = time.perf_counter()
    raw, reader, strict = resolve_raw(spec, path, cache_dir)
    options = {"reader": reader, "feedback": feedback, "implicit_threshold": implicit_threshold,
               "min_user_interactions": int(min_user_interactions), "min_item_interactions": int(min_item_interactions),
               "iterative_filter": bool(iterative_filter), "seed": int(seed), "split": _split_options(split)}
    for attempt in (1, 2):
        raw_sha256 = sha256_of(raw)
        entry = cache.entry_dir(cache_root(cache_dir), name, cache.cache_key(raw_sha256, options))
        if use_cache and (cached := cache.load(entry)) is not None:
            return cached
        try:
            frame = READERS[reader](raw)
            break
        except DataError as error:
            if not strict or attempt == 2:
                raise
            # A raw file in the cache that no longer parses (truncated, overwritten): set it aside, fetch again.
            log.warning("%s; %s; fetching it again", error, set_aside(raw, error))
            raw, reader = fetch(name, cache_dir)
            options["reader"] = reader
    check_counts(spec, frame, raw, strict)
    interactions = to_interactions(frame, feedback, implicit_threshold, raw)
    dataset = build_split_dataset(name, interactions, SimpleNamespace(**options["split"]), min_user_interactions,
                                  min_item_interactions, iterative_filter, seed)
    log.info("%s: %d ratings read from %s → %d users, %d items, %d/%d/%d train/valid/test (%.1fs)", name,
             len(frame), raw, dataset.n_users, dataset.n_items, len(dataset.train), len(dataset.valid),
             len(dataset.test), time.perf_counter() - started)
    if use_cache:
        cache.save(dataset, entry, {"raw_file": str(raw), "raw_sha256": raw_sha256, "options": options,
                                    "n_raw_ratings": len(frame)})
    return dataset
