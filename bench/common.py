"""Shared pieces of the bench scripts: ML-100K-shaped synthetic data and an interleaved epoch timer."""
from __future__ import annotations

import resource
import time

import numpy as np
import torch
from omegaconf import OmegaConf

from lambdaopt.config.core import SplitConfig
from lambdaopt.data.synthetic import load_synthetic
from lambdaopt.tasks.ranking import BPRObjective


def ml100k_shaped(seed: int = 0):
    """943 users × 1682 items, ≈ 100k interactions, long-tailed — the shape of MovieLens-100K."""
    return load_synthetic(split=OmegaConf.structured(SplitConfig), n_users=943, n_items=1682, rank=16,
                          mean_interactions=120, min_interactions=20, seed=seed)


def interleaved_epochs(setups: dict, dataset, batch_size=1024, epochs=3, warmup=1, seed=0) -> dict[str, list[float]]:
    """CPU seconds of each training epoch of every setup ({name: (model, regularizer, optimizer)}), the
    setups taking turns one epoch at a time (after `warmup` untimed epochs each): a slow spell of a shared
    machine then falls on every setup alike instead of on whichever ran during it. Exactly the trainer's loop."""
    from lambdaopt.trainer import Trainer
    from lambdaopt.tracking import NullTracker

    trainers = {}
    for name, (model, regularizer, optimizer) in setups.items():
        objective = BPRObjective(dataset, batch_size, torch.device("cpu"))
        regularizer.setup(model, objective)
        trainers[name] = Trainer(model, regularizer, optimizer, objective, None, NullTracker(), max_epochs=epochs,
                                 seed=seed)
        for _ in range(warmup):
            trainers[name].train_epoch()
    times = {name: [] for name in trainers}
    for _ in range(epochs):
        for name, trainer in trainers.items():
            started = time.process_time()
            trainer.train_epoch()
            times[name].append(time.process_time() - started)
    return times


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(rows, columns):
    widths = [max(len(c), *(len(f"{r[i]}") for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{v}".ljust(w) for v, w in zip(r, widths)))


np.set_printoptions(precision=4)
