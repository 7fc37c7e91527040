"""The CLI, the admin API and the scheduler act through the same action layer (services/actions/layer.py).

Against the real stack: whoever starts an action, the same audit row is written (with that caller's name as
actor), the same role check refuses, and the same reason check refuses before anything is read.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence

import asyncpg
import orjson
import pytest

from devtools.pipeline import Person
from services.actions.layer import SCHEDULER, Forbidden, NotFound, Operator
from services.core.identity import resolve_subject_refs
from services.core.reader import RecordLocation
from services.core.refusals import ReasonRequired
from services.retention.service import background_work
from services.review.correspondent import readable_number
from tests.helpers.action_stack import CLI_OPERATOR, DPO, READER, Stack, counted
from tests.helpers.archive_runs import archive, audit_rows, crisis_bodies
from tests.helpers.support import run_cli

pytestmark = pytest.mark.integration


async def run_audit(pool: asyncpg.Pool, run_id: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT actor, action FROM audit_log WHERE details->>'run_id' = $1 ORDER BY audit_id", run_id
    )
    return [(row["actor"], row["action"]) for row in rows]


async def test_a_retention_run_is_audited_with_whoever_started_it(
    stack: Stack, pg_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = await stack.api.post("/v1/retention/run", json={"dry_run": True}, headers=DPO)
    assert answer.status_code == 200, answer.text
    assert await run_audit(pg_pool, answer.json()["run_id"]) == [("test-dpo", "retention.dry_run")]
    assert counted(stack.api_registry, "wa_retention_runs_total", outcome="dry_run") == 1

    code, out, err = await run_cli(["retention", "run", "--dry-run"], capsys)
    assert code == 0, err
    report = orjson.loads(out[out.index("{\n") :])  # after the "would delete …" lines
    assert report["dry_run"] is True
    assert await run_audit(pg_pool, report["run_id"]) == [(CLI_OPERATOR, "retention.dry_run")]
    # The CLI counts on a registry of its own.
    assert counted(stack.api_registry, "wa_retention_runs_total", outcome="dry_run") == 1

    # The scheduler runs the same action, as "scheduler".
    scheduled = stack.settings.model_copy(update={"run_interval_s": 0.01, "metrics_refresh_s": 0.05})
    task = asyncio.create_task(background_work(scheduled)(stack.actions))
    try:
        for _ in range(200):
            if counted(stack.registry, "wa_retention_runs_total", outcome="success") >= 1:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    scheduler_run = await pg_pool.fetchval(
        "SELECT action FROM audit_log WHERE actor = $1 ORDER BY audit_id DESC LIMIT 1", SCHEDULER.name
    )
    assert scheduler_run == "retention.run"


async def test_holds_and_rebuilds_carry_the_callers_name(
    stack: Stack, pg_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    person = Person.fresh()
    created = await stack.api.post(
        "/v1/holds", json={"scope": "contact", "case_ref": "CASE-API", "contact": person.wa_id}, headers=DPO
    )
    assert created.status_code == 200, created.text
    hold_id = created.json()["hold_id"]
    assert created.json()["created_by"] == "test-dpo"

    # Requested through the API (202), approved through the CLI by its operator, who carries it out.
    asked = await stack.api.post(f"/v1/holds/{hold_id}/release", json={"reason": "case settled"}, headers=DPO)
    assert asked.status_code == 202, asked.text
    assert asked.json()["requested_by"] == "test-dpo"
    request_id = asked.json()["request_id"]
    code, out, err = await run_cli(["approvals", "approve", request_id, "--reason", "checked it"], capsys)
    assert code == 0, err
    assert orjson.loads(out)["outcome"]["hold_id"] == hold_id
    rows = await pg_pool.fetch(
        "SELECT actor, action FROM audit_log WHERE details->>'hold_id' = $1 ORDER BY audit_id", hold_id
    )
    assert [(r["actor"], r["action"]) for r in rows] == [("test-dpo", "hold.create"), (CLI_OPERATOR, "hold.release")]

    # Releasing it again: nothing to release, 404 / exit 1, and no audit row.
    again = await stack.api.post(f"/v1/holds/{hold_id}/release", json={"reason": "case settled"}, headers=DPO)
    assert again.status_code == 404
    assert (await run_cli(["hold", "release", hold_id, "--reason", "case settled"], capsys))[0] == 1
    assert (await run_cli(["hold", "release", "not-a-hold-id", "--reason", "case settled"], capsys))[0] == 1
    assert await pg_pool.fetchval("SELECT count(*) FROM audit_log WHERE details->>'hold_id' = $1", hold_id) == 2

    # An incomplete hold is refused by the action: 400 / exit 2.
    incomplete = await stack.api.post("/v1/holds", json={"scope": "waba", "case_ref": "CASE-X"}, headers=DPO)
    assert incomplete.status_code == 400
    assert "--waba-id" in incomplete.json()["detail"]
    code, _out, err = await run_cli(["hold", "create", "--scope", "waba", "--case-ref", "CASE-X"], capsys)
    assert (code, "--waba-id" in err) == (2, True)

    code, out, err = await run_cli(["rebuild-index"], capsys)
    assert code == 0, err
    rebuilt = await pg_pool.fetch(
        "SELECT actor FROM audit_log WHERE action = 'index.rebuild' AND details->>'prefix' = $1",
        stack.settings.s3.prefix,
    )
    assert [row["actor"] for row in rebuilt] == [CLI_OPERATOR]


async def test_a_reader_is_refused_dpo_actions_by_the_action_itself_and_by_the_api(
    stack: Stack, pg_pool: asyncpg.Pool
) -> None:
    reader = Operator(f"reader-{uuid.uuid4().hex[:8]}", "reader")
    person = Person.fresh()
    refusals = [
        stack.actions.run_retention(reader, dry_run=False),
        stack.actions.request_erasure(reader, contact=person.wa_id, request_ref="R-1", reason="a reason"),
        stack.actions.create_hold(reader, scope="contact", case_ref="C-1", contact=person.wa_id),
        stack.actions.request_hold_release(reader, str(uuid.uuid4()), reason="a reason"),
        stack.actions.export(reader, contact=person.wa_id, reason="a reason"),
        stack.actions.audit_log(reader, limit=1),
        stack.actions.rebuild_index(reader),
    ]
    for refused in refusals:
        with pytest.raises(Forbidden, match="'dpo' role is required"):
            await refused
    assert await pg_pool.fetchval("SELECT count(*) FROM audit_log WHERE actor = $1", reader.name) == 0
    assert await pg_pool.fetchval("SELECT count(*) FROM erasure_requests WHERE request_ref = 'R-1'") == 0

    before = await pg_pool.fetchval("SELECT coalesce(max(audit_id), 0) FROM audit_log")
    answer = await stack.api.post("/v1/retention/run", json={"dry_run": False}, headers=READER)
    assert (answer.status_code, answer.json()) == (403, {"detail": "the 'dpo' role is required"})
    refused = await pg_pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE actor = 'test-reader' AND audit_id > $1", before
    )
    assert refused == 0
    assert counted(stack.api_registry, "wa_retention_runs_total", outcome="success") == 0

    # What a reader may do, it does through the same action, audited with its name.
    found = await stack.api.post("/v1/search", json={"contact": person.wa_id, "limit": 5}, headers=READER)
    assert (found.status_code, found.json()) == (200, [])
    # Never a person in a URL: the query string with one is refused, before anything is searched or audited.
    in_url = await stack.api.get("/v1/search", params={"contact": person.wa_id, "limit": 6}, headers=READER)
    assert (in_url.status_code, in_url.json()) == (
        400,
        {"detail": "a person or keywords go in the body: POST /v1/search"},
    )
    in_url = await stack.api.get("/v1/search", params={"keywords": "remboursement"}, headers=READER)
    assert in_url.status_code == 400
    searched = await pg_pool.fetch(
        "SELECT record_count, details FROM audit_log WHERE action = 'search' AND actor = 'test-reader'"
        " AND details->>'limit' = '5' ORDER BY audit_id DESC LIMIT 1"
    )
    assert [row["record_count"] for row in searched] == [0]
    assert person.wa_id not in searched[0]["details"]
    refused_searches = await pg_pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE action = 'search' AND actor = 'test-reader' AND details->>'limit' = '6'"
    )
    assert refused_searches == 0


async def test_a_retrieval_without_a_reason_is_refused_before_anything_is_read(
    demo_env: dict[str, str],
    stack: Stack,
    pg_pool: asyncpg.Pool,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    person = Person.fresh()
    await archive(demo_env, pg_pool, stack.settings.s3.prefix, crisis_bodies(person)[:1])
    refs = await resolve_subject_refs(pg_pool, stack.actions.access.pepper, person.wa_id, None)
    opened: list[Sequence[RecordLocation]] = []
    real_open = stack.actions.access.reader.open

    async def spy(locations: Sequence[RecordLocation]) -> dict[str, bytes | None]:
        opened.append(locations)
        return await real_open(locations)

    monkeypatch.setattr(stack.actions.access.reader, "open", spy)
    reader = Operator("reader-without-reason", "reader")
    for reason in (None, "", "  "):
        with pytest.raises(ReasonRequired):
            await stack.actions.messages(reader, contact=person.wa_id, reason=reason)
        with pytest.raises(ReasonRequired):
            await stack.actions.export(Operator("dpo", "dpo"), contact=person.wa_id, reason=reason)
    answer = await stack.api.get(
        "/v1/messages", params={"contact": person.wa_id, "reason": "in the URL"}, headers=READER
    )
    assert (answer.status_code, answer.headers["allow"]) == (405, "POST")
    assert answer.json() == {"detail": "the person and the reason go in the body: POST /v1/messages"}
    answer = await stack.api.post("/v1/messages", json={"contact": person.wa_id}, headers=READER)
    assert answer.status_code == 400
    code, out, err = await run_cli(["messages", "--contact", person.wa_id], capsys)
    assert (code, out) == (2, "")
    assert "--reason is required" in err
    assert opened == []
    assert await audit_rows(pg_pool, refs) == []
    assert counted(stack.registry, "wa_retention_audited_reads_total", purpose="retrieval") == 0

    # With a reason (and a case of the person's number to review): audited before the read, with the caller's
    # name, and counted.
    for name in (reader.name, "test-reader"):
        await stack.cases.cover(name, phone_number_id=person.phone_number_id)
    conversation = await stack.actions.messages(reader, contact=person.wa_id, reason="ticket 9")
    assert [m.message_id for m in conversation.messages] == ["wamid.M1"]
    assert len(opened) == 1
    assert [(r["actor"], r["action"], r["reason"]) for r in await audit_rows(pg_pool, refs)] == [
        ("reader-without-reason", "retrieval", "ticket 9")
    ]
    assert counted(stack.registry, "wa_retention_audited_reads_total", purpose="retrieval") == 1

    code, out, err = await run_cli(
        ["messages", "--contact", person.wa_id, "--reason", "ticket 10", "--format", "jsonl"], capsys
    )
    assert code == 0, err
    assert [orjson.loads(line)["message_id"] for line in out.splitlines()] == ["wamid.M1"]
    code, out, err = await run_cli(["messages", "--contact", person.wa_id, "--reason", "ticket 11"], capsys)
    assert code == 0, err
    assert "the refund is approved, ref 4711" in out
    # Above the table, who it is with, from the decrypted records (the sample's profile name and the number).
    assert (
        out.splitlines()[0]
        == f"Test Person · {readable_number(person.wa_id)} · business number {person.phone_number_id}"
    )
    # The API's POST form: the person and the reason in the body, the same conversation, audited the same way.
    answer = await stack.api.post("/v1/messages", json={"contact": person.wa_id, "reason": "ticket 12"}, headers=READER)
    assert answer.status_code == 200, answer.text
    assert [m["message_id"] for m in answer.json()["messages"]] == ["wamid.M1"]
    assert [(r["actor"], r["reason"]) for r in await audit_rows(pg_pool, refs)][1:] == [
        (CLI_OPERATOR, "ticket 10"),
        (CLI_OPERATOR, "ticket 11"),
        ("test-reader", "ticket 12"),
    ]


def by(key: str, rows: list[dict[str, object]]) -> dict[object, dict[str, object]]:
    return {row[key]: row for row in rows}


async def test_the_listings_are_the_same_through_the_api_and_the_cli(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    # Other tests may write to the same database meanwhile: compare what both listings hold.
    listings = [
        ("/v1/holds?include_released=true", ["hold", "list", "--all", "--format", "json"], "hold_id"),
        ("/v1/audit?limit=50", ["audit", "--limit", "50", "--format", "jsonl"], "audit_id"),
        ("/v1/erasures", ["erasures", "--format", "json"], "request_ref"),
    ]
    for path, argv, key in listings:
        answer = await stack.api.get(path, headers=DPO)
        assert answer.status_code == 200, path
        code, out, err = await run_cli(argv, capsys)
        assert code == 0, err
        printed = [orjson.loads(line) for line in out.splitlines()] if "jsonl" in argv else orjson.loads(out)
        api, cli = by(key, answer.json()), by(key, printed)
        assert all(api[k] == cli[k] for k in api.keys() & cli.keys()), path

    code, out, err = await run_cli(["audit", "--limit", "5"], capsys)
    assert code == 0, err
    assert "actor" in out.splitlines()[1]  # a table: the frame, then the header
    with pytest.raises(NotFound):
        await stack.actions.request_hold_release(Operator("dpo", "dpo"), str(uuid.uuid4()), reason="a reason")
