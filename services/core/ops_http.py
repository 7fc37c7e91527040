"""The operational HTTP endpoints every background service exposes: /healthz, /readyz, /metrics.

Served by uvicorn inside the service's own event loop, so a wedged loop also fails the liveness probe.
:func:`probe` is the one answer to the probes: the ops port, ingest's own port and the admin API's answer it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, MutableMapping
from typing import Any, Final

import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from services.core.http import server_options

OPS_MAX_CONCURRENCY = 16
HEALTHZ: Final = "/healthz"
READYZ: Final = "/readyz"
PROBE_PATHS: Final = frozenset({HEALTHZ, READYZ})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


def probe(path: str, ready: Callable[[], bool], not_ready: bytes = b"not ready") -> tuple[int, bytes]:
    """The status and plain-text body of a probe at ``path`` (one of :data:`PROBE_PATHS`): liveness (``/healthz``)
    is 200 ``ok`` whenever the server answers at all; readiness (``/readyz``) is 200 ``ready`` when ``ready()``
    (called only then), else 503 ``not_ready``. Raises ValueError for any other path."""
    if path == HEALTHZ:
        return 200, b"ok"
    if path == READYZ:
        return (200, b"ready") if ready() else (503, not_ready)
    raise ValueError(f"{path!r} is not a probe")


def ops_app(
    registry: CollectorRegistry,
    ready: Callable[[], bool],
    documents: Mapping[str, tuple[str, bytes]] | None = None,
) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The probes and the metrics, plus fixed ``documents`` by path (content type, bytes), e.g. an API's OpenAPI
    document. No route reads a request body."""
    served = {path: (kind.encode(), body) for path, (kind, body) in (documents or {}).items()}

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        content_type = b"text/plain; charset=utf-8"
        if path in served:
            content_type, body = served[path]
            status = 200
        elif path in PROBE_PATHS:
            status, body = probe(path, ready)
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
            app,
            host=host,
            port=port,
            lifespan="off",
            access_log=False,
            log_level="warning",
            log_config=None,
            # Prometheus and the kubelet: a few connections at a time.
            **server_options(OPS_MAX_CONCURRENCY),
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

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the one chosen for port 0), once started."""
        port: int = self.server.servers[0].sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        self.server.should_exit = True
        if self.task is not None:
            await self.task
