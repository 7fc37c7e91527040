"""The retention admin API (``/v1/``), bearer tokens with roles; OpenAPI at ``/openapi.json``.

``reader`` tokens may search and retrieve (with a reason, audited); ``dpo`` tokens may also erase, hold,
export and run retention. A missing or unknown token is 401; a known token without the role is 403. The
token's name is the actor written to the audit log.
"""

import asyncio
import contextlib
import hmac
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, Field

from services.core.conversation import load_conversation
from services.core.search import SearchFilter, search_index
from services.core.subjects import ReasonRequired, recent_audit
from services.retention.access import ArchiveAccess
from services.retention.erasure import erase_subject
from services.retention.export import export_document
from services.retention.holds import HoldError, create_hold, list_holds, release_hold
from services.retention.metrics import RetentionMetrics
from services.retention.run import retention_run
from services.retention.settings import RetentionSettings

ROLE_RANK = {"reader": 1, "dpo": 2}


def jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """A database row as JSON-ready values (timestamps as ISO 8601)."""
    return {key: value.isoformat() if isinstance(value, datetime) else value for key, value in row.items()}


class Actor(BaseModel):
    name: str
    role: str


class ErasureRequest(BaseModel):
    contact: str = Field(min_length=1, description="wa_id or business-scoped user id of the person")
    phone_number_id: str | None = Field(default=None, description="limit to one business number (default: all)")
    request_ref: str = Field(min_length=1, description="your reference of the data subject's request")


