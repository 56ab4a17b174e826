"""Free heap pages go back to the OS (lambdaopt/memory.py), and the trainer does it every few steps."""
import ctypes
import os
import sys

import pytest
import torch
from omegaconf import OmegaConf

import lambdaopt.evaluation.ranking as metrics_module
import lambdaopt.trainer as trainer_module
from lambdaopt.config.core import SplitConfig
from lambdaopt.data.synthetic import load_synthetic
from lambdaopt.memory import _malloc_trim, release_free_heap
from lambdaopt.models.mf import MatrixFactorization
from lambdaopt.tasks.ranking import BPRObjective
from lambdaopt.regularizers.fixed import FixedL2
from lambdaopt.tracking import NullTracker
from lambdaopt.trainer import Trainer

glibc = pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None,
                           reason="malloc_trim is glibc's")


def resident_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


@glibc
def test_release_gives_back_the_holes_a_fragmented_heap_keeps():
    """The situation of a λOpt epoch in miniature: many heap chunks, most freed, a few still live
    between them. free() keeps the pages (the live chunks pin the heap); release_free_heap returns them."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size, count = 64 * 1024, 2000  # 125 MB in chunks below glibc's smallest mmap threshold: all on the heap
    chunks = [libc.malloc(size) for _ in range(count)]
    for c in chunks:
        ctypes.memset(c, 1, size)  # touch: make the pages resident
    kept = chunks[::50]  # every 50th stays live, so the freed space is holes, not a free heap top
    for i, c in enumerate(chunks):
        if i % 50:
            libc.free(c)
    after_free = resident_mb()
    assert release_free_heap() is True
    after_release = resident_mb()
    for c in kept:
        libc.free(c)
    assert after_free - after_release > 0.8 * size * count * 49 / 50 / 2**20


def test_release_is_harmless_without_glibc(monkeypatch):
    monkeypatch.setattr("lambdaopt.memory._malloc_trim", lambda: None)
    assert release_free_heap() is False


@pytest.fixture(scope="module")
def tiny_dataset():
    return load_synthetic(split=OmegaConf.structured(SplitConfig), n_users=30, n_items=20, rank=2,
                          mean_interactions=8, min_interactions=5, seed=0)


@pytest.mark.parametrize("every, expected", [(2, 5), (0, 0)])
def test_trainer_releases_every_n_steps(tiny_dataset, monkeypatch, every, expected):
    calls = []
    monkeypatch.setattr(trainer_module, "release_free_heap", lambda: calls.append(1))
    model = MatrixFactorization(tiny_dataset.n_users, tiny_dataset.n_items, dim=4, item_bias=False)
    objective = BPRObjective(tiny_dataset, batch_size=len(tiny_dataset.train) // 10 + 1, device=torch.device("cpu"))
    trainer = Trainer(model, FixedL2(1e-2), torch.optim.Adam(model.parameters()), objective, None, NullTracker(),
                      max_epochs=1, release_memory_every=every)
    trainer.train_epoch()
    assert len(calls) == expected  # 10 steps


@pytest.mark.parametrize("chunk_users, expected", [(3, 1 + 2), (1000, 0)])
def test_evaluator_releases_only_when_long(tiny_dataset, monkeypatch, chunk_users, expected):
    """More than 4 chunks: once before the first and after every 4th; a short evaluation never."""
    dataset = tiny_dataset
    calls = []
    monkeypatch.setattr(metrics_module, "release_free_heap", lambda: calls.append(1))
    evaluator = metrics_module.RankingEvaluator(dataset.n_users, dataset.n_items, dataset.test, dataset.train,
                                                ks=[5], chunk_users=chunk_users)
    assert len(evaluator.users) == 30  # 10 chunks of 3
    evaluator(MatrixFactorization(dataset.n_users, dataset.n_items, dim=4, item_bias=False))
    assert len(calls) == expected
