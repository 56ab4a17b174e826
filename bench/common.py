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


class Clock:
    """Seconds of work on `device`. On the CPU, this process's CPU time (a busy neighbour on a shared
    machine does not count); on CUDA, wall time read after a synchronization — kernels run asynchronously,
    so the CPU time of the launching thread would count the launches, not the work."""

    def __init__(self, device="cpu"):
        self.device = torch.device(device)
        self.unit = "wall s (CUDA, synchronized)" if self.device.type == "cuda" else "CPU s"

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            return time.perf_counter()
        return time.process_time()


def device_name(device) -> str:
    """What the numbers ran on, for a table's caption."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    return f"CPU, {torch.get_num_threads()} thread(s), torch {torch.__version__}"


def interleaved_epochs(setups: dict, dataset, batch_size=1024, epochs=3, warmup=1, seed=0,
                       device="cpu") -> dict[str, list[float]]:
    """Seconds (`Clock`) of each training epoch of every setup ({name: (model, regularizer, optimizer)},
    the model already on `device`), the setups taking turns one epoch at a time (after `warmup` untimed
    epochs each): a slow spell of a shared machine then falls on every setup alike instead of on whichever
    ran during it. Exactly the trainer's loop."""
    from lambdaopt.trainer import Trainer
    from lambdaopt.tracking import NullTracker

    clock = Clock(device)
    trainers = {}
    for name, (model, regularizer, optimizer) in setups.items():
        objective = BPRObjective(dataset, batch_size, clock.device)
        regularizer.setup(model, objective)
        regularizer.to(clock.device)
        trainers[name] = Trainer(model, regularizer, optimizer, objective, None, NullTracker(), max_epochs=epochs,
                                 seed=seed)
        for _ in range(warmup):
            trainers[name].train_epoch()
    times = {name: [] for name in trainers}
    for _ in range(epochs):
        for name, trainer in trainers.items():
            started = clock.now()
            trainer.train_epoch()
            times[name].append(clock.now() - started)
    return times


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def print_table(rows, columns):
    widths = [max(len(c), *(len(f"{r[i]}") for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{v}".ljust(w) for v, w in zip(r, widths)))


np.set_printoptions(precision=4)
