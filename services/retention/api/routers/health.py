"""The probes, answered without a token (:data:`services.retention.api.gate.OPEN_PATHS`); also on the ops port."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from services.core.ops_http import HEALTHZ, READYZ, probe
from services.retention.api.dependencies import is_ready

health_router = APIRouter(include_in_schema=False)


@health_router.get(HEALTHZ)
async def healthz() -> Response:
    status, body = probe(HEALTHZ, lambda: True)
    return Response(body, status_code=status, media_type="text/plain")


@health_router.get(READYZ)
async def readyz(request: Request) -> Response:
    status, body = probe(READYZ, lambda: is_ready(request.app))
    return Response(body, status_code=status, media_type="text/plain")
