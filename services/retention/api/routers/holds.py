"""Legal holds: create, list, request a release (four eyes). Data under a hold is neither deleted by retention nor
erased."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import HoldRequest, ReasonRequest
from services.retention.api.responses import GATED, GATED_WITH_BODY, ApprovalRequestView, HoldView, errors

holds_router = APIRouter(prefix="/v1/holds", tags=["holds"])


@holds_router.post(
    "", summary="Create a legal hold", responses={**GATED_WITH_BODY, **errors(400)}, **requires("hold.create")
)
async def hold_create(operator: Caller, actions: ReadyActions, body: HoldRequest) -> HoldView:
    return HoldView.model_validate((await actions.create_hold(operator, **body.model_dump())).to_json())


@holds_router.get("", summary="Legal holds", responses=GATED, **requires("hold.list"))
async def holds(operator: Caller, actions: ReadyActions, include_released: bool = False) -> list[HoldView]:
    listed = await actions.holds(operator, include_released=include_released)
    return [HoldView.model_validate(hold.to_json()) for hold in listed]


@holds_router.post(
    "/{hold_id}/release",
    summary="Request a legal hold's release: carried out once a second DPO approves it (/v1/approvals)",
    status_code=202,
    responses={**GATED_WITH_BODY, **errors(400, 404)},
    **requires("hold.release"),
)
async def hold_release(
    operator: Caller, actions: ReadyActions, hold_id: str, body: ReasonRequest
) -> ApprovalRequestView:
    asked = await actions.request_hold_release(operator, hold_id, reason=body.reason)
    return ApprovalRequestView.model_validate(asked.to_json(datetime.now(UTC)))
