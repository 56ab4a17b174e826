"""What a job process of the command line sets up for itself: no `torch._dynamo` import, and rarer
full garbage collections.

torch.optim.Optimizer wraps `add_param_group`, `zero_grad`, `state_dict` and `load_state_dict` in
`torch._disable_dynamo`, whose wrapper imports `torch._dynamo` at the first call (1.1–1.3 CPU-s with torch
2.13 here, over a tenth of a small job's process) only to build the guard that keeps these methods out of a
`torch.compile` graph, and caches that guard on the function (`fn.__dynamo_disable`, torch/_compile.py). A
job of `lambdaopt` / `run.py` compiles nothing with torch (its kernels are numba's), so it fills that cache
with the plain function: the methods run exactly as before, and the import is never needed.

Only the command's task calls it (`experiment.hydra_task`), never an `import lambdaopt`: a notebook that
imports lambdaopt and compiles its own code keeps torch untouched. Where `torch._dynamo` is already loaded
(someone compiles in this process) nothing is changed. Optimizers whose `step()` is torch's own (`sgd` with
momentum, `rmsprop`, `adagrad`, a fallback of the compiled Adam) still import it there: their step wrapper
imports it unconditionally.

Garbage collection: after its imports a job holds ~0.6–1 million objects the collector tracks (torch, MLflow,
SQLAlchemy, Hydra), and CPython's default thresholds (700, 10, 10) walk all of them in a full collection
every ~70,000 net allocations, which Hydra's composition and MLflow's logging reach several times: a small
run (`run.py` on 150 × 120 synthetic users × items, 3 epochs) spent 1.47 of its 7.4 CPU-s in the collector,
1.2 s of it in 8 full collections. With (20000, 20, 20) from the command's start the same run spends
~0.7 s there (the import phase before it is unchanged) and no full collection runs after it; the default
run took 14.2 instead of 15.2 CPU-s (three alternating runs each), the same metrics. Garbage without
reference cycles is freed at once as before; only cycles wait longer (peak RSS of the default and the
λOpt-DUI run within ±20 MB of the default thresholds' 590–740 MB).
"""
from __future__ import annotations

import gc
import sys

import torch

GUARDED = ("add_param_group", "zero_grad", "state_dict", "load_state_dict")
CACHE = "__dynamo_disable"  # the attribute torch._disable_dynamo's wrapper looks up before importing


def skip_dynamo_guards() -> None:
    """Let Optimizer's dynamo-guarded methods run without importing torch._dynamo (module docstring)."""
    if "torch._dynamo" in sys.modules:
        return
    for name in GUARDED:
        plain = getattr(getattr(torch.optim.Optimizer, name, None), "__wrapped__", None)
        if plain is not None and getattr(plain, CACHE, None) is None:
            setattr(plain, CACHE, plain)


GC_THRESHOLDS = (20000, 20, 20)  # CPython's are (700, 10, 10)


def collect_garbage_rarely() -> None:
    """Raise this process's garbage-collector thresholds (module docstring); never lowers one a caller set,
    and leaves automatic collection off where threshold 0 turned it off."""
    if gc.get_threshold()[0]:
        gc.set_threshold(*map(max, gc.get_threshold(), GC_THRESHOLDS))