class HoldRequest(BaseModel):
    scope: Literal["waba", "phone_number", "contact", "conversation"]
    case_ref: str = Field(min_length=1)
    waba_id: str | None = None
    phone_number_id: str | None = None
    contact: str | None = None


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
    background: Callable[[ArchiveAccess, RetentionMetrics], Coroutine[Any, Any, None]] | None = None,
) -> FastAPI:
    registry = registry or CollectorRegistry()
    metrics = RetentionMetrics(registry)
    state: dict[str, Any] = {}
    tokens = {name: (t.token.get_secret_value().encode(), t.role) for name, t in settings.admin_tokens.items()}

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        access = await open_access()
        state["access"] = access
        task = asyncio.create_task(background(access, metrics)) if background else None
        try:
            yield
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await access.close()

    app = FastAPI(title="wa-archive retention admin API", version="1", lifespan=lifespan)

    def access() -> ArchiveAccess:
        found: ArchiveAccess | None = state.get("access")
        if found is None:
            raise HTTPException(503, "not ready")
        return found

    def authenticate(request: Request) -> Actor:
        header = request.headers.get("authorization", "")
        if not header.startswith("Bearer "):
            raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
        offered = header[len("Bearer ") :].encode()
        found: Actor | None = None
        for name, (secret, role) in tokens.items():
            if hmac.compare_digest(offered, secret):
                found = Actor(name=name, role=role)
        if found is None:
            raise HTTPException(401, "unknown token", headers={"WWW-Authenticate": "Bearer"})
        return found

    def role(required: str) -> Callable[[Actor], Actor]:
        def check(actor: Annotated[Actor, Depends(authenticate)]) -> Actor:
            if ROLE_RANK[actor.role] < ROLE_RANK[required]:
                raise HTTPException(403, f"the {required!r} role is required")
            return actor

        return check

    Reader = Annotated[Actor, Depends(role("reader"))]
    Dpo = Annotated[Actor, Depends(role("dpo"))]
    Access = Annotated[ArchiveAccess, Depends(access)]

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> Response:
        return Response("ok", media_type="text/plain")

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> Response:
        ready = "access" in state
        return Response("ready" if ready else "not ready", status_code=200 if ready else 503, media_type="text/plain")

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/messages", summary="A person's conversation, decrypted (audited; a reason is required)")
    async def messages(
        actor: Reader,
        archive: Access,
        contact: str,
        reason: Annotated[str | None, Query()] = None,
        phone_number_id: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, Any]:
        try:
            conversation = await load_conversation(
                archive.pool,
                archive.reader,
                archive.pepper,
                contact=contact,
                phone_number_id=phone_number_id,
                actor=actor.name,
                reason=reason,
                since=since,
                until=until,
            )
        except ReasonRequired as exc:
            raise HTTPException(400, str(exc)) from None
        metrics.decryptions.labels("retrieval").inc()
        return {
            "messages": [m.to_json() for m in conversation.messages],
            "shredded_records": conversation.shredded_records,
        }

    @app.get("/v1/search", summary="Search the index metadata (nothing is decrypted)")
    async def search(
        _actor: Reader,
        archive: Access,
        phone_number_id: str | None = None,
        contact: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        kind: str | None = None,
        type: str | None = None,
        deleted_only: bool = False,
        edited_only: bool = False,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[dict[str, Any]]:
        rows = await search_index(
            archive.pool,
            archive.pepper,
            SearchFilter(phone_number_id, contact, since, until, kind, type, deleted_only, edited_only, limit),
        )
        return [jsonable(row) for row in rows]

    @app.post("/v1/erasures", summary="Erase a person (GDPR Art. 17): crypto-shredding, then deletion")
    async def erase(actor: Dpo, archive: Access, body: ErasureRequest) -> dict[str, Any]:
        outcome = await erase_subject(
            archive.pool,
            archive.keyring,
            archive.bucket,
            archive.pepper,
            contact=body.contact,
            phone_number_id=body.phone_number_id,
            request_ref=body.request_ref,
            actor=actor.name,
        )
        metrics.erasures.labels("completed" if outcome.status == "completed" else "blocked_by_hold").inc()
        metrics.keys_shredded.inc(len(outcome.keys_destroyed))
        return outcome.proof()

    @app.get("/v1/erasures", summary="Erasure requests and their deadlines")
    async def erasures(_actor: Dpo, archive: Access) -> list[dict[str, Any]]:
        rows = await archive.pool.fetch(
            "SELECT request_ref, status, received_at, deadline_at, completed_at, cardinality(blocked_by) AS holds "
            "FROM erasure_requests ORDER BY received_at"
        )
        return [jsonable(dict(row)) for row in rows]

    @app.post("/v1/holds", summary="Create a legal hold")
    async def hold_create(actor: Dpo, archive: Access, body: HoldRequest) -> dict[str, object]:
        async with archive.pool.acquire() as conn:
            try:
                hold = await create_hold(
                    conn,
                    archive.pepper,
                    scope=body.scope,
                    case_ref=body.case_ref,
                    actor=actor.name,
                    waba_id=body.waba_id,
                    phone_number_id=body.phone_number_id,
                    contact=body.contact,
                )
            except HoldError as exc:
                raise HTTPException(400, str(exc)) from None
        return hold.to_json()

    @app.get("/v1/holds", summary="Legal holds")
    async def holds(_actor: Dpo, archive: Access, include_released: bool = False) -> list[dict[str, object]]:
        async with archive.pool.acquire() as conn:
            return [h.to_json() for h in await list_holds(conn, include_released=include_released)]

    @app.post("/v1/holds/{hold_id}/release", summary="Release a legal hold")
    async def hold_release(actor: Dpo, archive: Access, hold_id: str) -> dict[str, object]:
        async with archive.pool.acquire() as conn:
            hold = await release_hold(conn, hold_id, actor=actor.name)
        if hold is None:
            raise HTTPException(404, "no active hold with this id")
        return hold.to_json()

    @app.post("/v1/exports", summary="Subject access / portability export (GDPR Art. 15/20), JSON")
    async def export(actor: Dpo, archive: Access, body: ExportRequest) -> dict[str, Any]:
        conversation = await load_conversation(
            archive.pool,
            archive.reader,
            archive.pepper,
            contact=body.contact,
            phone_number_id=body.phone_number_id,
            actor=actor.name,
            reason=body.reason,
            purpose="export",
        )
        metrics.decryptions.labels("export").inc()
        metrics.exports.inc()
        return export_document(conversation.messages, request_ref=body.request_ref, generated_at=datetime.now(UTC))

    @app.post("/v1/retention/run", summary="Run retention now (dry run by default)")
    async def run(actor: Dpo, archive: Access, body: RetentionRunRequest) -> dict[str, object]:
        report = await retention_run(archive.pool, archive.bucket, dry_run=body.dry_run)
        metrics.runs.labels("dry_run" if body.dry_run else "success").inc()
        if not body.dry_run:
            metrics.objects_deleted.inc(report.objects_deleted)
            metrics.last_run_success.set(datetime.now(UTC).timestamp())
        del actor
        return report.to_json()

    @app.get("/v1/audit", summary="The audit log (pseudonyms only)")
    async def audit(
        _actor: Dpo, archive: Access, limit: Annotated[int, Query(ge=1, le=10_000)] = 100
    ) -> list[dict[str, Any]]:
        return [jsonable(row) for row in await recent_audit(archive.pool, limit)]

    app.state.metrics = metrics
    return app
