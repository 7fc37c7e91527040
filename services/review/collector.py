"""The one switch of the process-wide cyclic garbage collector: paused while a read decodes and assembles records.

Reading 10,000 messages creates a few hundred thousand objects (decoded envelopes, record metadata, messages) that
all stay alive until the read returns: the collector rescanned them, and the whole heap with them, over and over,
and freed nothing (they hold no cycles; reference counting frees them). That was 0.2-0.3 s of a 0.8 s read in
bench/retrieval.py (commit "Archive format v2 …"). The switch is process-wide, so it is counted: overlapping
reads keep it paused until the last one ends, and a collector that was already off (tests, a service that manages
it) stays as it was. Only services/review/conversation.py enters it, around the read's open-decode-assemble step.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

_paused_reads = 0  # reads in progress that paused the collector (one event loop: no lock)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause automatic cyclic garbage collection for the block (re-enabled when the last overlapping block ends,
    also on an exception)."""
    global _paused_reads  # noqa: PLW0603 — a process-wide switch deserves a process-wide count
    if _paused_reads == 0 and not gc.isenabled():
        yield
        return
    _paused_reads += 1
    gc.disable()
    try:
        yield
    finally:
        _paused_reads -= 1
        if _paused_reads == 0:
            gc.enable()
