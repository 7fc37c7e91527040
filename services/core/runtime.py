"""Process-wide runtime tuning shared by the service entry points."""

from __future__ import annotations

import gc
from typing import Final

# CPython's default (700, 10, 10) runs a young-generation collection every 700 net allocations. The hot paths
# allocate a few dozen short-lived objects per event (decoded JSON, metadata, index rows) that reference counting
# frees anyway, so at thousands of events a second the collector ran hundreds of times a second for little:
# spacing it out took the archiver from 110 to 98 µs of CPU per event (bench/archiver.py; a quarter of the batch
# writer's own time in isolation). Cycles are still collected, just in fewer, larger passes.
SERVICE_GC_THRESHOLDS: Final = (50_000, 20, 10)


def tune_gc(thresholds: tuple[int, int, int] = SERVICE_GC_THRESHOLDS) -> None:
    """Call once, after start-up imports: move everything alive so far (modules, settings, compiled schemas) out
    of the collector's sight (``gc.freeze``), so full collections stop rescanning it, and space collections for a
    service's allocation rate."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*thresholds)
