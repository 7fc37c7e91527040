"""A budget of bytes shared by concurrent tasks: an asyncio semaphore counted in bytes.

A task :meth:`ByteBudget.reserve` s what it may hold at most before it buffers anything, and gives it back when it
is done, so the bytes all tasks hold together never exceed the budget, however many there are or however large
their inputs: the media downloads of an archiver process (services/archiver/media.py) hold at most
``WA_ARCHIVER_MEDIA__BUDGET_BYTES`` between them.

Waiters are served in order (first come, first served): a large reservation is not starved by a stream of small
ones. A reservation larger than the whole budget is clipped to it (it then waits until it is alone). Cancelling a
waiting task gives back whatever it was granted. Not thread-safe: one event loop.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ByteBudget:
    def __init__(self, total: int) -> None:
        """Raises ValueError for a budget under 1 byte."""
        if total < 1:
            raise ValueError(f"a byte budget must be at least 1 byte, got {total}")
        self.total = total
        self._free = total
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()

    @property
    def in_use(self) -> int:
        """Bytes reserved now."""
        return self.total - self._free

    @asynccontextmanager
    async def reserve(self, size: int) -> AsyncIterator[int]:
        """Hold ``size`` bytes (clipped to 0..total) for the ``async with`` block; yields the bytes held."""
        size = max(0, min(size, self.total))
        await self._acquire(size)
        try:
            yield size
        finally:
            self._release(size)

    async def _acquire(self, size: int) -> None:
        if not self._waiters and self._free >= size:
            self._free -= size
            return
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (size, granted)
        self._waiters.append(entry)
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self._release(size)  # granted just before the cancellation arrived: give it back
            else:
                self._waiters.remove(entry)
                self._wake()  # a smaller waiter behind this one may fit now
            raise

    def _release(self, size: int) -> None:
        self._free += size
        self._wake()

    def _wake(self) -> None:
        while self._waiters and self._waiters[0][0] <= self._free:
            size, granted = self._waiters.popleft()
            self._free -= size
            granted.set_result(None)
