"""The retention admin API (``/v1/``), bearer tokens with roles; OpenAPI at ``/openapi.json``.

A thin adapter over :mod:`services.retention.actions`: it authenticates the token, translates the request into an
action's arguments and its result or error into JSON. ``reader`` tokens may search and retrieve (with a reason,
audited); ``dpo`` tokens may also erase, hold, export and run retention. A missing or unknown token is 401; a
known token without the role is 403, before the request body is even read. The token's name is the actor
written to the audit log.
"""

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from services.core.crypto import UnknownKek
from services.core.plaintext import json_bytes
from services.retention.access import ArchiveAccess
from services.retention.actions import (
    ActionName,
    Actions,
    ErasureError,
    Forbidden,
    GroupRequired,
    HoldError,
    NotFound,
    Operator,
    PersonRequired,
    ReasonRequired,
    authorize,
)
from services.retention.conversation import Conversation
from services.retention.erasure import EXTENSION_REASON_MAX
from services.retention.grounds import RefusalGround
from services.retention.holds import HoldScope
from services.retention.metrics import RetentionMetrics
from services.retention.search import SearchFilter
from services.retention.settings import RetentionSettings

# How each refusal of the action layer is answered.
ERROR_STATUS: dict[type[Exception], int] = {
    Forbidden: 403,
    ReasonRequired: 400,
    HoldError: 400,
    ErasureError: 400,
    PersonRequired: 400,
    GroupRequired: 400,
    NotFound: 404,
    # A person's key is wrapped by a KEK this service was not given (removed from the settings too early): the
    # records are fine, the configuration is to fix. The message names the KEK id only.
    UnknownKek: 503,
}


# The request bodies' fields are the actions' keyword arguments.
class ErasureRequest(BaseModel):
    contact: str = Field(min_length=1, description="wa_id or business-scoped user id of the person")
    phone_number_id: str | None = Field(default=None, description="limit to one business number (default: all)")
    request_ref: str = Field(min_length=1, description="your reference of the data subject's request")


class MessagesRequest(BaseModel):
    contact: str | None = Field(default=None, min_length=1, description="wa_id or business-scoped user id")
    subject_ref: str | None = Field(
        default=None, pattern="^[0-9a-f]{64}$", description="or the person's pseudonym, as a search hit gives it"
    )
    reason: str | None = Field(default=None, description="why the conversation is read (written to the audit log)")
    phone_number_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class GroupMessagesRequest(BaseModel):
    group_id: str = Field(min_length=1, description="the group's id (Cloud API Groups)")
    phone_number_id: str = Field(min_length=1, description="the business number the group belongs to")
    reason: str | None = Field(default=None, description="why the group is read (written to the audit log)")


