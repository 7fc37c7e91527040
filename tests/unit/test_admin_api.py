"""The admin API's routers, models and OpenAPI document, without a server: routers mounted on a bare app with their
dependencies replaced (``dependency_overrides``), the actions answering fixed domain objects.

What is proved: every operation documents its answer's schema and its errors; every answer is the bytes it was
before the response models (the domain's ``to_json()`` as FastAPI wrote a returned dict), so clients see no change;
the models fit every value the domain can produce (hypothesis); a router works mounted alone.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any, cast, get_args

import httpx
import orjson
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, SecretStr, TypeAdapter

from services.actions.access import ArchiveAccess
from services.actions.layer import REQUIRED_ROLE, Actions, ApprovalRequest, HoldRelease, Operator
from services.core.audit import AuditEntry
from services.core.plaintext import json_bytes
from services.core.refusals import ActionRefused, NotFound
from services.core.settings import KeySettings, PostgresSettings, S3Settings
from services.core.vocabulary import EVENT_KINDS, Direction, EventKind, HoldScope
from services.evidence.jobs import ExportJob, JobFile
from services.governance.erasure import ErasureOutcome, ErasureStatus
from services.governance.erasure_requests import ErasureRequest
from services.governance.grounds import RefusalGround
from services.governance.holds import Hold
from services.governance.retention_run import RetentionReport
from services.retention.api import create_admin_app
from services.retention.api.dependencies import is_ready, operator_of, ready_actions
from services.retention.api.factory import refused
from services.retention.api.responses import (
    AuditEntryView,
    ConversationAnswer,
    ErasureProof,
    ErasureRequestView,
    ErrorBody,
    ExportAccepted,
    ExportJobView,
    GroupTimelineAnswer,
    HoldReleaseView,
    HoldView,
    IndexHitView,
    RetentionReportView,
)
from services.retention.api.routers.exports import exports_router
from services.retention.api.routers.holds import holds_router
from services.retention.api.routers.search import search_router
from services.retention.api.routers.setup import ROUTERS
from services.retention.settings import AdminToken, RetentionSettings
from services.review.assembly import Change, ConversationMessage
from services.review.conversation import Conversation, GroupTimeline
from services.review.search import IndexHit

KEY = base64.b64encode(bytes(32)).decode()
TOKEN = base64.urlsafe_b64encode(bytes(range(7, 39))).decode()  # 256 bits, no repeats
READER_TOKEN = base64.urlsafe_b64encode(bytes(range(101, 133))).decode()
DPO = Operator("test-dpo", "dpo")
AT = datetime(2026, 12, 6, 15, 4, 5, 678901, tzinfo=UTC)
REF = "ab" * 32
HOLD_ID = "4890c0fa-557d-4476-b583-7035fcea7859"

HOLD = Hold(
    hold_id=HOLD_ID,
    case_ref="CASE-é/7",
    scope="conversation",
    waba_id=None,
    phone_number_id="15550001111",
    subject_count=2,
    created_by="test-dpo",
    created_at=AT,
    released_at=None,
)
# A four-eyes request, as the action layer returns it (expiring long after AT: pending).
ASKED = ApprovalRequest(
    request_id="0b6a1f53-7f0e-4c1e-9d55-2f1e0a4b8c01",
    kind="hold.release",
    target={"hold_id": "2f1e0a4b-8c01-4c1e-9d55-0b6a1f537f0e"},
    subject_ref=None,
    reason="settled",
    requested_by="dpo",
    requested_at=AT,
    expires_at=AT.replace(year=2100),
    status="pending",
    decided_by=None,
    decided_at=None,
    decision=None,
    outcome=None,
)
RELEASE = HoldRelease(
    replace(HOLD, released_at=AT),
    [
        ErasureOutcome(request_ref="DSR-1", status="completed", subject_refs=[REF]),
        ErasureOutcome(request_ref="DSR-2", status="blocked", subject_refs=[REF], blocked_by=["C"]),
    ],
)
REQUEST = ErasureRequest(
    request_ref="DSR-1",
    status="extended",
    received_at=AT,
    deadline_at=AT,
    completed_at=None,
    holds=1,
    extended_at=AT,
    extension_reason="délai « légal »",
    refusal_ground=None,
    refused_at=None,
)
PROOF = ErasureOutcome(
    request_ref="DSR-1",
    status="completed",
    subject_refs=[REF],
    keys_destroyed=["k" * 16],
    key_destroyed_at=AT.isoformat(),
    objects_deleted=3,
)
REPORT = RetentionReport(
    run_id="run-1",
    dry_run=False,
    started_at=AT,
    candidates=["a", "b"],
    events_by_class={"standard": 7},
    erasures={"completed": 1},
)
AUDIT = AuditEntry(
    audit_id=4555,
    at=AT,
    actor="test-dpo",
    action="search",
    reason=None,
    subject_ref=REF,
    record_count=2,
    details='{"limit": 1, "kind": "message"}',
)
HIT = IndexHit(
    event_id="0" * 32,
    kind="message",
    type="text",
    phone_number_id="15550001111",
    subject_ref=REF,
    event_time=AT,
    received_at=AT,
    retention_class="standard",
    expires_at=None,
    deleted=False,
    edited=True,
)
MESSAGE = ConversationMessage(
    event_id="1" * 32,
    message_id="wamid.X",
    kind="message",
    type="text",
    direction="inbound",
    timestamp=1_765_000_000,
    received_at="2026-12-06T15:04:05.678Z",
    payload={"text": {"body": "🙂 ünïcode"}, "deep": [[[]]]},
    statuses=[("read", 1_765_000_100)],
    edits=[Change("2" * 32, "edit", "customer", 1_765_000_050, {"text": "x"})],
    deletion=Change("3" * 32, "revoke", "customer", None, None),
    media={"status": "archived", "mime_type": "image/jpeg"},
)
UNREADABLE = ConversationMessage(
    event_id="4" * 32,
    message_id=None,
    kind="message",
    type=None,
    direction="inbound",
    timestamp=None,
    received_at="t",
    payload=None,
    unreadable="tampered",
)


def retention_settings() -> RetentionSettings:
    return RetentionSettings(
        s3=S3Settings(endpoint_url="http://s3.example:8333", bucket="archive", prefix="v1"),
        pg=PostgresSettings(dsn=SecretStr("postgresql://wa_retention:r@db/wa_archive")),
        keys=KeySettings(keks={"k1": SecretStr(KEY)}, current_kek_id="k1", pepper=SecretStr(KEY)),
        admin_tokens={
            "test-dpo": AdminToken(token=SecretStr(TOKEN), role="dpo"),
            "test-reader": AdminToken(token=SecretStr(READER_TOKEN), role="reader"),
        },
    )


class FixedActions:
    """Stands for :class:`Actions`: each action answers what it was given (or raises it), and records its call."""

    def __init__(self, **answers: object) -> None:
        self.answers = answers
        self.calls: list[tuple[str, Operator, dict[str, Any]]] = []
        self.access = SimpleNamespace(pepper=b"p" * 32)  # what signs the export download links

    def __getattr__(self, name: str) -> Callable[..., Awaitable[object]]:
        async def action(operator: Operator, *args: object, **kwargs: object) -> object:
            self.calls.append((name, operator, {"args": args, **kwargs}))
            answer = self.answers[name]
            if isinstance(answer, Exception):
                raise answer
            return answer

        return action


def mounted(actions: FixedActions, *routers: Any) -> httpx.AsyncClient:
    """A bare app with only ``routers``, the refusal handler, and the two dependencies replaced."""
    app = FastAPI()
    for router in routers:
        app.include_router(router)
    app.add_exception_handler(ActionRefused, refused)
    app.dependency_overrides[ready_actions] = lambda: cast(Actions, actions)
    app.dependency_overrides[operator_of] = lambda: DPO
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api")


def before(content: object) -> bytes:
    """The bytes a route answered before it had a response model: FastAPI took ``dict[str, Any]`` (or a list of it)
    from its return annotation and wrote the domain's ``to_json()`` with pydantic's JSON serialiser."""
    return TypeAdapter(Any).dump_json(content)


# ---------------------------------------------------------------- the OpenAPI document


def resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


DOCUMENT = create_admin_app(retention_settings(), cast(Any, None)).openapi()
OPERATIONS = [(m.upper(), p, op) for p, item in DOCUMENT["paths"].items() for m, op in item.items()]


def test_the_document_lists_every_route_of_the_api() -> None:
    assert {f"{m} {p}" for m, p, _ in OPERATIONS} == {
        "POST /v1/messages",
        "POST /v1/groups/messages",
        "POST /v1/break-glass",
        "GET /v1/search",
        "POST /v1/search",
        "POST /v1/erasures",
        "GET /v1/erasures",
        "POST /v1/erasures/{request_ref}/refuse",
        "POST /v1/erasures/{request_ref}/extend",
        "POST /v1/holds",
        "GET /v1/holds",
        "POST /v1/holds/{hold_id}/release",
        "POST /v1/exports",
        "POST /v1/exports/search",
        "GET /v1/exports",
        "GET /v1/exports/{job_id}",
        "GET /v1/exports/{job_id}/files/{name}",
        "GET /v1/approvals",
        "GET /v1/approvals/{request_id}",
        "GET /v1/approvals/{request_id}/draft",
        "POST /v1/approvals/{request_id}/approve",
        "POST /v1/approvals/{request_id}/reject",
        "POST /v1/retention/run",
        "GET /v1/audit",
    }


@pytest.mark.parametrize(("method", "path", "operation"), OPERATIONS, ids=[f"{m} {p}" for m, p, _ in OPERATIONS])
def test_every_operation_documents_its_answer_and_its_errors(method: str, path: str, operation: dict[str, Any]) -> None:
    responses: dict[str, Any] = operation["responses"]
    ok = [status for status in responses if status.startswith("2")]
    # One success status; 202 where the action is requested (four eyes), and an export answers either.
    assert ok in (["200"], ["202"], ["200", "202"]), "one success status"
    if "application/json" in responses[ok[0]]["content"]:
        answer = resolve(DOCUMENT, responses[ok[0]]["content"]["application/json"]["schema"])
        if answer.get("type") == "array":
            answer = resolve(DOCUMENT, answer["items"])
        assert answer.get("type") == "object"
        assert answer["properties"], "the answer's fields are documented"
        assert answer.get("additionalProperties") is False, "the answer is exactly its fields"
    else:  # an export's file, streamed as it is
        assert (list(responses[ok[0]]["content"]), path) == (
            ["application/octet-stream"],
            "/v1/exports/{job_id}/files/{name}",
        )

    expected = {"401", "403", "503"}  # the gate, and not ready: every /v1/ route
    if "requestBody" in operation:
        expected |= {"413", "422"}
    if operation.get("parameters"):
        expected.add("422")
    if any(p["in"] == "path" for p in operation.get("parameters", [])):
        expected.add("404")  # what the path names may not exist
    errors = {status for status in responses if not status.startswith("2")}
    assert errors >= expected
    for status in errors - {"422"}:
        schema = responses[status]["content"]["application/json"]["schema"]
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}, status
        assert responses[status]["description"], status
    assert operation["x-action"], "the gate knows the action, hence the role"


def test_the_error_body_is_one_text_field() -> None:
    assert resolve(DOCUMENT, {"$ref": "#/components/schemas/ErrorBody"})["properties"] == {
        "detail": {"type": "string", "title": "Detail"}
    }


@pytest.mark.parametrize(
    ("schema", "field", "vocabulary"),
    [
        pytest.param("HoldRequest", "scope", HoldScope, id="hold scopes"),
        pytest.param("RefusalRequest", "ground", RefusalGround, id="refusal grounds"),
        pytest.param("HoldView", "scope", HoldScope, id="a hold's scope"),
        pytest.param("ErasureRequestView", "status", ErasureStatus, id="a request's status"),
        pytest.param("IndexHitView", "kind", EventKind, id="a hit's kind"),
        pytest.param("MessageView", "kind", EventKind, id="a message's kind"),
        pytest.param("MessageView", "direction", Direction, id="a message's direction"),
    ],
)
def test_choices_come_from_the_domains_vocabulary(schema: str, field: str, vocabulary: object) -> None:
    documented = DOCUMENT["components"]["schemas"][schema]["properties"][field]
    assert tuple(documented["enum"]) == get_args(vocabulary)


def test_a_search_s_kind_is_an_event_kind() -> None:
    """In the body (optional, so the enum is one branch of the schema) and in the query of GET /v1/search."""
    body = DOCUMENT["components"]["schemas"]["SearchRequest"]["properties"]["kind"]
    (query,) = [p for p in DOCUMENT["paths"]["/v1/search"]["get"]["parameters"] if p["name"] == "kind"]
    for schema in (body, query["schema"]):
        assert [tuple(branch["enum"]) for branch in schema["anyOf"] if "enum" in branch] == [EVENT_KINDS]


# ---------------------------------------------------------------- the gate, as the factory wires it


async def test_the_gate_finds_every_routes_action_in_the_routers() -> None:
    """Before the body is read, and before the archive is open (no lifespan here): no token is 401, a reader on a
    dpo route is 403; a reader on a reader's route passes the gate (then 503: not ready)."""
    app = create_admin_app(retention_settings(), cast(Any, None))
    transport = httpx.ASGITransport(app=app)
    answers: dict[str, tuple[int, int]] = {}
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for method, path, operation in OPERATIONS:
            url = path.replace("{request_ref}", "DSR-1").replace("{hold_id}", HOLD_ID)
            anonymous = await client.request(method, url, json={})
            reader = await client.request(method, url, json={}, headers={"authorization": f"Bearer {READER_TOKEN}"})
            answers[f"{method} {path}"] = (anonymous.status_code, reader.status_code)
            assert REQUIRED_ROLE[operation["x-action"]] in ("reader", "dpo")
    expected = {
        f"{method} {path}": (401, 403 if REQUIRED_ROLE[operation["x-action"]] == "dpo" else 503)
        for method, path, operation in OPERATIONS
    }
    assert answers == expected
    assert sum(reader == 403 for _, reader in answers.values()) >= 10


