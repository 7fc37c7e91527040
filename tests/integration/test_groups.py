"""A Cloud API group on the real stack (issue #15, "Groups"): three people and the business in one group, its
timeline retrieved as one, a participant erased from it while the others stay readable, and the index holding the
group only as a pseudonym. Through the action layer, the admin API and the CLI.

The webhooks are Meta-shaped (tests/data/whatsapp/group_*.json, inbound_group_text.json) and go through the
archiver into S3 and PostgreSQL.
"""

from __future__ import annotations

import uuid

import asyncpg
import orjson
import pytest

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from services.actions.layer import GroupRequired, HoldError, Operator, ReasonRequired
from services.archiver.sealing import BUSINESS_SUBJECT
from services.cli.render import group_change
from services.core.events import Event
from services.core.index import binary_keys
from services.core.pseudonym import group_ref
from services.governance import erasure
from services.governance.holds import held_objects
from services.review.assembly import ConversationMessage
from tests.helpers.action_stack import CLI_OPERATOR, DPO, READER, Stack
from tests.helpers.approvals import ERASE_WHY, RELEASE_WHY, REQUESTER, approved
from tests.helpers.groups import T0, Group
from tests.helpers.support import run_cli

pytestmark = pytest.mark.integration

READER_OPERATOR = Operator("group-reader", "reader")


# (who, what) of the timeline, in order: the business's record, three joins, the messages, a status on the
# business's message, the settings, a removal, a departure, Alice's goodbye.
EXPECTED_TIMELINE = [
    ("business", "[group created] Spring order"),
    ("alice", "[joined by invite link]"),
    ("bob", "[joined by invite link]"),
    ("chloe", "[joined by invite link]"),
    ("alice", "hello all, is the order ready"),
    ("bob", "mine is paid already"),
    ("business", "your orders ship on Monday"),
    ("chloe", "I will pass this time"),
    ("business", "[settings] subject: Spring order (closed)"),
    ("bob", "[removed]"),
    ("chloe", "[left]"),
    ("alice", "thanks, see you"),
]


def timeline_of(group: Group, messages: list[ConversationMessage]) -> list[tuple[str, str]]:
    names = {group.alice: "alice", group.bob: "bob", group.chloe: "chloe"}
    return [(names.get(who, who), what) for who, what in map(group_change, messages)]


async def archive_group(demo_env: dict[str, str], pool: asyncpg.Pool, prefix: str, group: Group) -> list[Event]:
    """The group's webhooks and the business's outbound report, through Kafka and the archiver."""
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="groups")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    events = [*pipeline.events_of(group.webhooks()), group.outbound()]
    await pipeline.produce(bootstrap, topic, events)
    async with pipeline.running_archiver(pipeline.archiver_settings(demo_env, topic, dlq, prefix)):
        await pipeline.wait_indexed(pool, {e.event_id for e in events})
    return events


