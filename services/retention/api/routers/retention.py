"""A retention run on demand (the service also runs it on its schedule)."""

from __future__ import annotations

from fastapi import APIRouter

from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import RetentionRunRequest
from services.retention.api.responses import GATED_WITH_BODY, RetentionReportView

retention_router = APIRouter(prefix="/v1/retention", tags=["retention"])


@retention_router.post(
    "/run", summary="Run retention now (dry run by default)", responses=GATED_WITH_BODY, **requires("retention.run")
)
async def run(operator: Caller, actions: ReadyActions, body: RetentionRunRequest) -> RetentionReportView:
    return RetentionReportView.model_validate((await actions.run_retention(operator, dry_run=body.dry_run)).to_json())
