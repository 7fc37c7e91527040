"""The audit log, newest first (pseudonyms only)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.responses import GATED, AuditEntryView

audit_router = APIRouter(prefix="/v1/audit", tags=["audit"])


@audit_router.get("", summary="The audit log (pseudonyms only)", responses=GATED, **requires("audit"))
async def audit(
    operator: Caller,
    actions: ReadyActions,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[AuditEntryView]:
    return [AuditEntryView.model_validate(entry.to_json()) for entry in await actions.audit_log(operator, limit=limit)]
