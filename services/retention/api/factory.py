"""``create_admin_app``: the admin API wired from its parts (lifespan, middleware, the refusal handler, routers)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import FastAPI, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from prometheus_client import CollectorRegistry

from services.actions.access import ArchiveAccess
from services.actions.layer import Actions
from services.core.crypto import UnknownKek
from services.core.http import BodyLimit
from services.core.ops_http import OpsServer, ops_app
from services.core.published import LOCAL_DEMO_FLAG, local_demo
from services.core.refusals import ActionRefused
from services.governance.metrics import RetentionMetrics
from services.retention.api.dependencies import is_ready
from services.retention.api.gate import AdminGate, BearerTokens
from services.retention.api.routers.setup import api_routes, setup_routers
from services.retention.settings import RetentionSettings

log = logging.getLogger("wa_archive.retention.api")

# Errors of the system that are not refusals (those carry their status: services/core/refusals.py). A person's key
# wrapped by a KEK this service was not given (removed from the settings too early): the records are fine, the
# configuration is to fix. The message names the KEK id only.
SYSTEM_ERROR_STATUS: dict[type[Exception], int] = {UnknownKek: 503}


class NoApiSignIn(Exception):
    """The admin API would accept no caller: no OpenID Connect provider, and not the local demo."""

    def __init__(self) -> None:
        super().__init__(
            "refusing to start: the admin API accepts the identity provider's access tokens, and none is configured. "
            "Set WA_RETENTION_OIDC__ISSUER and WA_RETENTION_OIDC__AUDIENCE "
            "(docs/OPERATIONS.md, 'Single sign-on: sessions, step-up, logout'). "
            f"The static tokens of WA_RETENTION_ADMIN_TOKENS are accepted only in a local demo ({LOCAL_DEMO_FLAG}=1)."
        )


async def refused(_request: Request, exc: Exception) -> Response:
    """The one answer to a refusal of the action layer (its own status) or an error of :data:`SYSTEM_ERROR_STATUS`:
    ``{"detail": message}``."""
    status = exc.http_status if isinstance(exc, ActionRefused) else SYSTEM_ERROR_STATUS[type(exc)]
    return JSONResponse({"detail": str(exc)}, status_code=status)


def create_admin_app(
    settings: RetentionSettings,
    open_access: Callable[[], Awaitable[ArchiveAccess]],
    *,
    registry: CollectorRegistry | None = None,
    background: Callable[[Actions], Coroutine[Any, Any, None]] | None = None,
    serve_ops: bool = True,
    demo: bool | None = None,
    bearer: BearerTokens | None = None,
) -> FastAPI:
    """The admin API. Its lifespan opens the archive (``open_access``), puts the :class:`Actions` in
    ``app.state.actions`` (the routes answer 503 ``not ready`` until then), runs ``background`` with them, and with
    ``serve_ops`` serves ``/healthz``, ``/readyz``, ``/metrics``, ``/openapi.json`` and ``/docs`` on
    ``settings.ops_port`` (0: any free port, then ``app.state.ops_port``). ``app.state`` also holds the
    ``settings`` and the ``metrics``.

    Callers present the provider's access tokens (``bearer``, by default as ``settings.oidc`` configures them) and,
    in the local demo only (``demo``, by default ``WA_LOCAL_DEMO=1``), the static tokens of
    ``settings.admin_tokens``. NoApiSignIn when that leaves none."""
    registry = registry or CollectorRegistry()
    metrics = RetentionMetrics(registry)
    demo = local_demo() if demo is None else demo
    tokens = (
        {name: (t.token.get_secret_value().encode(), t.role) for name, t in settings.admin_tokens.items()}
        if demo
        else {}
    )
    if bearer is None and settings.oidc is not None:
        bearer = BearerTokens(settings.oidc)
    if bearer is None and not demo:
        raise NoApiSignIn

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        access = await open_access()
        actions = app.state.actions = Actions(access, metrics)
        task = asyncio.create_task(background(actions)) if background else None
        documents = {
            "/openapi.json": ("application/json", orjson.dumps(app.openapi())),
            "/docs": (
                "text/html; charset=utf-8",
                bytes(get_swagger_ui_html(openapi_url="/openapi.json", title=app.title).body),
            ),
        }
        ops = OpsServer(ops_app(registry, lambda: is_ready(app), documents), settings.host, settings.ops_port)
        if serve_ops:
            await ops.start()
            app.state.ops_port = ops.port
        try:
            yield
        finally:
            app.state.actions = None  # not ready again: a late request is 503, not an action on a closed pool
            if serve_ops:
                await ops.stop()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await access.close()
            if bearer is not None:
                await bearer.close()

    app = FastAPI(title="wa-archive retention admin API", version="1", lifespan=lifespan)
    app.state.settings = settings
    app.state.metrics = metrics

    def refused_request(status: int, reason: str) -> None:
        metrics.api_refusals.labels(str(status), reason).inc()
        log.warning("admin API request refused: %d (%s)", status, reason)

    # Outermost last. A body announced over the limit is 413 at once, whoever sends it; then the gate decides 401
    # and 403 from the headers; only then does FastAPI read the body, which BodyLimit still counts.
    app.add_middleware(AdminGate, routes=api_routes(), tokens=tokens, on_refused=refused_request, bearer=bearer)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, on_refused=lambda: refused_request(413, "body"))

    errors: list[type[Exception]] = [ActionRefused, *SYSTEM_ERROR_STATUS]
    for error in errors:
        app.add_exception_handler(error, refused)

    setup_routers(app)
    return app
