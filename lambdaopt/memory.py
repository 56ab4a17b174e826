"""Return the C heap's free pages to the operating system between training steps and evaluation chunks.

Why: glibc's malloc serves buffers below its mmap threshold from the heap, and that threshold rises
(up to 32 MB) each time a larger mapped buffer is freed, so after the first steps most per-step
buffers of a few MB — gradients of the batch rows, the look-ahead's compact rows (their count changes
from step to step), an evaluation chunk's rank arrays (their width is the chunk's largest held-out
count) — live in the heap. Freed chunks of varying sizes leave holes that the next, differently sized
request does not fit, and glibc keeps their pages resident. `malloc_trim(0)` gives the whole free pages
inside the heap back (madvise, glibc ≥ 2.8) without moving live data; it takes 2–8 ms on a 1.3 GB heap.
Measured on ML-10M-sized data (bench/README.md, "Scaling"): one full-ranking evaluation's peak above
its start is 1,091 MB without, 603 MB with a trim every 4 chunks (no measurable time), 345 MB every
chunk (+23 % time: the pages given back are faulted in again); a λOpt-DUI epoch's resident memory
stays flat with a trim every 64 steps. The trainer calls it every `trainer.release_memory_every`
steps; the ranking evaluator, when it has more than 4 chunks, before its first chunk and every 4.

Elsewhere (macOS, musl, Windows) there is no malloc_trim and `release_free_heap` does nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library has none."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim = libc.malloc_trim
    except (OSError, AttributeError, TypeError):  # no C library found, or not glibc
        return None
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    return trim


def release_free_heap() -> bool:
    """Give free heap pages back to the OS; True if the C library can (glibc), whether or not any were."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True
