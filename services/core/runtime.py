"""Process-wide runtime tuning shared by the service entry points."""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Callable
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


# How often a long-running service runs a full collection of its own (FullCollections). With SERVICE_GC_THRESHOLDS
# the collector's own full collections come rarely, and through a 200,000-event backlog the archiver's glibc heap
# grew by 60-80 MB of memory in use that one full collection gave back at once (bench/archiver.py: peaks of
# 187-232 MB); with one every 10 s it stays level, peaking at 166-174 MB. A full collection costs ≈20 ms of CPU with a
# drain's buffers in memory (the frozen start-up objects are not scanned again): well under 1 µs per event.
FULL_COLLECTION_INTERVAL_S: Final = 10.0


class FullCollections:
    """A full garbage collection (``collect``) at most every ``interval_s`` of ``clock``: call :meth:`tick` from a
    loop that turns at least that often. The first tick only starts the clock."""

    def __init__(
        self,
        interval_s: float = FULL_COLLECTION_INTERVAL_S,
        *,
        clock: Callable[[], float] = time.monotonic,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        if interval_s <= 0:
            raise ValueError("the interval between full collections must be positive")
        self.interval_s = interval_s
        self.clock = clock
        self.collect = collect
        self._last: float | None = None

    def tick(self) -> bool:
        """Collect if ``interval_s`` passed since the last collection (or the first tick); True if it did."""
        now = self.clock()
        if self._last is None:
            self._last = now
            return False
        if now - self._last < self.interval_s:
            return False
        self.collect()
        self._last = self.clock()
        return True
