"""The erasure workflow against the real stack, through the action layer, the admin API and the CLI:
received → blocked (a hold) → in_progress → completed, refused (a legal ground) or extended (Art. 12(3)).

- A blocked request resumes by itself when the last hold that blocked it is released, by whoever releases it.
- The scheduled retention run finishes a request a crash interrupted after its keys were destroyed.
- A refusal needs one of the law's grounds and is final: neither a release nor a run nor asking again erases.
- An extension moves the deadline two months on, once, and only within the first month; the overdue count and the
  nearest deadline that the alerts watch follow it.
Every transition is in the audit log with its actor.
- Calls, marketing preferences and synced address-book contacts are the person's: in their export, under their
  holds, gone with their erasure.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest

from devtools import pipeline
from devtools.pipeline import Person
from services.actions.layer import SCHEDULER, ErasureError, Operator
from services.core.identity import resolve_subject_refs
from services.core.index import binary_keys
from services.governance.erasure import ERASURE_DEADLINE, ERASURE_EXTENSION, ERASURE_LOCK_NAMESPACE
from services.governance.erasure_requests import pending_erasures
from tests.helpers.action_stack import CLI_OPERATOR, DPO, READER, Stack, counted
from tests.helpers.approvals import ERASE_WHY, RELEASE_WHY, REQUESTER, approved
from tests.helpers.archive_runs import archive, crisis_bodies
from tests.helpers.support import run_cli

pytestmark = pytest.mark.integration

ALICE = Operator("dpo-alice", "dpo")
BOB = Operator("dpo-bob", "dpo")


async def archived_person(stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool) -> tuple[Person, list[str]]:
    person = Person.fresh()
    await archive(demo_env, pg_pool, stack.settings.s3.prefix, crisis_bodies(person))
    refs = await resolve_subject_refs(pg_pool, stack.actions.access.pepper, person.wa_id, None)
    return person, refs


async def keys_left(pool: asyncpg.Pool, refs: list[str]) -> int:
    count: int = await pool.fetchval("SELECT count(*) FROM subject_keys WHERE subject_ref = ANY($1::text[])", refs)
    return count


async def request_row(pool: asyncpg.Pool, request_ref: str) -> asyncpg.Record:
    row = await pool.fetchrow("SELECT * FROM erasure_requests WHERE request_ref = $1", request_ref)
    assert row is not None
    return row


async def transitions(pool: asyncpg.Pool, request_ref: str) -> list[tuple[str, str]]:
    rows = await pool.fetch(
        "SELECT actor, action FROM audit_log WHERE reason = $1 AND action LIKE 'erasure.%' ORDER BY audit_id",
        request_ref,
    )
    return [(row["actor"], row["action"]) for row in rows]


async def test_a_blocked_erasure_resumes_when_its_last_hold_is_released(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    person, refs = await archived_person(stack, demo_env, pg_pool)
    keys_before = await keys_left(pg_pool, refs)
    assert keys_before > 0
    first = await stack.actions.create_hold(ALICE, scope="contact", case_ref="CASE-A", contact=person.wa_id)
    second = await stack.actions.create_hold(ALICE, scope="contact", case_ref="CASE-B", contact=person.wa_id)
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"

    blocked = await approved(
        stack.actions,
        stack.actions.request_erasure(REQUESTER, contact=person.wa_id, request_ref=request_ref, reason=ERASE_WHY),
        approver=ALICE,
    )
    assert (blocked.status, blocked.blocked_by) == ("blocked", ["CASE-A", "CASE-B"])
    assert sorted((await request_row(pg_pool, request_ref))["blocked_by"]) == sorted([first.hold_id, second.hold_id])

    # One hold released (requested, then approved through the API): the other still blocks; nothing is destroyed.
    asked = await stack.actions.request_hold_release(REQUESTER, first.hold_id, reason=RELEASE_WHY)
    answer = await stack.api.post(f"/v1/approvals/{asked.request_id}/approve", json={"reason": "ok'd"}, headers=DPO)
    assert answer.status_code == 200, answer.text
    assert answer.json()["outcome"]["erasures"] == [{"request_ref": request_ref, "status": "blocked"}]
    row = await request_row(pg_pool, request_ref)
    assert (row["status"], list(row["blocked_by"])) == ("blocked", [second.hold_id])
    assert await keys_left(pg_pool, refs) == keys_before

    # The last one released: the request is carried out at once, by whoever released the hold.
    released = await approved(
        stack.actions, stack.actions.request_hold_release(REQUESTER, second.hold_id, reason=RELEASE_WHY), approver=BOB
    )
    assert [(e.request_ref, e.status) for e in released.erasures] == [(request_ref, "completed")]
    assert len(released.erasures[0].keys_destroyed) == keys_before
    assert await keys_left(pg_pool, refs) == 0
    assert (
        await pg_pool.fetchval(
            "SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs)
        )
        == 0
    )
    row = await request_row(pg_pool, request_ref)
    assert row["status"] == "completed"
    assert row["completed_at"] is not None
    assert orjson.loads(row["proof"])["keys_destroyed"] == sorted(released.erasures[0].keys_destroyed)
    assert await transitions(pg_pool, request_ref) == [
        ("dpo-alice", "erasure.received"),
        ("dpo-alice", "erasure.blocked"),  # by both holds
        ("test-dpo", "erasure.blocked"),  # by the second only, after the first was released
        ("dpo-bob", "erasure.keys_destroyed"),
        ("dpo-bob", "erasure.completed"),
    ]
    assert counted(stack.registry, "wa_retention_erasures_total", outcome="completed") == 1


async def test_the_scheduled_run_finishes_an_erasure_a_crash_interrupted(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    person, refs = await archived_person(stack, demo_env, pg_pool)
    key_ids = sorted(
        str(r["dek_id"])
        for r in await pg_pool.fetch("SELECT dek_id FROM subject_keys WHERE subject_ref = ANY($1::text[])", refs)
    )
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    bucket = stack.actions.access.bucket

    async def crash(_keys: list[str]) -> tuple[list[str], list[str]]:
        raise RuntimeError("the process died here")

    # The keys are destroyed, then the process dies before deleting anything.
    monkeypatch.setattr(bucket, "delete_permanently", crash)
    with pytest.raises(RuntimeError):
        await approved(
            stack.actions,
            stack.actions.request_erasure(REQUESTER, contact=person.wa_id, request_ref=request_ref, reason=ERASE_WHY),
            approver=ALICE,
        )
    monkeypatch.undo()
    assert (await request_row(pg_pool, request_ref))["status"] == "in_progress"
    assert await keys_left(pg_pool, refs) == 0
    assert await pg_pool.fetchval(
        "SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs)
    )

    report = await stack.actions.run_retention(SCHEDULER, dry_run=False)
    assert report.erasures.get("completed", 0) >= 1
    row = await request_row(pg_pool, request_ref)
    assert row["status"] == "completed"
    # The proof names the keys the interrupted attempt destroyed.
    assert orjson.loads(row["proof"])["keys_destroyed"] == key_ids
    assert (
        await pg_pool.fetchval(
            "SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs)
        )
        == 0
    )
    assert await transitions(pg_pool, request_ref) == [
        ("dpo-alice", "erasure.received"),
        ("dpo-alice", "erasure.keys_destroyed"),
        ("scheduler", "erasure.keys_destroyed"),
        ("scheduler", "erasure.completed"),
    ]


async def test_a_refusal_needs_a_legal_ground_and_is_final(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool, capsys: pytest.CaptureFixture[str]
) -> None:
    person, refs = await archived_person(stack, demo_env, pg_pool)
    keys_before = await keys_left(pg_pool, refs)
    hold = await stack.actions.create_hold(ALICE, scope="contact", case_ref="LIT-9", contact=person.wa_id)
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    assert (
        await approved(
            stack.actions,
            stack.actions.request_erasure(REQUESTER, contact=person.wa_id, request_ref=request_ref, reason=ERASE_WHY),
            approver=ALICE,
        )
    ).status == "blocked"

    # Not one of the law's grounds: refused by the API's schema and by the action; a reader may not refuse at all.
    bad = await stack.api.post(
        f"/v1/erasures/{request_ref}/refuse", json={"ground": "we would rather not"}, headers=DPO
    )
    assert bad.status_code == 422
    with pytest.raises(ErasureError):
        await stack.actions.refuse_erasure(ALICE, request_ref, ground="we would rather not")
    forbidden = await stack.api.post(
        f"/v1/erasures/{request_ref}/refuse", json={"ground": "legal_claims"}, headers=READER
    )
    assert forbidden.status_code == 403
    unknown = await stack.api.post("/v1/erasures/NO-SUCH-REF/refuse", json={"ground": "legal_claims"}, headers=DPO)
    assert unknown.status_code == 404

    code, out, err = await run_cli(["erasure", "refuse", request_ref, "--ground", "legal_claims"], capsys)
    assert code == 0, err
    assert orjson.loads(out)["status"] == "refused"
    row = await request_row(pg_pool, request_ref)
    assert (row["status"], row["refusal_ground"]) == ("refused", "legal_claims")

    # Final: releasing the hold, a retention run and asking again destroy nothing.
    released = await approved(
        stack.actions, stack.actions.request_hold_release(REQUESTER, hold.hold_id, reason=RELEASE_WHY), approver=ALICE
    )
    assert released.erasures == []
    await stack.actions.run_retention(SCHEDULER, dry_run=False)
    assert (await request_row(pg_pool, request_ref))["status"] == "refused"
    again = await approved(
        stack.actions,
        stack.actions.request_erasure(REQUESTER, contact=person.wa_id, request_ref=request_ref, reason=ERASE_WHY),
        approver=ALICE,
    )
    assert (again.status, again.refusal_ground) == ("refused", "legal_claims")
    assert await keys_left(pg_pool, refs) == keys_before
    twice = await stack.api.post(f"/v1/erasures/{request_ref}/refuse", json={"ground": "legal_claims"}, headers=DPO)
    assert twice.status_code == 400
    assert await transitions(pg_pool, request_ref) == [
        ("dpo-alice", "erasure.received"),
        ("dpo-alice", "erasure.blocked"),
        (CLI_OPERATOR, "erasure.refused"),
    ]


async def test_an_extension_moves_the_deadline_once_within_the_first_month(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    person, refs = await archived_person(stack, demo_env, pg_pool)
    hold = await stack.actions.create_hold(ALICE, scope="contact", case_ref="LIT-10", contact=person.wa_id)
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    await approved(
        stack.actions,
        stack.actions.request_erasure(REQUESTER, contact=person.wa_id, request_ref=request_ref, reason=ERASE_WHY),
        approver=ALICE,
    )
    received = (await request_row(pg_pool, request_ref))["received_at"]

    # Past its deadline it is overdue, and it can no longer be extended.
    async with pg_pool.acquire() as conn:
        before = await pending_erasures(conn)
        await conn.execute(
            "UPDATE erasure_requests SET deadline_at = now() - interval '1 hour' WHERE request_ref = $1", request_ref
        )
        overdue = await pending_erasures(conn)
    assert overdue.overdue == before.overdue + 1
    assert overdue.nearest_deadline_s is not None
    assert overdue.nearest_deadline_s < 0
    late = await stack.api.post(f"/v1/erasures/{request_ref}/extend", json={"reason": "complex request"}, headers=DPO)
    assert late.status_code == 400
    assert "deadline has passed" in late.json()["detail"]

    # Within the first month: two months more, once.
    await pg_pool.execute(
        "UPDATE erasure_requests SET deadline_at = received_at + $2::interval WHERE request_ref = $1",
        request_ref,
        ERASURE_DEADLINE,
    )
    extended = await stack.api.post(
        f"/v1/erasures/{request_ref}/extend", json={"reason": "several hundred messages to review"}, headers=DPO
    )
    assert extended.status_code == 200, extended.text
    body = extended.json()
    assert body["status"] == "extended"
    assert datetime.fromisoformat(body["deadline_at"]) == received + ERASURE_DEADLINE + ERASURE_EXTENSION
    assert body["extension_reason"] == "several hundred messages to review"
    async with pg_pool.acquire() as conn:
        assert (await pending_erasures(conn)).overdue == before.overdue
    again = await stack.api.post(f"/v1/erasures/{request_ref}/extend", json={"reason": "more time"}, headers=DPO)
    assert again.status_code == 400
    with pytest.raises(ErasureError):
        await stack.actions.extend_erasure(ALICE, request_ref, reason="\x00 not printable")

    # An extended request still waits for its hold, then completes when the hold goes.
    run = await stack.actions.run_retention(SCHEDULER, dry_run=False)
    assert (await request_row(pg_pool, request_ref))["status"] == "extended"
    assert run.erasures.get("extended", 0) >= 1
    released = await approved(
        stack.actions, stack.actions.request_hold_release(REQUESTER, hold.hold_id, reason=RELEASE_WHY), approver=ALICE
    )
    assert [(e.request_ref, e.status) for e in released.erasures] == [(request_ref, "completed")]
    assert await keys_left(pg_pool, refs) == 0
    listing = {r["request_ref"]: r for r in (await stack.api.get("/v1/erasures", headers=DPO)).json()}
    assert listing[request_ref]["status"] == "completed"
    assert listing[request_ref]["extended_at"] is not None
    assert datetime.fromisoformat(listing[request_ref]["deadline_at"]) - received == timedelta(days=90)
    assert datetime.fromisoformat(listing[request_ref]["completed_at"]) <= datetime.now(UTC)
    assert await transitions(pg_pool, request_ref) == [
        ("dpo-alice", "erasure.received"),
        ("dpo-alice", "erasure.blocked"),
        ("test-dpo", "erasure.extended"),
        ("dpo-alice", "erasure.keys_destroyed"),
        ("dpo-alice", "erasure.completed"),
    ]


def personal_records(person: Person, t: int) -> list[bytes]:
    """A call, a marketing preference and a synced address-book contact of ``person`` (issue #15: these were
    filed under the business before), as Meta sends them (tests/data/whatsapp/calls_*, user_preferences_*,
    smb_app_state_sync_*)."""
    contacts = [{"profile": {"name": "Test Person"}, "wa_id": person.wa_id}]
    business = {"display_phone_number": "15550001111", "phone_number_id": person.phone_number_id}
    return [
        pipeline.envelope(
            person,
            "calls",
            {
                "metadata": business,
                "contacts": contacts,
                "calls": [
                    {
                        "id": f"wacid.{uuid.uuid4().hex}",
                        "from": person.wa_id,
                        "to": "15550001111",
                        "event": "terminate",
                        "direction": "USER_INITIATED",
                        "timestamp": str(t),
                        "status": "COMPLETED",
                        "duration": 33,
                    }
                ],
            },
        ),
        pipeline.envelope(
            person,
            "user_preferences",
            {
                "metadata": business,
                "contacts": contacts,
                "user_preferences": [
                    {
                        "wa_id": person.wa_id,
                        "detail": "User requested to stop marketing messages",
                        "category": "marketing_messages",
                        "value": "stop",
                        "timestamp": t + 1,
                    }
                ],
            },
        ),
        pipeline.envelope(
            person,
            "smb_app_state_sync",
            {
                "metadata": business,
                "state_sync": [
                    {
                        "type": "contact",
                        "contact": {"full_name": "Test Person", "first_name": "Test", "phone_number": person.wa_id},
                        "action": "add",
                        "metadata": {"timestamp": str(t + 2)},
                    }
                ],
            },
        ),
    ]


async def test_calls_preferences_and_synced_contacts_are_the_persons(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    person = Person.fresh()
    t = int(datetime.now(UTC).timestamp()) - 600
    await archive(
        demo_env,
        pg_pool,
        stack.settings.s3.prefix,
        [pipeline.text_message(person, "wamid.P1", "hello", t - 10), *personal_records(person, t)],
    )
    refs = await resolve_subject_refs(pg_pool, stack.actions.access.pepper, person.wa_id, None)
    kinds = {
        row["kind"]
        for row in await pg_pool.fetch(
            "SELECT kind FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs)
        )
    }
    assert kinds == {"message", "call", "preference", "contact_sync"}

    # The person's export holds them (decrypted with their key) ...
    export = await stack.actions.export(ALICE, contact=person.wa_id, reason="Art. 15 request", request_ref="SAR-9")
    assert {m.kind for m in export.messages} == {"message", "call", "preference", "contact_sync"}
    # ... a contact hold covers them, and the erasure removes them with the rest.
    hold = await stack.actions.create_hold(ALICE, scope="contact", case_ref="LIT-11", contact=person.wa_id)
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    assert (
        await approved(
            stack.actions,
            stack.actions.request_erasure(REQUESTER, contact=person.wa_id, request_ref=request_ref, reason=ERASE_WHY),
            approver=ALICE,
        )
    ).status == "blocked"
    released = await approved(
        stack.actions, stack.actions.request_hold_release(REQUESTER, hold.hold_id, reason=RELEASE_WHY), approver=ALICE
    )
    assert [e.status for e in released.erasures] == ["completed"]
    assert (
        await pg_pool.fetchval(
            "SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs)
        )
        == 0
    )


async def test_asking_again_while_another_process_carries_it_out_says_where_it_stands(
    stack: Stack, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    person, refs = await archived_person(stack, demo_env, pg_pool)
    hold = await stack.actions.create_hold(ALICE, scope="contact", case_ref="LIT-12", contact=person.wa_id)
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    assert (
        await approved(
            stack.actions,
            stack.actions.request_erasure(REQUESTER, contact=person.wa_id, request_ref=request_ref, reason=ERASE_WHY),
            approver=ALICE,
        )
    ).status == "blocked"
    async with pg_pool.acquire() as other:
        # Another process holds the request's lock (erasure.py, _processing): asking again neither waits nor fails.
        assert await other.fetchval(
            "SELECT pg_try_advisory_lock($1, hashtext($2))", ERASURE_LOCK_NAMESPACE, request_ref
        )
        try:
            again = await approved(
                stack.actions,
                stack.actions.request_erasure(
                    REQUESTER, contact=person.wa_id, request_ref=request_ref, reason=ERASE_WHY
                ),
                approver=ALICE,
            )
        finally:
            await other.execute("SELECT pg_advisory_unlock($1, hashtext($2))", ERASURE_LOCK_NAMESPACE, request_ref)
    assert again.status == "blocked"
    assert await keys_left(pg_pool, refs) > 0
    released = await approved(
        stack.actions, stack.actions.request_hold_release(REQUESTER, hold.hold_id, reason=RELEASE_WHY), approver=ALICE
    )
    assert [e.status for e in released.erasures] == ["completed"]
