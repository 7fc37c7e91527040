"""A reviewer reads the custodians of their cases, within each case's period, and nothing else: through the actions
(search filtered in SQL as the rule says), the admin API and the console; the DPO and a deployment that reads
``all`` see everything. The rule itself is property-tested in tests/unit/test_scope.py."""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.actions.layer import Actions, Operator
from services.console.factory import create_console_app
from services.console.settings import ConsoleSettings
from services.core.identity import resolve_subject_refs
from services.core.refusals import Forbidden, InvalidRequest
from services.governance.cases import CustodianSpec
from services.governance.metrics import RetentionMetrics
from services.governance.scope import OutsideScope, load_reader_scope
from services.review.queries import record_place
from services.review.search import SearchFilter
from tests.helpers.action_stack import READER, Stack, counted
from tests.helpers.archive_runs import NOW, archive
from tests.helpers.reader_cases import TEST_DPO

pytestmark = pytest.mark.integration

READER_NAME = "test-reader"  # pipeline.retention_settings' reader token


@pytest.fixture
async def console_url(stack: Stack) -> AsyncIterator[str]:
    settings = ConsoleSettings(secure_cookies=False, idle_timeout_s=60, page_size=20)

    async def opener() -> ArchiveAccess:
        return await open_access(settings.archive_settings(stack.settings))

    app = create_console_app(settings, stack.settings, opener, registry=CollectorRegistry(), serve_ops=False)
    async with serve_asgi(app) as url:
        yield url


async def sign_in(client: httpx.AsyncClient) -> str:
    page = await client.get("/signin")
    token = re.search(r'name="signin_token" value="([^"]+)"', page.text)
    assert token
    answer = await client.post(
        "/signin",
        data={"signin_token": token.group(1), "name": READER_NAME, "token": pipeline.READER_TOKEN, "timezone": "UTC"},
    )
    assert answer.status_code == 303, answer.text
    found = re.search(r'name="csrf" value="([^"]+)"', (await client.get("/search")).text)
    assert found
    return found.group(1)


async def test_a_reviewer_reads_their_cases_custodians_within_the_period_and_nothing_else(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, stack: Stack, console_url: str
) -> None:
    alice = Person.fresh()  # a person custodian, with a message before the case's period and one within
    bob = Person(alice.waba_id, alice.phone_number_id, "1" + pipeline.digits(10))  # same number, no custodian
    carol = Person.fresh()  # of a business-number custodian
    await archive(
        demo_env,
        pg_pool,
        stack.settings.s3.prefix,
        [
            pipeline.text_message(alice, "wamid.A0", "before the case's period", NOW - 3000),
            pipeline.text_message(alice, "wamid.A1", "within the case's period", NOW - 1000),
            pipeline.text_message(bob, "wamid.B1", "nobody's case", NOW - 900),
            pipeline.text_message(carol, "wamid.C1", "the number's case", NOW - 800),
        ],
    )
    pepper = stack.actions.access.pepper
    (alice_ref,) = await resolve_subject_refs(pg_pool, pepper, alice.wa_id, alice.phone_number_id)
    (bob_ref,) = await resolve_subject_refs(pg_pool, pepper, bob.wa_id, bob.phone_number_id)
    reviewer = Operator(f"reviewer-{uuid.uuid4().hex[:8]}", "reader")
    case = await stack.actions.open_case(
        TEST_DPO,
        title="scope test",
        period_start=datetime.fromtimestamp(NOW - 2000, UTC),
        period_end=datetime.now(UTC) + timedelta(hours=1),
        custodians=[
            CustodianSpec(kind="person", contact=alice.wa_id, phone_number_id=alice.phone_number_id),
            CustodianSpec(kind="phone_number", phone_number_id=carol.phone_number_id),
        ],
        reviewers=[reviewer.name, READER_NAME],
    )
    stack.cases.opened.append(case.case_ref)  # closed when the test ends

    # The actions: the search returns (and counts) only what the case covers, exactly as the rule decides.
    actions = stack.actions
    scope = await actions.reading_scope(reviewer)
    assert scope.sources == [case.case_ref]
    for number in (alice.phone_number_id, carol.phone_number_id):
        everything = await actions.search(TEST_DPO, SearchFilter(phone_number_id=number))
        mine = await actions.search(reviewer, SearchFilter(phone_number_id=number))
        places = [await record_place(pg_pool, hit.event_id) for hit in everything]
        assert {hit.event_id for hit in mine} == {p.event_id for p in places if p and scope.covers(p)}
    assert len(await actions.search(reviewer, SearchFilter(phone_number_id=alice.phone_number_id))) == 1
    audited = await pg_pool.fetchrow(
        "SELECT record_count, details->'scope' AS scope FROM audit_log WHERE actor = $1 AND action = 'search'"
        " ORDER BY audit_id DESC LIMIT 1",
        reviewer.name,
    )
    assert audited is not None
    assert audited["record_count"] == 1
    assert case.case_ref in audited["scope"]

    # Alice's conversation shows the period's message only; Carol's, by her number; Bob's is refused, unread.
    alice_read = await actions.messages(reviewer, subject_ref=alice_ref, reason="scope test")
    assert [m.payload["text"]["body"] for m in alice_read.messages] == ["within the case's period"]
    carol_read = await actions.messages(
        reviewer, contact=carol.wa_id, phone_number_id=carol.phone_number_id, reason="scope test"
    )
    assert len(carol_read.messages) == 1
    with pytest.raises(OutsideScope):
        await actions.messages(reviewer, subject_ref=bob_ref, reason="scope test")
    assert await pg_pool.fetchval("SELECT count(*) FROM audit_log WHERE subject_ref = $1", bob_ref) == 0
    # The DPO, and any reader of a deployment that reads `all`, open Bob's.
    assert len((await actions.messages(TEST_DPO, subject_ref=bob_ref, reason="scope test")).messages) == 1
    reading_all = Actions(
        dataclasses.replace(actions.access, reader_scope="all"), RetentionMetrics(CollectorRegistry())
    )
    assert len((await reading_all.messages(reviewer, subject_ref=bob_ref, reason="scope test")).messages) == 1

    # The admin API, as the reader assigned to the case: Bob is refused, and break-glass asked for.
    found = await stack.api.post("/v1/search", json={"phone_number_id": alice.phone_number_id}, headers=READER)
    assert [hit["subject_ref"] for hit in found.json()] == [alice_ref]
    refused = await stack.api.post("/v1/messages", json={"subject_ref": bob_ref, "reason": "scope"}, headers=READER)
    assert refused.status_code == 403
    assert "break-glass" in refused.json()["detail"]
    opened = await stack.api.post("/v1/messages", json={"subject_ref": alice_ref, "reason": "scope"}, headers=READER)
    assert opened.status_code == 200, opened.text
    asked = await stack.api.post(
        "/v1/break-glass", json={"subject_ref": bob_ref, "reason": "ticket 88 escalated"}, headers=READER
    )
    assert (asked.status_code, asked.json()["state"]) == (200, "pending")

    # The console: the search page names the case; Bob's conversation gets the page that offers break-glass.
    async with httpx.AsyncClient(base_url=console_url, timeout=60) as client:
        csrf = await sign_in(client)
        search = await client.get("/search")
        assert re.search(rf'id="scope">Your cases: [^<]*{re.escape(case.case_ref)}', search.text)
        outside = await client.post(
            "/conversation/reason", data={"csrf": csrf, "subject_ref": bob_ref, "reason": "scope test"}
        )
        assert outside.status_code == 403
        assert "Outside your cases" in outside.text
        assert "nobody's case" not in outside.text
        assert "Ask for access" in outside.text
        sent = await client.post(
            "/break-glass", data={"csrf": csrf, "subject_ref": bob_ref, "reason": "ticket 88, from the console"}
        )
        assert sent.status_code == 202, sent.text
        assert "Your request for access was sent" in sent.text
        inside = await client.post(
            "/conversation/reason", data={"csrf": csrf, "subject_ref": alice_ref, "reason": "scope test"}
        )
        assert inside.status_code == 200, inside.text
        assert "within the case&#39;s period" in inside.text
        assert "before the case" not in inside.text


