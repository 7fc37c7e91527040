"""Erasure (GDPR Art. 17): request a person's erasure (four eyes), list the requests and their deadlines, refuse
or extend one."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import ErasureRequestBody, ExtensionRequest, RefusalRequest
from services.retention.api.responses import (
    GATED,
    GATED_WITH_BODY,
    ApprovalRequestView,
    ErasureRequestView,
    errors,
)

erasures_router = APIRouter(prefix="/v1/erasures", tags=["erasures"])


@erasures_router.post(
    "",
    summary="Request a person's erasure (GDPR Art. 17): carried out once a second DPO approves it (/v1/approvals)",
    status_code=202,
    responses={**GATED_WITH_BODY, **errors(400)},
    **requires("erase"),
)
async def erase(operator: Caller, actions: ReadyActions, body: ErasureRequestBody) -> ApprovalRequestView:
    asked = await actions.request_erasure(operator, **body.model_dump())
    return ApprovalRequestView.model_validate(asked.to_json(datetime.now(UTC)))


@erasures_router.get("", summary="Erasure requests and their deadlines", responses=GATED, **requires("erasures"))
async def erasures(operator: Caller, actions: ReadyActions) -> list[ErasureRequestView]:
    return [ErasureRequestView.model_validate(request.to_json()) for request in await actions.erasures(operator)]


@erasures_router.post(
    "/{request_ref}/refuse",
    summary="Refuse an open erasure request on its legal ground",
    responses={**GATED_WITH_BODY, **errors(400, 404)},
    **requires("erasure.refuse"),
)
async def erasure_refuse(
    operator: Caller, actions: ReadyActions, request_ref: str, body: RefusalRequest
) -> ErasureRequestView:
    refused = await actions.refuse_erasure(operator, request_ref, ground=body.ground)
    return ErasureRequestView.model_validate(refused.to_json())


@erasures_router.post(
    "/{request_ref}/extend",
    summary="Extend an erasure request's deadline by two months",
    responses={**GATED_WITH_BODY, **errors(400, 404)},
    **requires("erasure.extend"),
)
async def erasure_extend(
    operator: Caller, actions: ReadyActions, request_ref: str, body: ExtensionRequest
) -> ErasureRequestView:
    extended = await actions.extend_erasure(operator, request_ref, reason=body.reason)
    return ErasureRequestView.model_validate(extended.to_json())