# ---------------------------------------------------------------- the answers, byte for byte

ROUTES = [
    pytest.param("GET", "/v1/holds", None, "holds", [HOLD, RELEASE.hold], id="holds"),
    pytest.param(
        "POST", "/v1/holds", {"scope": "conversation", "case_ref": "C", "contact": "x"}, "create_hold", HOLD, id="hold"
    ),
    pytest.param(
        "POST", f"/v1/holds/{HOLD_ID}/release", {"reason": "settled"}, "request_hold_release", ASKED, id="release"
    ),
    pytest.param(
        "POST",
        "/v1/erasures",
        {"contact": "x", "request_ref": "DSR-1", "reason": "asked by e-mail"},
        "request_erasure",
        ASKED,
        id="erase",
    ),
    pytest.param("GET", "/v1/erasures", None, "erasures", [REQUEST], id="erasures"),
    pytest.param(
        "POST", "/v1/erasures/DSR-1/refuse", {"ground": "legal_claims"}, "refuse_erasure", REQUEST, id="refuse"
    ),
    pytest.param("POST", "/v1/erasures/DSR-1/extend", {"reason": "r"}, "extend_erasure", REQUEST, id="extend"),
    pytest.param("POST", "/v1/retention/run", {}, "run_retention", REPORT, id="retention run"),
    pytest.param("GET", "/v1/audit?limit=5", None, "audit_log", [AUDIT], id="audit"),
    pytest.param("GET", "/v1/search?limit=5", None, "search", [HIT], id="search"),
    pytest.param("POST", "/v1/search", {"keywords": "x"}, "search", [HIT, HIT], id="search by body"),
]