async def test_a_group_is_one_timeline_and_an_erased_participant_leaves_it(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    access = stack.actions.access
    group = Group.fresh()
    number = group.business.phone_number_id
    events = await archive_group(demo_env, pg_pool, stack.settings.s3.prefix, group)
    # Outside the group: Alice's own conversation with the business, and another group of the same number.
    elsewhere = Group(group.business, f"Y2FwaV9ncm91cDo{uuid.uuid4().hex}", group.alice, group.bob, group.chloe)
    await archive_group_bodies(
        demo_env,
        pg_pool,
        stack.settings.s3.prefix,
        [
            pipeline.text_message(Person(group.business.waba_id, number, group.alice), "wamid.A1", "just me", T0 + 45),
            elsewhere.message(group.bob, "wamid.X1", "another group", T0 + 46),
        ],
    )

    # The timeline: every participant's messages and the business's, in order, with joins, leaves and updates.
    await stack.cases.cover(READER_OPERATOR.name, group_id=group.group_id)
    timeline = await stack.actions.group_messages(
        READER_OPERATOR, group_id=group.group_id, phone_number_id=number, reason="dispute about the spring order"
    )
    assert timeline_of(group, timeline.messages) == EXPECTED_TIMELINE
    assert timeline.shredded_records == 0
    (sent,) = [m for m in timeline.messages if m.kind == "outbound"]
    assert sent.latest_status == "read"  # Chloe's read status, hers, attached to the business's message
    pepper = access.pepper
    people = {group.ref(pepper, p) for p in (group.alice, group.bob, group.chloe)}
    assert set(timeline.subject_refs) == people | {group.ref(pepper, BUSINESS_SUBJECT)}
    assert timeline.group_ref == group_ref(access.pepper, group.group_id)

    # Audited like a retrieval, before decrypting: one row per pseudonym, counting its records.
    rows = await pg_pool.fetch(
        "SELECT actor, action, reason, subject_ref, record_count, details FROM audit_log"
        " WHERE subject_ref = ANY($1::text[]) ORDER BY audit_id",
        timeline.subject_refs,
    )
    assert {(r["actor"], r["action"], r["reason"]) for r in rows} == {
        ("group-reader", "retrieval", "dispute about the spring order")
    }
    assert {r["subject_ref"]: r["record_count"] for r in rows} == {
        group.ref(pepper, group.alice): 3,  # joined, two messages (her own conversation is not the group's)
        group.ref(pepper, group.bob): 3,  # joined, a message, removed
        group.ref(pepper, group.chloe): 4,  # joined, the read status, a message, left
        group.ref(pepper, BUSINESS_SUBJECT): 3,  # created, the outbound message, the settings
    }
    assert all(orjson.loads(r["details"]) == {"group": True, "group_ref": timeline.group_ref} for r in rows)

    # Each record is its person's: Alice's export has her group messages and her joining, nobody else's.
    export = await stack.actions.export(Operator("dpo", "dpo"), contact=group.alice, reason="Art. 15 request")
    exported = {(m.kind, m.message_id or m.type) for m in export.messages}
    assert exported == {
        ("group_participant", "group_participants_add"),
        ("message", "wamid.GA1"),
        ("message", "wamid.GA2"),
        ("message", "wamid.A1"),
    }

    # The index holds the group as a pseudonym only: no group id, no participant number in any row.
    texts = [
        r["row"]
        for r in await pg_pool.fetch(
            "SELECT t::text AS row FROM archived_events t WHERE event_id = ANY($1::bytea[])",
            binary_keys(e.event_id for e in events),
        )
    ]
    assert len(texts) == len(events)
    secrets = [group.group_id, group.alice, group.bob, group.chloe]
    for text in texts:
        for secret in secrets:
            assert secret not in text
            assert secret.encode().hex() not in text  # nor as the hex of a bytea
    grouped = await pg_pool.fetchval(
        "SELECT count(*) FROM archived_events WHERE group_ref = $1", bytes.fromhex(timeline.group_ref)
    )
    assert grouped == len(events)
    audit_text = await pg_pool.fetchval(
        "SELECT string_agg(t::text, ' ') FROM audit_log t WHERE subject_ref = ANY($1::text[])", timeline.subject_refs
    )
    assert all(secret not in audit_text for secret in secrets)

    # Alice is erased. First as a crash would leave it: her keys destroyed, her index rows not yet deleted.
    async def crashed(*_args: object, **_kwargs: object) -> None:
        return None

    monkeypatch.setattr(erasure, "_delete_what_can_be", crashed)
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    await approved(
        stack.actions,
        stack.actions.request_erasure(
            REQUESTER, contact=group.alice, phone_number_id=number, request_ref=request_ref, reason=ERASE_WHY
        ),
        approver=Operator("dpo", "dpo"),
    )
    during = await stack.actions.group_messages(
        READER_OPERATOR, group_id=group.group_id, phone_number_id=number, reason="after the erasure"
    )
    without_alice = [step for step in EXPECTED_TIMELINE if step[0] != "alice"]
    assert timeline_of(group, during.messages) == without_alice
    assert during.shredded_records == 3  # not shown, counted
    monkeypatch.undo()
    # Then the erasure finishes (the next retention run would): her rows go, the others' stay readable.
    done = await erasure.carry_out(access.pool, access.keyring, access.bucket, request_ref, actor="dpo")
    assert done is not None
    assert done.status == "completed"
    after = await stack.actions.group_messages(
        READER_OPERATOR, group_id=group.group_id, phone_number_id=number, reason="after the erasure, again"
    )
    assert timeline_of(group, after.messages) == without_alice
    assert after.shredded_records == 0
    assert group.alice not in orjson.dumps([m.to_json() for m in after.messages]).decode()
    assert group.ref(pepper, group.alice) not in after.subject_refs


async def archive_group_bodies(
    demo_env: dict[str, str], pool: asyncpg.Pool, prefix: str, bodies: list[bytes]
) -> list[Event]:
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="groups")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    return await pipeline.archive_bodies(demo_env, pool, topic, dlq, prefix, bodies)


