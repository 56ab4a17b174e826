"""The one import of the optional compiled loops (numba): every fast CPU path asks here and falls back to its
tensor path on None."""
from __future__ import annotations

import importlib


def compiled_kernels(module: str, package: str = "lambdaopt.tasks"):
    """The module `<package>.<module>` of compiled loops (tasks/bpr_kernel.py, bpr_lookahead.py,
    completion_kernel.py; lambdaopt/adam_kernel.py), or None where numba cannot be imported."""
    try:
        return importlib.import_module(f"{package}.{module}")
    except ImportError:
        return None
