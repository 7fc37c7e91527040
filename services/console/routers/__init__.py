"""The console's routers, one per resource; :func:`services.console.factory.create_console_app` includes them all."""

from __future__ import annotations

from typing import Final

from fastapi import APIRouter

from services.console.routers import (
    approvals,
    audit,
    break_glass,
    cases,
    conversation,
    erasures,
    exports,
    holds,
    media,
    oidc,
    retention,
    search,
    signin,
)

ROUTERS: Final[tuple[APIRouter, ...]] = (
    signin.router,
    oidc.router,
    search.router,
    conversation.router,
    break_glass.router,
    media.router,
    cases.router,
    exports.router,
    approvals.router,
    holds.router,
    erasures.router,
    audit.router,
    retention.router,
)
