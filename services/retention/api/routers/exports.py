"""Subject access and portability (GDPR Art. 15/20): a person's messages as one JSON document."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.actions.layer import ApprovalRequest
from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import ExportRequest
from services.retention.api.responses import (
    GATED_WITH_BODY,
    REQUESTED,
    ApprovalRequestView,
    RecordsJSON,
    SubjectExportDocument,
    errors,
)

exports_router = APIRouter(prefix="/v1/exports", tags=["exports"])


@exports_router.post(
    "",
    summary="Subject access / portability export (GDPR Art. 15/20), JSON",
    response_model=SubjectExportDocument,
    response_class=RecordsJSON,
    responses={**GATED_WITH_BODY, **REQUESTED, **errors(400)},
    **requires("export"),
)
async def export(operator: Caller, actions: ReadyActions, body: ExportRequest) -> JSONResponse:
    """The document at once when it holds at most ``WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES`` messages; else 202
    and a four-eyes request: once a second DPO approves it, export jobs are queued."""
    found = await actions.export_or_request(operator, **body.model_dump())
    if isinstance(found, ApprovalRequest):
        view = ApprovalRequestView.model_validate(found.to_json(datetime.now(UTC)))
        return JSONResponse(view.model_dump(mode="json"), status_code=202)
    return RecordsJSON(found.document())
