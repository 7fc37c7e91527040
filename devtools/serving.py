"""An ASGI app served in the running event loop: the Graph API stand-in, and the services under test."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Iterator
from typing import Any, Literal

import uvicorn


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, *, lifespan: Literal["auto", "on", "off"] = "on", port: int = 0) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port by default) inside the running loop; yields its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, access_log=False, log_level="warning")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class _QuietServer(uvicorn.Server):
    """Leaves the process's signal handlers alone: the test runner or the caller owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago (for a process the caller starts)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