def domain_json(answer: object) -> object:
    if isinstance(answer, list):
        return [domain_json(item) for item in answer]
    if isinstance(answer, ErasureOutcome):
        return answer.proof()
    if isinstance(answer, ApprovalRequest):
        return answer.to_json(AT)
    return cast(Any, answer).to_json()


@pytest.mark.parametrize(("method", "path", "body", "action", "answer"), ROUTES)
async def test_every_answer_is_the_bytes_it_was(
    method: str, path: str, body: object, action: str, answer: object
) -> None:
    actions = FixedActions(**{action: answer})
    async with mounted(actions, *ROUTERS) as client:
        response = await client.request(method, path, json=body)
    assert response.status_code == (202 if isinstance(answer, ApprovalRequest) else 200), response.text
    assert response.content == before(domain_json(answer))
    assert [(name, operator) for name, operator, _ in actions.calls] == [(action, DPO)]


RECORD_ROUTES = [
    pytest.param(
        "/v1/messages",
        {"contact": "x", "reason": "a complaint"},
        "messages",
        Conversation([REF], [MESSAGE, UNREADABLE], 4),
        {"messages": [MESSAGE.to_json(), UNREADABLE.to_json()], "shredded_records": 4},
        ConversationAnswer,
        id="messages",
    ),
    pytest.param(
        "/v1/groups/messages",
        {"group_id": "g", "phone_number_id": "1", "reason": "r"},
        "group_messages",
        GroupTimeline(REF, [REF], [MESSAGE], 0),
        GroupTimeline(REF, [REF], [MESSAGE], 0).to_json(),
        GroupTimelineAnswer,
        id="group timeline",
    ),
]


