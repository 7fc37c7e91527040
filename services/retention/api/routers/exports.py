"""Subject access and portability (GDPR Art. 15/20): a person's messages as one JSON document."""

from __future__ import annotations

from fastapi import APIRouter

from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import ExportRequest
from services.retention.api.responses import GATED_WITH_BODY, RecordsJSON, SubjectExportDocument, errors

exports_router = APIRouter(prefix="/v1/exports", tags=["exports"])


@exports_router.post(
    "",
    summary="Subject access / portability export (GDPR Art. 15/20), JSON",
    response_model=SubjectExportDocument,
    response_class=RecordsJSON,
    responses={**GATED_WITH_BODY, **errors(400)},
    **requires("export"),
)
async def export(operator: Caller, actions: ReadyActions, body: ExportRequest) -> RecordsJSON:
    return RecordsJSON((await actions.export(operator, **body.model_dump())).document())