async def test_the_group_timeline_through_the_api_and_the_cli(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    access = stack.actions.access
    group = Group.fresh()
    number = group.business.phone_number_id
    await archive_group(demo_env, pg_pool, stack.settings.s3.prefix, group)
    body = {"group_id": group.group_id, "phone_number_id": number, "reason": "ticket 31"}

    # The admin API: a reader of the group's case reads it; no token, a wrong token: 401; no reason, no group:
    # 400, nothing read.
    await stack.cases.cover("test-reader", group_id=group.group_id)
    answer = await stack.api.post("/v1/groups/messages", json=body, headers=READER)
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["group_ref"] == group_ref(access.pepper, group.group_id)
    assert document["shredded_records"] == 0
    bodies = [m["payload"].get("text", {}).get("body") for m in document["messages"] if m["kind"] == "message"]
    assert bodies == [
        "hello all, is the order ready",
        "mine is paid already",
        "I will pass this time",
        "thanks, see you",
    ]
    assert len(document["messages"]) == len(EXPECTED_TIMELINE)
    assert (await stack.api.post("/v1/groups/messages", json=body, headers=DPO)).status_code == 200
    assert (await stack.api.post("/v1/groups/messages", json=body)).status_code == 401
    wrong = {"authorization": "Bearer not-a-token-at-all"}
    assert (await stack.api.post("/v1/groups/messages", json=body, headers=wrong)).status_code == 401
    reasonless = {k: v for k, v in body.items() if k != "reason"}
    assert (await stack.api.post("/v1/groups/messages", json=reasonless, headers=READER)).status_code == 400
    nameless = {**body, "group_id": ""}
    assert (await stack.api.post("/v1/groups/messages", json=nameless, headers=READER)).status_code == 422
    with pytest.raises(GroupRequired):
        await stack.actions.group_messages(READER_OPERATOR, group_id="", phone_number_id=number, reason="ticket 34")
    with pytest.raises(ReasonRequired):
        await stack.actions.group_messages(READER_OPERATOR, group_id=group.group_id, phone_number_id=number, reason=" ")

    # The CLI: the same timeline, as JSON lines or a table; refused without a reason.
    argv = ["group-messages", "--group-id", group.group_id, "--phone-number-id", number]
    code, out, err = await run_cli([*argv, "--reason", "ticket 32", "--format", "jsonl"], capsys)
    assert code == 0, err
    lines = [orjson.loads(line) for line in out.splitlines()]
    assert [m["event_id"] for m in lines] == [m["event_id"] for m in document["messages"]]
    code, out, err = await run_cli([*argv, "--reason", "ticket 33"], capsys)
    assert code == 0, err
    assert "hello all, is the order ready" in out
    assert "[left]" in out
    assert group.chloe in out  # who left: the participant, for whoever has the right to read the group
    code, out, err = await run_cli(argv, capsys)
    assert (code, out) == (2, "")
    assert "--reason is required" in err

    refs = [group.ref(access.pepper, p) for p in (group.alice, group.bob, group.chloe)]
    rows = await pg_pool.fetch(
        "SELECT DISTINCT actor, reason FROM audit_log"
        " WHERE subject_ref = ANY($1::text[]) AND details->>'group' = 'true'",
        refs,
    )
    assert {(r["actor"], r["reason"]) for r in rows} == {
        ("test-reader", "ticket 31"),
        ("test-dpo", "ticket 31"),
        (CLI_OPERATOR, "ticket 32"),
        (CLI_OPERATOR, "ticket 33"),
    }


async def test_a_hold_on_a_group_keeps_its_records_and_holds_back_a_participants_erasure(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, stack: Stack
) -> None:
    group = Group.fresh()
    number = group.business.phone_number_id
    await archive_group(demo_env, pg_pool, stack.settings.s3.prefix, group)
    # Dana writes to the business alone, never in the group: a group hold does not concern her.
    dana = Person(group.business.waba_id, number, "1" + pipeline.digits(10))
    await archive_group_bodies(
        demo_env,
        pg_pool,
        stack.settings.s3.prefix,
        [pipeline.text_message(dana, "wamid.GD1", "not in any group", T0 + 100)],
    )
    dpo = Operator("group-dpo", "dpo")
    hold = await stack.actions.create_hold(
        dpo, scope="group", case_ref=f"group-{uuid.uuid4().hex[:6]}", group_id=group.group_id
    )
    assert hold.scope == "group"
    with pytest.raises(HoldError, match="group-id"):
        await stack.actions.create_hold(dpo, scope="group", case_ref="no group")

    # Retention keeps every object holding a record of the group.
    ref = bytes.fromhex(group_ref(stack.actions.access.pepper, group.group_id))
    objects = [
        r["object_key"]
        for r in await pg_pool.fetch("SELECT DISTINCT object_key FROM archived_events WHERE group_ref = $1", ref)
    ]
    assert objects
    async with pg_pool.acquire() as conn:
        assert await held_objects(conn, objects) == set(objects)

    # A participant's erasure waits for the hold; someone outside the group is erased at once.
    alice_ref = f"group-hold-alice-{uuid.uuid4().hex[:6]}"
    blocked = await approved(
        stack.actions,
        stack.actions.request_erasure(
            REQUESTER, contact=group.alice, phone_number_id=number, request_ref=alice_ref, reason=ERASE_WHY
        ),
        approver=dpo,
    )
    assert blocked.status == "blocked"
    done = await approved(
        stack.actions,
        stack.actions.request_erasure(
            REQUESTER,
            contact=dana.wa_id,
            phone_number_id=number,
            request_ref=f"group-hold-dana-{uuid.uuid4().hex[:6]}",
            reason=ERASE_WHY,
        ),
        approver=dpo,
    )
    assert done.status == "completed"
    reason = "group hold test"
    before = await stack.actions.group_messages(dpo, group_id=group.group_id, phone_number_id=number, reason=reason)
    assert ("alice", "hello all, is the order ready") in timeline_of(group, before.messages)

    # Released: Alice's erasure resumes, and the group shows the others only.
    release = await approved(
        stack.actions, stack.actions.request_hold_release(REQUESTER, hold.hold_id, reason=RELEASE_WHY), approver=dpo
    )
    assert [(e.request_ref, e.status) for e in release.erasures] == [(alice_ref, "completed")]
    after = await stack.actions.group_messages(dpo, group_id=group.group_id, phone_number_id=number, reason=reason)
    people = {who for who, _ in timeline_of(group, after.messages)}
    assert "alice" not in people
    assert {"bob", "chloe"} <= people
