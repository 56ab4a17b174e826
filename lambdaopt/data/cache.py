"""Processed splits on disk: parquet, keyed by the raw file's content and the preprocessing options.

    processed/<name>-<key>/{train,valid,test}.parquet + meta.json
    key = sha256(json{raw sha256, preprocessing options, CACHE_VERSION})[:16]

Any change of the raw bytes or of an option that shapes the splits gives a new key, hence a
rebuild. A directory is written under a temporary name and renamed into place only when complete
(meta.json last), and only a directory with meta.json is read, so a half-written cache is never used.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from lambdaopt.data.interactions import Interactions, SplitDataset
from lambdaopt.data.scratch import owner_tag, remove_stale

log = logging.getLogger(__name__)

# Bump when the readers or the preprocessing change what a given file + options produce.
CACHE_VERSION = 1
PARTS = ("train", "valid", "test")


def cache_key(raw_sha256: str, options: dict) -> str:
    payload = json.dumps({"raw": raw_sha256, "options": options, "version": CACHE_VERSION}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def entry_dir(root: Path, name: str, key: str) -> Path:
    return root / "processed" / f"{name}-{key}"


def _to_frame(part: Interactions) -> pd.DataFrame:
    return pd.DataFrame({"user": part.users, "item": part.items, "timestamp": part.timestamps, "rating": part.ratings})


def _from_frame(frame: pd.DataFrame) -> Interactions:
    return Interactions(frame["user"].to_numpy(np.int64), frame["item"].to_numpy(np.int64),
                        frame["timestamp"].to_numpy(np.int64), frame["rating"].to_numpy(np.float32))


def load(directory: Path) -> SplitDataset | None:
    """The cached dataset, or None when absent or unreadable (then it is rebuilt)."""
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        parts = [_from_frame(pd.read_parquet(directory / f"{part}.parquet")) for part in PARTS]
        dataset = SplitDataset(meta["name"], int(meta["n_users"]), int(meta["n_items"]), *parts)
        if dataset.fingerprint != meta["fingerprint"]:
            raise ValueError("fingerprint mismatch")
    except (OSError, ValueError, KeyError) as error:
        log.warning("ignoring the unreadable cache %s (%s); rebuilding it", directory, error)
        return None
    log.info("loaded %s from the cache %s", dataset.name, directory)
    return dataset


def save(dataset: SplitDataset, directory: Path, meta: dict) -> None:
    """Write the splits to a temporary sibling, then rename it to `directory` in one step. A cache that
    cannot be written (no permission, read-only, full) only costs the next run a rebuild: a warning."""
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(directory.parent, (".tmp-",))
        scratch = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".tmp-{directory.name}{owner_tag()}"))
    except OSError as error:
        log.warning("cannot write the processed cache in %s (%s); the splits are not cached: set "
                    "dataset.cache_dir (or $LAMBDAOPT_CACHE) to a writable directory", directory.parent,
                    error.strerror or error)
        return
    try:
        for part in PARTS:
            _to_frame(getattr(dataset, part)).to_parquet(scratch / f"{part}.parquet", index=False)
        full_meta = {**meta, "name": dataset.name, "n_users": dataset.n_users, "n_items": dataset.n_items,
                     "fingerprint": dataset.fingerprint, "statistics": dataset.statistics()}
        (scratch / "meta.json").write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        if directory.exists() and not (directory / "meta.json").is_file():
            shutil.rmtree(directory)  # not written by save(): never trusted, replaced
        try:
            os.rename(scratch, directory)
        except OSError:
            # Another process finished the same entry first; its copy is equivalent.
            if not (directory / "meta.json").is_file():
                raise
    except OSError as error:
        log.warning("cannot write the processed cache %s (%s); the splits are not cached", directory,
                    error.strerror or error)
    finally:
        if scratch.exists():
            shutil.rmtree(scratch, ignore_errors=True)
