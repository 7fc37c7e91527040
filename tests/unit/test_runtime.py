"""GC tuning of the service processes: collections are spaced out, never switched off."""

from __future__ import annotations

import subprocess
import sys

import pytest

from services.core.runtime import FullCollections

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


@pytest.mark.parametrize(
    ("ticks", "collected_at"),
    [
        pytest.param([0.0], [], id="the first tick only starts the clock"),
        pytest.param([0.0, 9.9], [], id="nothing before the interval"),
        pytest.param([0.0, 10.0], [10.0], id="one at the interval"),
        pytest.param([0.0, 10.0, 15.0, 19.9, 20.0], [10.0, 20.0], id="counted from the last collection"),
        pytest.param([5.0, 5.1, 40.0, 40.5], [40.0], id="a late tick collects once, not once per interval missed"),
    ],
)
def test_full_collections_come_at_most_once_per_interval(ticks: list[float], collected_at: list[float]) -> None:
    now = [0.0]
    collections: list[float] = []
    periodic = FullCollections(10.0, clock=lambda: now[0], collect=lambda: collections.append(now[0]))
    done = []
    for moment in ticks:
        now[0] = moment
        done.append(periodic.tick())
    assert collections == collected_at
    assert done.count(True) == len(collected_at)


def test_full_collections_refuse_a_non_positive_interval() -> None:
    with pytest.raises(ValueError, match="positive"):
        FullCollections(0)
