"""GC tuning of the service processes: collections are spaced out, never switched off."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.unit

# Run in a child: the tuning is process-wide and must not leak into the rest of the test session.
PROBE = """
import gc, weakref
from services.core.runtime import SERVICE_GC_THRESHOLDS, tune_gc

tune_gc()
assert gc.isenabled()
assert gc.get_threshold() == SERVICE_GC_THRESHOLDS, gc.get_threshold()
assert gc.get_freeze_count() > 1000, gc.get_freeze_count()  # the imported modules' objects


class Node:
    pass


cycle = Node()
cycle.me = cycle
alive = weakref.ref(cycle)
del cycle
assert alive() is not None  # not yet: collections are spaced out
allocations = [[] for _ in range(SERVICE_GC_THRESHOLDS[0] * 2)]
assert alive() is None, "a reference cycle must still be collected without an explicit gc.collect()"
print("ok")
"""


def test_tune_gc_spaces_collections_but_still_collects_cycles() -> None:
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