@pytest.mark.parametrize(("path", "body", "action", "answer", "content", "model"), RECORD_ROUTES)
async def test_records_are_written_as_they_were_and_as_documented(
    path: str, body: object, action: str, answer: object, content: object, model: type[BaseModel]
) -> None:
    async with mounted(FixedActions(**{action: answer}), *ROUTERS) as client:
        response = await client.post(path, json=body)
    assert response.status_code == 200, response.text
    assert response.content == json_bytes(content)
    model.model_validate_json(response.content)  # the document describes what is sent


# ---------------------------------------------------------------- the models fit whatever the domain produces

texts = st.text(max_size=12)
optional_moments = st.none() | st.datetimes(timezones=st.just(UTC))
counts = st.integers(min_value=0, max_value=2**40)
statuses = st.sampled_from(get_args(ErasureStatus))
grounds = st.none() | st.sampled_from(get_args(RefusalGround))
holds = st.builds(
    Hold,
    hold_id=texts,
    case_ref=texts,
    scope=st.sampled_from(get_args(HoldScope)),
    waba_id=st.none() | texts,
    phone_number_id=st.none() | texts,
    subject_count=counts,
    created_by=texts,
    created_at=st.datetimes(),
    released_at=optional_moments,
)
outcomes = st.builds(
    ErasureOutcome,
    request_ref=texts,
    status=statuses,
    subject_refs=st.lists(texts, max_size=3),
    keys_destroyed=st.lists(texts, max_size=3),
    blocked_by=st.lists(texts, max_size=3),
    objects_deleted=counts,
    objects_locked=counts,
    events_deleted=counts,
    key_destroyed_at=st.none() | texts,
    refusal_ground=grounds,
)
requests = st.builds(
    ErasureRequest,
    request_ref=texts,
    status=statuses,
    received_at=st.datetimes(),
    deadline_at=st.datetimes(),
    completed_at=optional_moments,
    holds=counts,
    extended_at=optional_moments,
    extension_reason=st.none() | texts,
    refusal_ground=grounds,
    refused_at=optional_moments,
)
reports = st.builds(
    RetentionReport,
    run_id=texts,
    dry_run=st.booleans(),
    started_at=st.datetimes(),
    candidates=st.lists(texts, max_size=3),
    objects_deleted=counts,
    objects_locked=counts,
    objects_held=counts,
    events_deleted=counts,
    events_by_class=st.dictionaries(texts, counts, max_size=3),
    objects_deferred=counts,
    erasures=st.dictionaries(texts, counts, max_size=3),
)
audit_entries = st.builds(
    AuditEntry,
    audit_id=counts,
    at=st.datetimes(),
    actor=texts,
    action=texts,
    reason=st.none() | texts,
    subject_ref=st.none() | texts,
    record_count=st.none() | counts,
    details=texts,
)
hits = st.builds(
    IndexHit,
    event_id=texts,
    kind=st.sampled_from(EVENT_KINDS),
    type=st.none() | texts,
    phone_number_id=st.none() | texts,
    subject_ref=st.none() | texts,
    event_time=optional_moments,
    received_at=st.datetimes(),
    retention_class=texts,
    expires_at=optional_moments,
    deleted=st.booleans(),
    edited=st.booleans(),
)
releases = st.builds(HoldRelease, hold=holds, erasures=st.lists(outcomes, max_size=3))

