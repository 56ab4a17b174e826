"""What a job process of the command line does not import: `torch._dynamo`.

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
"""
from __future__ import annotations

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
