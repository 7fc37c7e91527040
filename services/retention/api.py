"""The retention admin API (``/v1/``), bearer tokens with roles; OpenAPI at ``/openapi.json`` (with a token) and on
the ops port.

A thin adapter over :mod:`services.actions.layer`: it authenticates the token, translates the request into an
action's arguments and its result or error into JSON. ``reader`` tokens may search and retrieve (with a reason,
audited); ``dpo`` tokens may also erase, hold, export and run retention. The token's name is the actor written to
the audit log.

Refusals come before the request body is read (:class:`AdminGate`, a pure ASGI middleware in front of FastAPI,
which would otherwise read and parse the body before running any dependency): a body announced over
``max_body_bytes`` is 413 first, whoever sends it; then a missing or unknown token is 401 and a known token without
the role the route's action needs is 403; a chunked body is stopped at the limit (413) as it is read. Each is
counted (``wa_retention_api_refusals_total``) and logged, without the token. Only ``/healthz`` and ``/readyz``
answer without a token; ``/metrics`` is on the ops port (``ops_port``), as the console's.
"""

import asyncio
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Final

import orjson
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from prometheus_client import CollectorRegistry
from pydantic import BaseModel, Field
from starlette.routing import Match

from services.actions.access import ArchiveAccess
from services.actions.layer import (
    ActionName,
    Actions,
    Operator,
    authorize,
)
from services.core.crypto import UnknownKek
from services.core.http import ASGIApp, BodyLimit, Receive, Scope, Send, refuse
from services.core.ops_http import HEALTHZ, PROBE_PATHS, READYZ, OpsServer, ops_app, probe
from services.core.plaintext import json_bytes
from services.core.refusals import ActionRefused, Forbidden
from services.core.vocabulary import PSEUDONYM_PATTERN, EventKind, HoldScope, Role
from services.governance.erasure import EXTENSION_REASON_MAX
from services.governance.grounds import RefusalGround
from services.governance.metrics import RetentionMetrics
from services.retention.settings import RetentionSettings
from services.review.conversation import Conversation
from services.review.search import SearchFilter

log = logging.getLogger("wa_archive.retention.api")

# Answered without a token: the probes (also on the ops port, with /metrics).
OPEN_PATHS: Final = PROBE_PATHS


def requires(action: ActionName) -> dict[str, Any]:
    """Route options of a route that performs ``action``: :class:`AdminGate` refuses a token whose role does not
    allow it before the body is read (the action checks again); OpenAPI shows it as ``x-action``."""
    return {"openapi_extra": {"x-action": action}}


class AdminGate:
    """Pure ASGI middleware in front of the admin API: who is calling, and may they, decided from the headers.

    Every path but :data:`OPEN_PATHS` needs a known bearer token (else 401); a route declared with
    :func:`requires` also needs a role that allows its action (else 403). Both are answered before the request
    body is read, with ``Connection: close``. The caller is put in ``scope["state"]["operator"]`` for
    :func:`operator_of`.
    """

    def __init__(
        self,
        app: ASGIApp,
        routes: FastAPI,
        tokens: Mapping[str, tuple[bytes, Role]],
        on_refused: Callable[[int, str], None],
    ) -> None:
        self.app = app
        self.routes = routes
        self.tokens = tokens
        self.on_refused = on_refused

    def caller(self, scope: Scope) -> Operator | None:
        header = next((bytes(v) for k, v in scope["headers"] if k == b"authorization"), b"")
        if not header.startswith(b"Bearer "):
            return None
        offered = header[len(b"Bearer ") :]
        found: Operator | None = None
        # Every token is compared, so the time taken does not tell which one nearly matched.
        for name, (secret, role) in self.tokens.items():
            if hmac.compare_digest(offered, secret):
                found = Operator(name, role)
        return found

    def action_of(self, scope: Scope) -> ActionName | None:
        for route in self.routes.router.routes:
            if isinstance(route, APIRoute) and route.matches(scope)[0] == Match.FULL:
                action: ActionName | None = (route.openapi_extra or {}).get("x-action")
                return action
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        operator = self.caller(scope)
        if operator is None:
            self.on_refused(401, "token")
            await refuse(send, 401, "missing or unknown bearer token", {"www-authenticate": "Bearer"})
            return
        action = self.action_of(scope)
        if action is not None:
            try:
                authorize(operator, action)
            except Forbidden as exc:
                self.on_refused(403, "role")
                await refuse(send, 403, str(exc))
                return
        scope.setdefault("state", {})["operator"] = operator
        await self.app(scope, receive, send)


def operator_of(request: Request) -> Operator:
    """The caller :class:`AdminGate` authenticated (and authorised for the route's action)."""
    operator: Operator | None = request.scope.get("state", {}).get("operator")
    if operator is None:  # only without the gate, which create_admin_app always installs
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    return operator


