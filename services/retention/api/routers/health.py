"""The probes, answered without a token (:data:`services.retention.api.gate.OPEN_PATHS`); also on the ops port."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.retention.api.dependencies import is_ready

health_router = APIRouter(include_in_schema=False)


@health_router.get("/healthz")
async def healthz() -> Response:
    return Response("ok", media_type="text/plain")


@health_router.get("/readyz")
async def readyz(request: Request) -> Response:
    ready = is_ready(request.app)
    return Response("ready" if ready else "not ready", status_code=200 if ready else 503, media_type="text/plain")