MODELS: list[tuple[st.SearchStrategy[Any], type[BaseModel]]] = [
    (holds, HoldView),
    (releases, HoldReleaseView),
    (outcomes, ErasureProof),
    (requests, ErasureRequestView),
    (reports, RetentionReportView),
    (audit_entries, AuditEntryView),
    (hits, IndexHitView),
]


@pytest.mark.parametrize(("objects", "model"), MODELS, ids=[model.__name__ for _, model in MODELS])
def test_a_model_writes_the_domains_json_unchanged(objects: st.SearchStrategy[Any], model: type[BaseModel]) -> None:
    @settings(max_examples=60, deadline=None)
    @given(objects)
    def check(thing: object) -> None:
        content = domain_json(thing)
        assert TypeAdapter(model).dump_json(model.model_validate(content)) == before(content)

    check()


def test_a_key_the_domain_adds_without_its_model_is_an_error_not_a_silent_drop() -> None:
    with pytest.raises(ValueError, match="extra"):
        HoldView.model_validate({**HOLD.to_json(), "new_field": 1})
    with pytest.raises(ValueError, match="valid integer"):
        HoldView.model_validate({**HOLD.to_json(), "subject_count": "2"})  # no coercion: the type is the domain's


# ---------------------------------------------------------------- one router, mounted alone


