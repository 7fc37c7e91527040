"""Held messages against the real stack (services/archiver/held.py, services/actions/held_sends.py): a ``send_held``
event archived opens one request of kind ``send`` (a replay none); its author cannot approve it; an approval
publishes one ``approved`` record with the send body, a rejection one ``rejected`` with the reason, an expired hold
one ``expired`` (a second sweep none); Kafka away, the approval is refused and the request still waits."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from services.actions.access import ArchiveAccess
from services.actions.decisions import DecisionNotPublished, DecisionPublisher
from services.actions.layer import SCHEDULER, Actions, Operator, SelfApproval
from services.core.settings import KafkaSettings
from services.governance.metrics import RetentionMetrics
from tests.helpers.approvals import SECOND_DPO
from tests.helpers.held_sends import AUTHOR, decision_records, held_event, text_send
from tests.helpers.support import run_cli

pytestmark = pytest.mark.integration


async def requests_of(pool: asyncpg.Pool, send_id: str) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT request_id::text AS request_id, requested_by, target::text AS target, expires_at, published_at,"
        " sealed_reason FROM approval_requests WHERE kind = 'send' AND source_ref = $1",
        send_id,
    )


async def test_held_sends_open_one_request_and_publish_one_decision_each(
    demo_env: dict[str, str],
    pg_pool: asyncpg.Pool,
    prefix: str,
    access: ArchiveAccess,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    events_topic = await create_topic(bootstrap, partitions=1, prefix="held")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    decisions = await create_topic(bootstrap, partitions=1, prefix="decisions")
    person = Person.fresh()
    now = datetime.now(UTC)
    later = now + timedelta(hours=1)
    to_approve = held_event(person, text_send(person, "Votre remboursement de *49,90 €* est validé."), held_until=later)
    to_reject = held_event(person, text_send(person, "IBAN FR76 3000 6000 0112 3456 7890 189"), held_until=later)
    # A short hold: it expires while nobody decides it (the request is opened all the same).
    to_expire = held_event(person, text_send(person, "Offre spéciale -20 %"), held_until=now + timedelta(seconds=1))
    # Short too: it expires in this test, and leaves nothing waiting in the shared database.
    unnamed = held_event(person, text_send(person, "Promotion"), held_until=now + timedelta(seconds=1), author=None)
    events = [to_approve, to_reject, to_expire, unnamed]
    # Each event twice (a replay): one request each.
    await pipeline.produce(bootstrap, events_topic, events + events)
    async with pipeline.running_archiver(pipeline.archiver_settings(demo_env, events_topic, dlq, prefix)):
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})

    send_id = {e.event_id: e.payload["gateway"]["send_id"] for e in events}
    rows = {e.event_id: await requests_of(pg_pool, send_id[e.event_id]) for e in events}
    assert [len(found) for found in rows.values()] == [1, 1, 1, 1], rows
    approve_row = rows[to_approve.event_id][0]
    assert approve_row["requested_by"] == AUTHOR
    assert rows[unnamed.event_id][0]["requested_by"] == f"gateway:{person.phone_number_id}"
    target = orjson.loads(approve_row["target"])
    assert target["send_id"] == send_id[to_approve.event_id]
    assert target["event_id"] == to_approve.event_id
    assert target["rules"] == ["refund-amount"]
    # References only: no phone number, no text of the message, in the row.
    assert person.wa_id not in approve_row["target"]
    assert "remboursement" not in approve_row["target"]
    assert approve_row["expires_at"] == datetime.fromisoformat(to_approve.payload["gateway"]["held_until"])

    actions = Actions(
        dataclasses.replace(access, decisions=DecisionPublisher(KafkaSettings(bootstrap_servers=bootstrap), decisions)),
        RetentionMetrics(CollectorRegistry()),
    )
    author = Operator(AUTHOR, "dpo")
    approve_id = approve_row["request_id"]
    try:
        with pytest.raises(SelfApproval):
            await actions.approve(author, approve_id, reason="looks fine to me")

        # Kafka away: refused, nothing decided, the request still waits.
        away = Actions(
            dataclasses.replace(
                access,
                decisions=DecisionPublisher(KafkaSettings(bootstrap_servers="127.0.0.1:1"), decisions, connect_s=0.5),
            ),
            actions.metrics,
        )
        try:
            with pytest.raises(DecisionNotPublished):
                await away.approve(SECOND_DPO, approve_id, reason="checked the amount")
        finally:
            assert away.access.decisions is not None
            await away.access.decisions.close()
        assert (await actions.approval(SECOND_DPO, approve_id)).state(datetime.now(UTC)) == "pending"

        # The CLI: its author is refused (four eyes), another reads the draft as text.
        monkeypatch.setenv("WA_RETENTION_S3__PREFIX", prefix)
        monkeypatch.setenv("WA_RETENTION_OPERATOR", AUTHOR)
        code, _, err = await run_cli(["approvals", "approve", approve_id, "--reason", "fine by me"], capsys)
        assert code == 2
        assert "another person must approve" in err
        monkeypatch.setenv("WA_RETENTION_OPERATOR", SECOND_DPO.name)
        code, out, err = await run_cli(["approvals", "show", approve_id], capsys)
        assert code == 0, err
        assert "Votre remboursement de *49,90 €* est validé." in err
        assert f"+{person.wa_id} from {person.phone_number_id}" in err
        assert orjson.loads(out)["draft"]["body"] == to_approve.payload["request"]

        draft = await actions.held_draft(SECOND_DPO, approve_id)
        assert draft.body == to_approve.payload["request"]
        assert draft.may_decide
        assert draft.recipient is not None

        done = await actions.approve(SECOND_DPO, approve_id, reason="checked the amount")
        assert done.request.state(datetime.now(UTC)) == "approved"
        assert done.request.published_at is not None
        rejected = await actions.reject(
            SECOND_DPO, rows[to_reject.event_id][0]["request_id"], reason="never send an IBAN in clear"
        )
        assert rejected.published_at is not None

        # The shared database may hold other expired holds (other runs'): sweep until none is due, then once more.
        while await actions.publish_expired(SCHEDULER, now=now + timedelta(seconds=2)) > 0:
            pass
        assert await actions.publish_expired(SCHEDULER, now=now + timedelta(seconds=2)) == 0
    finally:
        assert actions.access.decisions is not None
        await actions.access.decisions.close()

    ours = {send_id[e.event_id] for e in events}
    records = await decision_records(bootstrap, decisions, expected=4, send_ids=ours)
    by_send = {r["send_id"]: r for r in records}
    assert len(records) == len(by_send) == 4, records  # one record each, none twice
    approved = by_send[send_id[to_approve.event_id]]
    assert approved["decision"] == "approved"
    assert approved["request"] == to_approve.payload["request"]
    assert approved["message_id"] == to_approve.payload["gateway"]["message_id"]
    assert (approved["_key"], approved["phone_number_id"]) == (person.phone_number_id, person.phone_number_id)
    assert (approved["request_id"], approved["version"], approved["reason"]) == (approve_id, 1, None)
    rejected_record = by_send[send_id[to_reject.event_id]]
    assert rejected_record["decision"] == "rejected"
    assert (rejected_record["reason"], rejected_record["request"]) == ("never send an IBAN in clear", None)
    expired = by_send[send_id[to_expire.event_id]]
    assert (expired["decision"], expired["reason"], expired["request"]) == ("expired", None, None)
    assert (await requests_of(pg_pool, send_id[to_expire.event_id]))[0]["published_at"] is not None

    audit = await pg_pool.fetch(
        "SELECT actor, action, details->>'decision' AS decision FROM audit_log"
        " WHERE details->>'request_id' = $1 ORDER BY audit_id",
        approve_id,
    )
    steps = [(r["actor"], r["action"], r["decision"]) for r in audit]
    assert steps[0] == (AUTHOR, "approval.requested", None)
    assert (SECOND_DPO.name, "approval.approved", None) in steps
    assert (SECOND_DPO.name, "held_send.published", "approved") in steps
    assert (SECOND_DPO.name, "retrieval", None) in steps  # the body read to be sent, audited
