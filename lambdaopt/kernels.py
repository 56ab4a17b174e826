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


class KeptViews:
    """NumPy views of tensors for the compiled loops, kept between steps while the tensors' storage is the same.

    Why: a torch op costs ~10–20 µs when a step's table-sized passes have just evicted torch's code from the
    caches, against ~1 µs warm (bench/README.md, λOpt epoch time), so remaking a step's views every step cost
    ~0.1 ms of a 0.55 ms MF-BPR step. A kept view holds its storage alive, so an address seen again is the same
    storage; a table given new storage (`.data =`, a loaded optimizer state) gets new views."""

    def __init__(self):
        self.kept: dict[str, tuple] = {}

    def __call__(self, name: str, tensors: tuple, make, views=lambda arrays: True):
        """make()'s arrays — views of `tensors` (None: absent) — made again only when a storage address
        changed. Not kept when `views(arrays)` is false: a copy (λ expanded to a table's shape) goes stale
        when the tensor moves in place, so it is made at every call."""
        key = tuple(0 if t is None else t.data_ptr() for t in tensors)
        kept = self.kept.get(name)
        if kept is not None and kept[0] == key:
            return kept[1]
        arrays = make()
        if views(arrays):
            self.kept[name] = (key, arrays)
        return arrays