class RecordsJSON(JSONResponse):
    """The JSON of decrypted records, written by :func:`services.core.plaintext.json_bytes` and returned as it is.

    FastAPI's own serialisation of a returned dict refuses nesting beyond a limit (HTTP 500, "Maximum serialization
    depth exceeded") that a message the archive accepted can pass (up to about 1,020 levels): one such message
    would hide the person's whole conversation. The strings are valid Unicode already (lone surrogates are U+FFFD
    once decoded), and orjson writes the usual answer faster than the generic encoder."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


def conversation_json(conversation: Conversation) -> dict[str, Any]:
    return {
        "messages": [m.to_json() for m in conversation.messages],
        "shredded_records": conversation.shredded_records,
    }


class SearchRequest(BaseModel):
    phone_number_id: str | None = None
    contact: str | None = Field(default=None, description="wa_id or business-scoped user id of the person")
    since: datetime | None = None
    until: datetime | None = None
    kind: str | None = None
    type: str | None = None
    deleted_only: bool = False
    edited_only: bool = False
    limit: int = Field(default=1000, ge=1, le=10_000)
    keywords: str | None = Field(
        default=None, min_length=1, max_length=500, description="words of the messages (case and accents ignored)"
    )


class RefusalRequest(BaseModel):
    ground: RefusalGround = Field(description="the legal ground: GDPR Art. 17(3) (a)-(e) or Art. 12(5)")


class ExtensionRequest(BaseModel):
    reason: str = Field(
        min_length=1, max_length=EXTENSION_REASON_MAX, description="why, as told to the person (no personal data)"
    )


class HoldRequest(BaseModel):
    scope: HoldScope
    case_ref: str = Field(min_length=1)
    waba_id: str | None = None
    phone_number_id: str | None = None
    contact: str | None = None
    group_id: str | None = Field(default=None, description="the Cloud API group id, for a group hold")


class ExportRequest(BaseModel):
    contact: str = Field(min_length=1)
    phone_number_id: str | None = None
    reason: str = Field(min_length=3)
    request_ref: str | None = None


class RetentionRunRequest(BaseModel):
    dry_run: bool = True


def create_admin_app(
    settings: RetentionSettings,
    open_access: Callable[[], Awaitable[ArchiveAccess]],
    *,
    registry: CollectorRegistry | None = None,
    background: Callable[[Actions], Coroutine[Any, Any, None]] | None = None,
) -> FastAPI:
    registry = registry or CollectorRegistry()
    metrics = RetentionMetrics(registry)
    state: dict[str, Actions] = {}
    tokens = {name: (t.token.get_secret_value().encode(), t.role) for name, t in settings.admin_tokens.items()}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        access = await open_access()
        actions = state["actions"] = Actions(access, metrics)
        task = asyncio.create_task(background(actions)) if background else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await access.close()

    app = FastAPI(title="wa-archive retention admin API", version="1", lifespan=lifespan)

    async def refused(_request: Request, exc: Exception) -> Response:
        status = next(code for kind, code in ERROR_STATUS.items() if isinstance(exc, kind))
        return JSONResponse({"detail": str(exc)}, status_code=status)

    for error in ERROR_STATUS:
        app.add_exception_handler(error, refused)

    def ready_actions() -> Actions:
        found = state.get("actions")
        if found is None:
            raise HTTPException(503, "not ready")
        return found

    def authenticate(request: Request) -> Operator:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        offered = header[len("Bearer ") :].encode()
        found: Operator | None = None
        for name, (secret, role) in tokens.items():
            if hmac.compare_digest(offered, secret):
                found = Operator(name, role)
        if found is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        return found

    def allowed(action: ActionName) -> Callable[[Operator], Operator]:
        """The caller, refused early (the action checks again) so that a wrong role is 403 whatever the body."""

        def check(operator: Annotated[Operator, Depends(authenticate)]) -> Operator:
            authorize(operator, action)
            return operator

        return check

    Run = Annotated[Actions, Depends(ready_actions)]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ready = "actions" in state
        return Response("ready" if ready else "not ready", status_code=200 if ready else 503, media_type="text/plain")

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/messages", include_in_schema=False)
    async def messages_in_the_url() -> Response:
        # Refused before anything is read: a person's number and a reason in a URL end up in access logs and
        # proxies. The clear error tells a client written for an earlier version where they go now.
        detail = "the person and the reason go in the body: POST /v1/messages"
        return JSONResponse({"detail": detail}, status_code=405, headers={"Allow": "POST"})

    @app.post(
        "/v1/messages",
        summary="A person's conversation, decrypted, with the person and reason in the body",
        response_model=dict[str, Any],
        response_class=RecordsJSON,
    )
    async def messages_by_body(
        operator: Annotated[Operator, Depends(allowed("messages"))], actions: Run, body: MessagesRequest
    ) -> RecordsJSON:
        # In the body, not the URL: the person's number and the reason stay out of access logs and proxies.
        return RecordsJSON(conversation_json(await actions.messages(operator, **body.model_dump())))

    @app.post(
        "/v1/groups/messages",
        summary="A group's timeline: every participant's messages, joins, leaves and updates (audited; a reason)",
        response_model=dict[str, Any],
        response_class=RecordsJSON,
    )
    async def group_messages(
        operator: Annotated[Operator, Depends(allowed("group.messages"))], actions: Run, body: GroupMessagesRequest
    ) -> RecordsJSON:
        # In the body: the group id names people's conversation and stays out of access logs, like the reason.
        return RecordsJSON((await actions.group_messages(operator, **body.model_dump())).to_json())

    @app.get(
        "/v1/search",
        summary="Search the index metadata (nothing is decrypted)",
        description="Without a person or keywords, which would be in the URL: POST /v1/search takes both.",
    )
    async def search(
        operator: Annotated[Operator, Depends(allowed("search"))],
        actions: Run,
        request: Request,
        phone_number_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
        type: str | None = None,
        deleted_only: bool = False,
        edited_only: bool = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[dict[str, Any]]:
        if {"contact", "keywords"} & request.query_params.keys():
            raise HTTPException(400, "a person or keywords go in the body: POST /v1/search")
        query = SearchFilter(phone_number_id, None, since, until, kind, type, deleted_only, edited_only, limit)
        return [hit.to_json() for hit in await actions.search(operator, query)]

    @app.post("/v1/search", summary="Search the index metadata, keywords included, with the filter in the body")
    async def search_by_body(
        operator: Annotated[Operator, Depends(allowed("search"))], actions: Run, body: SearchRequest
    ) -> list[dict[str, Any]]:
        # In the body, not the URL: message words and a person's number stay out of access logs.
        return [hit.to_json() for hit in await actions.search(operator, SearchFilter(**body.model_dump()))]

    @app.post("/v1/erasures", summary="Erase a person (GDPR Art. 17): crypto-shredding, then deletion")
    async def erase(
        operator: Annotated[Operator, Depends(allowed("erase"))], actions: Run, body: ErasureRequest
    ) -> dict[str, Any]:
        return (await actions.erase(operator, **body.model_dump())).proof()

    @app.get("/v1/erasures", summary="Erasure requests and their deadlines")
    async def erasures(
        operator: Annotated[Operator, Depends(allowed("erasures"))], actions: Run
    ) -> list[dict[str, Any]]:
        return [request.to_json() for request in await actions.erasures(operator)]

    @app.post("/v1/erasures/{request_ref}/refuse", summary="Refuse an open erasure request on its legal ground")
    async def erasure_refuse(
        operator: Annotated[Operator, Depends(allowed("erasure.refuse"))],
        actions: Run,
        request_ref: str,
        body: RefusalRequest,
    ) -> dict[str, Any]:
        return (await actions.refuse_erasure(operator, request_ref, ground=body.ground)).to_json()

    @app.post("/v1/erasures/{request_ref}/extend", summary="Extend an erasure request's deadline by two months")
    async def erasure_extend(
        operator: Annotated[Operator, Depends(allowed("erasure.extend"))],
        actions: Run,
        request_ref: str,
        body: ExtensionRequest,
    ) -> dict[str, Any]:
        return (await actions.extend_erasure(operator, request_ref, reason=body.reason)).to_json()

    @app.post("/v1/holds", summary="Create a legal hold")
    async def hold_create(
        operator: Annotated[Operator, Depends(allowed("hold.create"))], actions: Run, body: HoldRequest
    ) -> dict[str, object]:
        return (await actions.create_hold(operator, **body.model_dump())).to_json()

    @app.get("/v1/holds", summary="Legal holds")
    async def holds(
        operator: Annotated[Operator, Depends(allowed("hold.list"))], actions: Run, include_released: bool = False
    ) -> list[dict[str, object]]:
        return [h.to_json() for h in await actions.holds(operator, include_released=include_released)]

    @app.post("/v1/holds/{hold_id}/release", summary="Release a legal hold")
    async def hold_release(
        operator: Annotated[Operator, Depends(allowed("hold.release"))], actions: Run, hold_id: str
    ) -> dict[str, object]:
        return (await actions.release_hold(operator, hold_id)).to_json()

    @app.post(
        "/v1/exports",
        summary="Subject access / portability export (GDPR Art. 15/20), JSON",
        response_model=dict[str, Any],
        response_class=RecordsJSON,
    )
    async def export(
        operator: Annotated[Operator, Depends(allowed("export"))], actions: Run, body: ExportRequest
    ) -> RecordsJSON:
        return RecordsJSON((await actions.export(operator, **body.model_dump())).document())

    @app.post("/v1/retention/run", summary="Run retention now (dry run by default)")
    async def run(
        operator: Annotated[Operator, Depends(allowed("retention.run"))], actions: Run, body: RetentionRunRequest
    ) -> dict[str, object]:
        return (await actions.run_retention(operator, dry_run=body.dry_run)).to_json()

    @app.get("/v1/audit", summary="The audit log (pseudonyms only)")
    async def audit(
        operator: Annotated[Operator, Depends(allowed("audit"))],
        actions: Run,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in await actions.audit_log(operator, limit=limit)]

    app.state.metrics = metrics
    return app