# How each refusal of the action layer is answered.
# Errors of the system that are not refusals (those carry their status: services/core/refusals.py). A person's key
# wrapped by a KEK this service was not given (removed from the settings too early): the records are fine, the
# configuration is to fix. The message names the KEK id only.
SYSTEM_ERROR_STATUS: dict[type[Exception], int] = {UnknownKek: 503}


# The request bodies' fields are the actions' keyword arguments.
class ErasureRequestBody(BaseModel):
    contact: str = Field(min_length=1, description="wa_id or business-scoped user id of the person")
    phone_number_id: str | None = Field(default=None, description="limit to one business number (default: all)")
    request_ref: str = Field(min_length=1, description="your reference of the data subject's request")


class MessagesRequest(BaseModel):
    contact: str | None = Field(default=None, min_length=1, description="wa_id or business-scoped user id")
    subject_ref: str | None = Field(
        default=None, pattern=PSEUDONYM_PATTERN, description="or the person's pseudonym, as a search hit gives it"
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
    kind: EventKind | None = None
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
    serve_ops: bool = True,
) -> FastAPI:
    """The admin API. With ``serve_ops`` its lifespan also serves ``/healthz``, ``/readyz``, ``/metrics``,
    ``/openapi.json`` and ``/docs`` on ``settings.ops_port`` (0: any free port, then ``app.state.ops_port``)."""
    registry = registry or CollectorRegistry()
    metrics = RetentionMetrics(registry)
    state: dict[str, Actions] = {}
    tokens = {name: (t.token.get_secret_value().encode(), t.role) for name, t in settings.admin_tokens.items()}

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        access = await open_access()
        actions = state["actions"] = Actions(access, metrics)
        task = asyncio.create_task(background(actions)) if background else None
        documents = {
            "/openapi.json": ("application/json", orjson.dumps(app.openapi())),
            "/docs": (
                "text/html; charset=utf-8",
                bytes(get_swagger_ui_html(openapi_url="/openapi.json", title=app.title).body),
            ),
        }
        ops = OpsServer(ops_app(registry, lambda: "actions" in state, documents), settings.host, settings.ops_port)
        if serve_ops:
            await ops.start()
            app.state.ops_port = ops.port
        try:
            yield
        finally:
            if serve_ops:
                await ops.stop()
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await access.close()

    app = FastAPI(title="wa-archive retention admin API", version="1", lifespan=lifespan)

    def refused_request(status: int, reason: str) -> None:
        metrics.api_refusals.labels(str(status), reason).inc()
        log.warning("admin API request refused: %d (%s)", status, reason)

    # Outermost last. A body announced over the limit is 413 at once, whoever sends it; then the gate decides 401
    # and 403 from the headers; only then does FastAPI read the body, which BodyLimit still counts.
    app.add_middleware(AdminGate, routes=app, tokens=tokens, on_refused=refused_request)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes, on_refused=lambda: refused_request(413, "body"))

    async def refused(_request: Request, exc: Exception) -> Response:
        status = exc.http_status if isinstance(exc, ActionRefused) else SYSTEM_ERROR_STATUS[type(exc)]
        return JSONResponse({"detail": str(exc)}, status_code=status)

    errors: list[type[Exception]] = [ActionRefused, *SYSTEM_ERROR_STATUS]
    for error in errors:
        app.add_exception_handler(error, refused)

    def ready_actions() -> Actions:
        found = state.get("actions")
        if found is None:
            raise HTTPException(503, "not ready")
        return found

    Run = Annotated[Actions, Depends(ready_actions)]
    Caller = Annotated[Operator, Depends(operator_of)]

    @app.get(HEALTHZ, include_in_schema=False)
    async def healthz() -> Response:
        status, body = probe(HEALTHZ, lambda: True)
        return Response(body, status_code=status, media_type="text/plain")

    @app.get(READYZ, include_in_schema=False)
    async def readyz() -> Response:
        status, body = probe(READYZ, lambda: "actions" in state)
        return Response(body, status_code=status, media_type="text/plain")

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
        **requires("messages"),
    )
    async def messages_by_body(operator: Caller, actions: Run, body: MessagesRequest) -> RecordsJSON:
        # In the body, not the URL: the person's number and the reason stay out of access logs and proxies.
        return RecordsJSON(conversation_json(await actions.messages(operator, **body.model_dump())))

    @app.post(
        "/v1/groups/messages",
        summary="A group's timeline: every participant's messages, joins, leaves and updates (audited; a reason)",
        response_model=dict[str, Any],
        response_class=RecordsJSON,
        **requires("group.messages"),
    )
    async def group_messages(operator: Caller, actions: Run, body: GroupMessagesRequest) -> RecordsJSON:
        # In the body: the group id names people's conversation and stays out of access logs, like the reason.
        return RecordsJSON((await actions.group_messages(operator, **body.model_dump())).to_json())

    @app.get(
        "/v1/search",
        summary="Search the index metadata (nothing is decrypted)",
        description="Without a person or keywords, which would be in the URL: POST /v1/search takes both.",
        **requires("search"),
    )
    async def search(
        operator: Caller,
        actions: Run,
        request: Request,
        phone_number_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: EventKind | None = None,
        type: str | None = None,
        deleted_only: bool = False,
        edited_only: bool = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[dict[str, Any]]:
        if {"contact", "keywords"} & request.query_params.keys():
            raise HTTPException(400, "a person or keywords go in the body: POST /v1/search")
        query = SearchFilter(
            phone_number_id=phone_number_id,
            contact=None,
            since=since,
            until=until,
            kind=kind,
            type=type,
            deleted_only=deleted_only,
            edited_only=edited_only,
            limit=limit,
        )
        return [hit.to_json() for hit in await actions.search(operator, query)]

    @app.post(
        "/v1/search",
        summary="Search the index metadata, keywords included, with the filter in the body",
        **requires("search"),
    )
    async def search_by_body(operator: Caller, actions: Run, body: SearchRequest) -> list[dict[str, Any]]:
        # In the body, not the URL: message words and a person's number stay out of access logs.
        return [hit.to_json() for hit in await actions.search(operator, SearchFilter(**body.model_dump()))]

    @app.post(
        "/v1/erasures", summary="Erase a person (GDPR Art. 17): crypto-shredding, then deletion", **requires("erase")
    )
    async def erase(operator: Caller, actions: Run, body: ErasureRequestBody) -> dict[str, Any]:
        return (await actions.erase(operator, **body.model_dump())).proof()

    @app.get("/v1/erasures", summary="Erasure requests and their deadlines", **requires("erasures"))
    async def erasures(operator: Caller, actions: Run) -> list[dict[str, Any]]:
        return [request.to_json() for request in await actions.erasures(operator)]

    @app.post(
        "/v1/erasures/{request_ref}/refuse",
        summary="Refuse an open erasure request on its legal ground",
        **requires("erasure.refuse"),
    )
    async def erasure_refuse(
        operator: Caller,
        actions: Run,
        request_ref: str,
        body: RefusalRequest,
    ) -> dict[str, Any]:
        return (await actions.refuse_erasure(operator, request_ref, ground=body.ground)).to_json()

    @app.post(
        "/v1/erasures/{request_ref}/extend",
        summary="Extend an erasure request's deadline by two months",
        **requires("erasure.extend"),
    )
    async def erasure_extend(
        operator: Caller,
        actions: Run,
        request_ref: str,
        body: ExtensionRequest,
    ) -> dict[str, Any]:
        return (await actions.extend_erasure(operator, request_ref, reason=body.reason)).to_json()

    @app.post("/v1/holds", summary="Create a legal hold", **requires("hold.create"))
    async def hold_create(operator: Caller, actions: Run, body: HoldRequest) -> dict[str, object]:
        return (await actions.create_hold(operator, **body.model_dump())).to_json()

    @app.get("/v1/holds", summary="Legal holds", **requires("hold.list"))
    async def holds(operator: Caller, actions: Run, include_released: bool = False) -> list[dict[str, object]]:
        return [h.to_json() for h in await actions.holds(operator, include_released=include_released)]

    @app.post("/v1/holds/{hold_id}/release", summary="Release a legal hold", **requires("hold.release"))
    async def hold_release(operator: Caller, actions: Run, hold_id: str) -> dict[str, object]:
        return (await actions.release_hold(operator, hold_id)).to_json()

    @app.post(
        "/v1/exports",
        summary="Subject access / portability export (GDPR Art. 15/20), JSON",
        response_model=dict[str, Any],
        response_class=RecordsJSON,
        **requires("export"),
    )
    async def export(operator: Caller, actions: Run, body: ExportRequest) -> RecordsJSON:
        return RecordsJSON((await actions.export(operator, **body.model_dump())).document())

    @app.post("/v1/retention/run", summary="Run retention now (dry run by default)", **requires("retention.run"))
    async def run(operator: Caller, actions: Run, body: RetentionRunRequest) -> dict[str, object]:
        return (await actions.run_retention(operator, dry_run=body.dry_run)).to_json()

    @app.get("/v1/audit", summary="The audit log (pseudonyms only)", **requires("audit"))
    async def audit(
        operator: Caller,
        actions: Run,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
    ) -> list[dict[str, Any]]:
        return [entry.to_json() for entry in await actions.audit_log(operator, limit=limit)]

    app.state.metrics = metrics
    return app
