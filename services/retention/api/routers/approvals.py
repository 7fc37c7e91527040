"""Four eyes (services/actions/approvals.py): the requests waiting for the caller's decision, one request, and its
approval (which carries the action out as the approver) or rejection, each with a reason."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter

from services.actions.layer import ApprovalRequest
from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import ReasonRequest
from services.retention.api.responses import GATED, GATED_WITH_BODY, ApprovalRequestView, HeldDraftView, errors

approvals_router = APIRouter(prefix="/v1/approvals", tags=["approvals"])


def view(request: ApprovalRequest) -> ApprovalRequestView:
    return ApprovalRequestView.model_validate(request.to_json(datetime.now(UTC)))


@approvals_router.get(
    "",
    summary="The requests waiting for your decision (all=true: every request, newest first; DPO)",
    responses=GATED,
    **requires("approval.decide"),
)
async def approvals(operator: Caller, actions: ReadyActions, all: bool = False) -> list[ApprovalRequestView]:
    return [view(r) for r in await actions.approvals(operator, waiting_for_me=not all)]


@approvals_router.get(
    "/{request_id}", summary="One request", responses={**GATED, **errors(404)}, **requires("approval.decide")
)
async def approval(operator: Caller, actions: ReadyActions, request_id: str) -> ApprovalRequestView:
    return view(await actions.approval(operator, request_id))


@approvals_router.get(
    "/{request_id}/draft",
    summary="A held message (kind send) as the customer would read it, and who receives it (audited as a retrieval)",
    responses={**GATED, **errors(404)},
    **requires("approval.decide"),
)
async def draft(operator: Caller, actions: ReadyActions, request_id: str) -> HeldDraftView:
    return HeldDraftView.model_validate((await actions.held_draft(operator, request_id)).to_json())


@approvals_router.post(
    "/{request_id}/approve",
    summary="Approve a request (never your own) and carry it out as you, on its behalf",
    responses={**GATED_WITH_BODY, **errors(400, 404, 409)},
    **requires("approval.decide"),
)
async def approve(operator: Caller, actions: ReadyActions, request_id: str, body: ReasonRequest) -> ApprovalRequestView:
    return view((await actions.approve(operator, request_id, reason=body.reason)).request)


@approvals_router.post(
    "/{request_id}/reject",
    summary="Reject a request (never your own): nothing is carried out",
    responses={**GATED_WITH_BODY, **errors(400, 404, 409)},
    **requires("approval.decide"),
)
async def reject(operator: Caller, actions: ReadyActions, request_id: str, body: ReasonRequest) -> ApprovalRequestView:
    return view(await actions.reject(operator, request_id, reason=body.reason))
