"""Process-wide runtime tuning shared by the service entry points."""

from __future__ import annotations

import gc
import sys
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


# What packages the services use pull in at import time for features no service uses: httpx's command-line client
# (httpx._main: click, rich, pygments), structlog's rich tracebacks (rich) and uvicorn's --reload watcher
# (watchfiles). ≈5 MB of resident memory in every process, for nothing (the archiver's floor: 80 → 75 MB).
UNUSED_EXTRAS: Final = ("httpx._main", "rich", "pygments", "watchfiles")


def skip_unused_extras(names: tuple[str, ...] = UNUSED_EXTRAS) -> None:
    """Make ``names`` unimportable in this process (``sys.modules[name] = None``), so that the packages above take
    the fallback each has for their absence: httpx without its CLI, structlog's plain tracebacks, uvicorn's polling
    reloader. Call it first thing in an entry point, before those packages are imported; a module already imported
    is left as it is. Code that does import one of them gets ImportError: the extras are not part of the service."""
    for name in names:
        sys.modules.setdefault(name, None)  # type: ignore[arg-type]
