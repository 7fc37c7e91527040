"""Decrypted reads: a person's conversation and a group's timeline (audited, with a reason).

The person, the group and the reason go in the body, never the URL: access logs and proxies keep URLs.
"""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import BreakGlassRequest, GroupMessagesRequest, MessagesRequest
from services.retention.api.responses import (
    GATED_WITH_BODY,
    BreakGlassAnswer,
    ConversationAnswer,
    GroupTimelineAnswer,
    RecordsJSON,
    errors,
)

messages_router = APIRouter(prefix="/v1", tags=["messages"], responses=GATED_WITH_BODY)


@messages_router.get("/messages", include_in_schema=False)
async def messages_in_the_url() -> JSONResponse:
    # Refused before anything is read: a person's number and a reason in a URL end up in access logs and
    # proxies. The clear error tells a client written for an earlier version where they go now.
    detail = "the person and the reason go in the body: POST /v1/messages"
    return JSONResponse({"detail": detail}, status_code=405, headers={"Allow": "POST"})


@messages_router.post(
    "/messages",
    summary="A person's conversation, decrypted, with the person and reason in the body",
    response_model=ConversationAnswer,
    response_class=RecordsJSON,
    responses=errors(400),
    **requires("messages"),
)
async def messages_by_body(operator: Caller, actions: ReadyActions, body: MessagesRequest) -> RecordsJSON:
    conversation = await actions.messages(operator, **body.model_dump())
    return RecordsJSON(
        {
            "messages": [m.to_json() for m in conversation.messages],
            "shredded_records": conversation.shredded_records,
        }
    )


@messages_router.post(
    "/groups/messages",
    summary="A group's timeline: every participant's messages, joins, leaves and updates (audited; a reason)",
    response_model=GroupTimelineAnswer,
    response_class=RecordsJSON,
    responses=errors(400),
    **requires("group.messages"),
)
async def group_messages(operator: Caller, actions: ReadyActions, body: GroupMessagesRequest) -> RecordsJSON:
    # In the body: the group id names people's conversation and stays out of access logs, like the reason.
    return RecordsJSON((await actions.group_messages(operator, **body.model_dump())).to_json())


@messages_router.post(
    "/break-glass",
    summary="Ask to read a person or a group outside your cases (a DPO other than you approves; flagged, audited)",
    response_model=BreakGlassAnswer,
    responses=errors(400),
    **requires("messages"),
)
async def break_glass(operator: Caller, actions: ReadyActions, body: BreakGlassRequest) -> BreakGlassAnswer:
    asked = await actions.request_break_glass(operator, **body.model_dump())
    return BreakGlassAnswer(
        request_id=asked.request_id, state=asked.state(asked.requested_at), expires_at=asked.expires_at
    )