async def test_break_glass_needs_another_persons_approval_and_is_flagged_and_counted(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, stack: Stack
) -> None:
    bob = Person.fresh()
    await archive(
        demo_env, pg_pool, stack.settings.s3.prefix, [pipeline.text_message(bob, "wamid.G1", "urgent", NOW - 600)]
    )
    (bob_ref,) = await resolve_subject_refs(pg_pool, stack.actions.access.pepper, bob.wa_id, bob.phone_number_id)
    actions = stack.actions
    reader = Operator(f"reader-{uuid.uuid4().hex[:8]}", "reader")
    with pytest.raises(OutsideScope):
        await actions.messages(reader, subject_ref=bob_ref, reason="complaint escalated")

    asked = await actions.request_break_glass(reader, subject_ref=bob_ref, reason="complaint escalated to me")
    assert counted(stack.registry, "wa_retention_break_glass_total", step="requested") == 1
    # Nobody approves their own request, a reader approves nothing, and until a DPO does, it stays closed.
    with pytest.raises(Forbidden):
        await actions.approve(reader, asked.request_id, reason="it is mine")
    with pytest.raises(InvalidRequest):  # the DPO reads everything already
        await actions.request_break_glass(TEST_DPO, subject_ref=bob_ref, reason="no need")
    with pytest.raises(OutsideScope):
        await actions.messages(reader, subject_ref=bob_ref, reason="complaint escalated")

    await actions.approve(TEST_DPO, asked.request_id, reason="the escalation is real")
    assert counted(stack.registry, "wa_retention_break_glass_total", step="approved") == 1
    read = await actions.messages(reader, subject_ref=bob_ref, reason="complaint escalated")
    assert [m.payload["text"]["body"] for m in read.messages] == ["urgent"]
    assert [
        hit.subject_ref for hit in await actions.search(reader, SearchFilter(phone_number_id=bob.phone_number_id))
    ] == [bob_ref]
    # Flagged: the grant (with both names) and every read under it carry the request's id; the request and its
    # approval are found by their kind.
    kinds = await pg_pool.fetch(
        "SELECT action FROM audit_log WHERE details->>'kind' = 'break_glass' AND details->>'request_id' = $1"
        " ORDER BY audit_id",
        asked.request_id,
    )
    assert [r["action"] for r in kinds] == ["approval.requested", "approval.approved"]
    rows = await pg_pool.fetch(
        "SELECT actor, action, details FROM audit_log WHERE details->'break_glass' ? $1 ORDER BY audit_id",
        asked.request_id,
    )
    assert [(r["actor"], r["action"]) for r in rows] == [
        (TEST_DPO.name, "break_glass.granted"),
        (reader.name, "retrieval"),
    ]
    granted = orjson.loads(rows[0]["details"])
    assert (granted["granted_to"], granted["approval"]["requester"]) == (reader.name, reader.name)
    assert granted["approval"]["approver"] == TEST_DPO.name
    # The access ends: after break_glass_h hours it is no longer part of the reader's scope.
    later = await load_reader_scope(pg_pool, reader.name, datetime.now(UTC) + timedelta(hours=9))
    assert later.break_glass_for(subject_refs=[bob_ref]) == []