async def test_the_holds_router_alone_with_its_dependencies_replaced() -> None:
    actions = FixedActions(holds=[HOLD], create_hold=HOLD, request_hold_release=NotFound("no active hold with this id"))
    async with mounted(actions, holds_router) as client:
        listed = await client.get("/v1/holds", params={"include_released": "true"})
        created = await client.post(
            "/v1/holds", json={"scope": "group", "case_ref": "CASE-1", "phone_number_id": "1", "group_id": "g"}
        )
        unknown = await client.post(f"/v1/holds/{uuid.uuid4()}/release", json={"reason": "settled"})
        bad_scope = await client.post("/v1/holds", json={"scope": "planet", "case_ref": "CASE-1"})
        elsewhere = await client.get("/v1/erasures")
    assert listed.status_code == 200
    assert [HoldView.model_validate(h) for h in listed.json()] == [HoldView.model_validate(HOLD.to_json())]
    assert created.status_code == 200
    assert created.json()["hold_id"] == HOLD_ID
    assert (unknown.status_code, ErrorBody.model_validate_json(unknown.content).detail) == (
        404,
        "no active hold with this id",
    )
    assert bad_scope.status_code == 422  # the scope is the domain's HoldScope
    assert elsewhere.status_code == 404  # only this router is mounted
    assert [(name, operator, kwargs) for name, operator, kwargs in actions.calls] == [
        ("holds", DPO, {"args": (), "include_released": True}),
        (
            "create_hold",
            DPO,
            {
                "args": (),
                "scope": "group",
                "case_ref": "CASE-1",
                "waba_id": None,
                "phone_number_id": "1",
                "contact": None,
                "group_id": "g",
            },
        ),
        ("request_hold_release", DPO, {"args": (unknown.request.url.path.split("/")[3],), "reason": "settled"}),
    ]


async def test_without_its_actions_a_route_is_not_ready() -> None:
    app = FastAPI()
    app.include_router(holds_router)
    app.dependency_overrides[operator_of] = lambda: DPO
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:
        response = await client.get("/v1/holds")
    assert (response.status_code, orjson.loads(response.content)) == (503, {"detail": "not ready"})


class ClosingAccess:
    closed = False

    async def close(self) -> None:
        self.closed = True


async def test_ready_while_the_lifespan_holds_the_archive_open_and_not_after() -> None:
    access = ClosingAccess()

    async def opener() -> ArchiveAccess:
        return cast(ArchiveAccess, access)

    app = create_admin_app(retention_settings(), opener, serve_ops=False)
    assert not is_ready(app)
    async with app.router.lifespan_context(app):
        assert is_ready(app)
        assert app.state.actions.access is access
    assert not is_ready(app)
    assert access.closed


async def test_a_search_for_a_kind_that_is_no_kind_is_refused() -> None:
    """The kind is the vocabulary's EventKind: a kind that is none is a clear 422, not an empty answer."""
    async with mounted(FixedActions(search=[]), search_router) as client:
        known = await client.post("/v1/search", json={"kind": "echo"})
        unknown = await client.post("/v1/search", json={"kind": "planet"})
        in_the_query = await client.get("/v1/search", params={"kind": "planet"})
    assert known.status_code == 200
    assert known.json() == []
    assert (unknown.status_code, in_the_query.status_code) == (422, 422)


# ---------------------------------------------------------------- exports as jobs


def export_job(status: str = "queued", **fields: Any) -> ExportJob:
    values: dict[str, Any] = {
        "job_id": str(uuid.UUID(int=7)),
        "scope": "subject_access",
        "subject_ref": REF,
        "since": None,
        "until": None,
        "formats": ("all",),
        "language": "en",
        "requested_by": DPO.name,
        "reason": "Art. 15",
        "request_ref": None,
        "status": status,
        "step": status,
        "done": 0,
        "total": 0,
        "error": None,
        "attempts": 0,
        "created_at": AT,
        "started_at": None,
        "finished_at": None,
        "expires_at": None,
    }
    return ExportJob(**{**values, **fields})


