"""The operational HTTP endpoints every background service exposes: /healthz, /readyz, /metrics.

Served by uvicorn inside the service's own event loop, so a wedged loop also fails the liveness probe.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def ops_app(
    registry: CollectorRegistry, ready: Callable[[], bool]
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        content_type = b"text/plain; charset=utf-8"
        if path == "/healthz":
            status, body = 200, b"ok"
        elif path == "/readyz":
            status, body = (200, b"ready") if ready() else (503, b"not ready")
        elif path == "/metrics":
            status, body, content_type = 200, generate_latest(registry), CONTENT_TYPE_LATEST.encode()
        else:
            status, body = 404, b"not found"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return app


class _QuietServer(uvicorn.Server):
    """The service owns SIGTERM/SIGINT (it drains before exiting); this server must not capture them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class OpsServer:
    """uvicorn serving :func:`ops_app` as a task of the current loop; :meth:`stop` shuts it down."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], host: str, port: int) -> None:
        # log_config=None: uvicorn's records go through the process's logging handler (text or JSON lines).
        config = uvicorn.Config(
            app, host=host, port=port, lifespan="off", access_log=False, log_level="warning", log_config=None
        )
        self.server = _QuietServer(config)
        self.task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve(), name="ops-http")
        for _ in range(200):
            if self.server.started or self.task.done():
                break
            await asyncio.sleep(0.025)
        if self.task.done():
            self.task.result()  # raises the bind error, e.g. port already in use

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
