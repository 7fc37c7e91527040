"""Mounts every router of the admin API."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter, FastAPI
from starlette.routing import BaseRoute

from services.retention.api.routers.approvals import approvals_router
from services.retention.api.routers.audit import audit_router
from services.retention.api.routers.erasures import erasures_router
from services.retention.api.routers.exports import exports_router
from services.retention.api.routers.health import health_router
from services.retention.api.routers.holds import holds_router
from services.retention.api.routers.messages import messages_router
from services.retention.api.routers.retention import retention_router
from services.retention.api.routers.search import search_router

# In the order OpenAPI lists them.
ROUTERS: Final[tuple[APIRouter, ...]] = (
    health_router,
    messages_router,
    search_router,
    erasures_router,
    holds_router,
    exports_router,
    approvals_router,
    retention_router,
    audit_router,
)


def setup_routers(app: FastAPI) -> None:
    for router in ROUTERS:
        app.include_router(router)


def api_routes() -> list[BaseRoute]:
    """Every route of the routers, its path prefixed: what :class:`~services.retention.api.gate.AdminGate` matches a
    request against to find the route's action."""
    return [route for router in ROUTERS for route in router.routes]
