"""lambdaopt/startup.py: what the command's process sets up for itself."""
import gc

import pytest

from lambdaopt.startup import GC_THRESHOLDS, collect_garbage_rarely


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.mark.parametrize("before,after", [
    ((700, 10, 10), GC_THRESHOLDS),                      # CPython's defaults: raised
    ((50000, 5, 100), (50000, GC_THRESHOLDS[1], 100)),   # a caller's higher value is kept, a lower one raised
    ((0, 10, 10), (0, 10, 10)),                          # automatic collection turned off stays off
])
def test_gc_thresholds_are_raised_never_lowered(thresholds, before, after):
    gc.set_threshold(*before)
    collect_garbage_rarely()
    assert gc.get_threshold() == after