async def test_an_export_is_a_job_accepted_with_its_location() -> None:
    actions = FixedActions(queue_person_export=[export_job()])
    async with mounted(actions, exports_router) as client:
        response = await client.post("/v1/exports", json={"contact": "x", "reason": "Art. 15", "formats": ["pdf"]})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == f"/v1/exports/{uuid.UUID(int=7)}"
    answer = ExportAccepted.model_validate_json(response.content)
    assert (answer.approval_request, [job.status for job in answer.jobs]) == (None, ["queued"])
    ((name, _operator, kwargs),) = actions.calls
    assert (name, kwargs["contact"], kwargs["formats"], kwargs["language"]) == (
        "queue_person_export",
        "x",
        ["pdf"],
        "en",
    )


async def test_a_large_export_is_a_request_with_its_location() -> None:
    request = ApprovalRequest(
        request_id="r-1",
        kind="export",
        target={"subject_refs": [REF]},
        subject_ref=REF,
        reason="Art. 15",
        requested_by=DPO.name,
        requested_at=AT,
        expires_at=AT,
        status="pending",
        decided_by=None,
        decided_at=None,
        decision=None,
        outcome=None,
    )
    async with mounted(FixedActions(queue_person_export=request), exports_router) as client:
        response = await client.post("/v1/exports", json={"subject_ref": REF, "reason": "Art. 15"})
    assert response.status_code == 202, response.text
    assert response.headers["location"] == "/v1/approvals/r-1"
    answer = ExportAccepted.model_validate_json(response.content)
    assert answer.jobs == []
    assert answer.approval_request is not None


async def test_a_search_export_hands_the_filter_to_the_action() -> None:
    job = export_job(scope="search", subject_ref=None, selection={"keywords": 1, "hits": 3}, event_ids=("e1",))
    actions = FixedActions(queue_search_export=job)
    body = {"keywords": "refund", "deleted_only": True, "reason": "dispute 88", "formats": ["rsmf", "jsonl"]}
    async with mounted(actions, exports_router) as client:
        response = await client.post("/v1/exports/search", json=body)
    assert response.status_code == 202, response.text
    (shown,) = ExportAccepted.model_validate_json(response.content).jobs
    assert (shown.scope, shown.selection, shown.event_count) == ("search", {"keywords": 1, "hits": 3}, 1)
    ((_name, _operator, kwargs),) = actions.calls
    assert (kwargs["query"].keywords, kwargs["query"].deleted_only, kwargs["formats"]) == (
        "refund",
        True,
        ["rsmf", "jsonl"],
    )


async def test_a_finished_job_lists_links_that_download_until_they_expire() -> None:
    files = (JobFile("evidence.zip", 3, "ab" * 32),)
    done = export_job("done", files=files, finished_at=AT, expires_at=AT)

    async def pieces() -> AsyncIterator[bytes]:
        yield b"zip"

    actions = FixedActions(export_job=done, export_file=(files[0], pieces()))
    async with mounted(actions, exports_router) as client:
        shown = ExportJobView.model_validate_json((await client.get(f"/v1/exports/{done.job_id}")).content)
        (file,) = shown.files
        assert file.url.startswith(f"/v1/exports/{done.job_id}/files/evidence.zip?expires=")
        got = await client.get(file.url)
        assert (got.status_code, got.content, got.headers["content-disposition"]) == (
            200,
            b"zip",
            'attachment; filename="evidence.zip"',
        )
        for tampered in (file.url.replace("sig=", "sig=0"), file.url.replace("evidence.zip", "other.zip")):
            assert (await client.get(tampered)).status_code == 404
    assert [name for name, _op, _kw in actions.calls] == ["export_job", "export_file"]


async def test_a_queued_job_has_no_link_yet() -> None:
    async with mounted(FixedActions(export_job=export_job("running")), exports_router) as client:
        shown = ExportJobView.model_validate_json((await client.get(f"/v1/exports/{uuid.UUID(int=7)}")).content)
    assert (shown.status, shown.files) == ("running", [])
