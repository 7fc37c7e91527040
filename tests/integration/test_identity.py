"""One person, several identifiers (issue #15): a customer known by phone number, then by phone number and
business-scoped user id (BSUID), then by user id only is one person, followed through the alias graph as far as
it goes (not one hop), by retrieval, by a hold placed before an identifier was learned, and by an erasure.

Against the real stack: the webhooks go through the archiver into S3 and PostgreSQL.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
from mypy_boto3_s3 import S3Client

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from services.actions.access import ArchiveAccess
from services.actions.layer import Operator
from services.core.identity import resolve_subject_refs
from services.core.index import binary_keys
from services.core.pseudonym import holder_ref, subject_ref
from services.governance.erasure import carry_out, erase_subject
from services.governance.holds import create_hold, release_hold
from services.governance.retention_run import retention_run
from services.review.assembly import ConversationMessage
from tests.helpers.action_stack import Stack
from tests.helpers.approvals import ERASE_WHY, RELEASE_WHY, REQUESTER, approved
from tests.helpers.archive_runs import NOW, archive, message

pytestmark = pytest.mark.integration

DPO_OPERATOR = Operator("identity-dpo", "dpo")
LONG_AGO = NOW - 10 * 365 * 86400  # expired under every retention class of the test policy


def bsuid() -> str:
    return f"US.{uuid.uuid4().hex[:16]}"


async def objects_of(pool: asyncpg.Pool, refs: list[str]) -> set[str]:
    rows = await pool.fetch(
        "SELECT DISTINCT object_key FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs)
    )
    return {row["object_key"] for row in rows}


async def test_a_person_is_followed_through_every_identifier_they_were_seen_with(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess
) -> None:
    # Phone A with user id U, then phone B with U (a number change), then B with a second user id V (a new
    # business portfolio), then V alone: four records, each linking two identifiers, a chain of four hops.
    person = Person.fresh()
    phone_b, user_u, user_v = "1" + pipeline.digits(10), bsuid(), bsuid()
    await archive(
        demo_env,
        pg_pool,
        prefix,
        [
            message(person, wa_id=person.wa_id, user_id=user_u, ts=NOW - 400),
            message(person, wa_id=phone_b, user_id=user_u, ts=NOW - 300),
            message(person, wa_id=phone_b, user_id=user_v, ts=NOW - 200),
            message(person, wa_id=None, user_id=user_v, ts=NOW - 100),
        ],
    )
    number = person.phone_number_id
    every = {subject_ref(access.pepper, number, i) for i in (person.wa_id, phone_b, user_u, user_v)}
    for identifier in (person.wa_id, phone_b, user_u, user_v):
        refs = set(await resolve_subject_refs(pg_pool, access.pepper, identifier, number))
        assert refs == every, identifier
    # The last record, sealed under V alone, is reached from the first phone number.
    chain = await resolve_subject_refs(pg_pool, access.pepper, person.wa_id, number)
    count = await pg_pool.fetchval(
        "SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])", binary_keys(chain)
    )
    assert count == 4
    # Someone else on the same number is not pulled in.
    stranger = Person(person.waba_id, number, "1" + pipeline.digits(10))
    await archive(demo_env, pg_pool, prefix, [pipeline.text_message(stranger, "wamid.X", "hello", NOW)])
    assert subject_ref(access.pepper, number, stranger.wa_id) not in set(
        await resolve_subject_refs(pg_pool, access.pepper, person.wa_id, number)
    )


async def test_a_hold_covers_identifiers_learned_after_it_was_placed(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, s3_client: S3Client
) -> None:
    person = Person.fresh()
    user_u = bsuid()
    await archive(demo_env, pg_pool, prefix, [message(person, wa_id=person.wa_id, user_id=None, ts=LONG_AGO)])
    async with pg_pool.acquire() as conn:
        hold = await create_hold(
            conn, access.pepper, scope="contact", case_ref="LIT-BSUID", actor="dpo", contact=person.wa_id
        )
    # Placed under every business number, before the user id was known.
    placed = await pg_pool.fetchval("SELECT subject_refs FROM legal_holds WHERE hold_id = $1::uuid", hold.hold_id)
    assert subject_ref(access.pepper, person.phone_number_id, person.wa_id) in placed
    assert subject_ref(access.pepper, person.phone_number_id, user_u) not in placed
    # After the hold: a message names the person by phone and user id, then one by the user id alone (the
    # phone number hidden), archived in an object of its own, sealed under the user id's pseudonym.
    await archive(demo_env, pg_pool, prefix, [message(person, wa_id=person.wa_id, user_id=user_u, ts=LONG_AGO + 1)])
    await archive(demo_env, pg_pool, prefix, [message(person, wa_id=None, user_id=user_u, ts=LONG_AGO + 2)])
    user_ref = subject_ref(access.pepper, person.phone_number_id, user_u)
    later = await objects_of(pg_pool, [user_ref])
    assert len(later) == 1

    await retention_run(access.pool, access.bucket, dry_run=False)
    (key,) = later
    s3_client.head_object(Bucket=access.bucket.name, Key=key)  # kept: the hold covers the person, not a list
    assert await objects_of(pg_pool, [user_ref]) == later

    async with pg_pool.acquire() as conn:
        await release_hold(conn, hold.hold_id, actor="dpo")
    await retention_run(access.pool, access.bucket, dry_run=False)
    assert await objects_of(pg_pool, [user_ref]) == set()


async def test_an_erasure_resumed_later_reaches_identifiers_learned_meanwhile(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess
) -> None:
    person = Person.fresh()
    user_u = bsuid()
    await archive(demo_env, pg_pool, prefix, [message(person, wa_id=person.wa_id, user_id=None, ts=NOW - 50)])
    async with pg_pool.acquire() as conn:
        hold = await create_hold(
            conn, access.pepper, scope="contact", case_ref="LIT-E", actor="dpo", contact=person.wa_id
        )
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    blocked = await erase_subject(
        access.pool,
        access.keyring,
        access.bucket,
        access.pepper,
        contact=person.wa_id,
        phone_number_id=None,
        request_ref=request_ref,
        actor="dpo",
    )
    assert blocked.status == "blocked"
    # While blocked, the person writes with a user id too, then with the user id alone.
    await archive(demo_env, pg_pool, prefix, [message(person, wa_id=person.wa_id, user_id=user_u, ts=NOW - 40)])
    await archive(demo_env, pg_pool, prefix, [message(person, wa_id=None, user_id=user_u, ts=NOW - 30)])
    user_ref = subject_ref(access.pepper, person.phone_number_id, user_u)
    assert await objects_of(pg_pool, [user_ref])

    async with pg_pool.acquire() as conn:
        await release_hold(conn, hold.hold_id, actor="dpo")
    done = await carry_out(access.pool, access.keyring, access.bucket, request_ref, actor="dpo")
    assert done is not None
    assert done.status == "completed"
    assert user_ref in done.subject_refs
    assert await objects_of(pg_pool, [user_ref]) == set()
    assert await pg_pool.fetchval("SELECT count(*) FROM subject_keys WHERE subject_ref = $1", user_ref) == 0


def said(messages: Sequence[ConversationMessage]) -> list[str]:
    return [m.payload["text"]["body"] if m.type == "text" else str(m.type) for m in messages]


async def test_a_number_change_is_one_person_and_the_old_number_s_next_holder_another(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, stack: Stack
) -> None:
    """Camille moves from number O to N; a year later a stranger gets O from the carrier and writes from it. The
    change and Camille's messages before and after are one person for retrieval, export, a hold and an erasure;
    the stranger is a person of their own whom none of these reach, and the erasure leaves them readable."""
    access = stack.actions.access
    camille = Person.fresh()
    number, old, new = camille.phone_number_id, camille.wa_id, "1" + pipeline.digits(10)
    on_new = Person(camille.waba_id, number, new)
    prefix = stack.settings.s3.prefix
    camille_bodies = [
        message(camille, wa_id=old, user_id=None, ts=NOW - 400),
        pipeline.number_change(camille, new, NOW - 300),
        pipeline.text_message(on_new, f"wamid.{uuid.uuid4().hex}", "my new number", NOW - 200),
    ]
    await archive(demo_env, pg_pool, prefix, camille_bodies)
    # The stranger, in a batch of their own: the change kept in PostgreSQL decides their pseudonym.
    await archive(
        demo_env,
        pg_pool,
        prefix,
        [pipeline.text_message(camille, f"wamid.{uuid.uuid4().hex}", "who is this", NOW - 100)],
    )
    changed_at = datetime.fromtimestamp(NOW - 300, UTC)
    first = subject_ref(access.pepper, number, old)
    kept = await pg_pool.fetch("SELECT since FROM number_holders WHERE number_ref = $1", first)
    assert [row["since"] for row in kept] == [changed_at]
    stranger_ref = holder_ref(access.pepper, number, old, changed_at)

    # Retrieval by the new number: Camille before, at and after the change; by the old number: its holder today.
    camille_refs = set(await resolve_subject_refs(pg_pool, access.pepper, new, number))
    assert camille_refs == {first, subject_ref(access.pepper, number, new)}
    assert set(await resolve_subject_refs(pg_pool, access.pepper, old, number)) == {stranger_ref}
    hers = await stack.actions.messages(DPO_OPERATOR, contact=new, reason="complaint about order 4471")
    assert said(hers.messages) == ["hi", "system", "my new number"]
    theirs = await stack.actions.messages(DPO_OPERATOR, contact=old, reason="complaint about order 4471")
    assert said(theirs.messages) == ["who is this"]
    export = await stack.actions.export(DPO_OPERATOR, contact=new, reason="Art. 15 request")
    assert said(export.messages) == ["hi", "system", "my new number"]

    # A hold placed by the new number keeps what Camille wrote from the old one, and blocks her erasure.
    hold = await stack.actions.create_hold(DPO_OPERATOR, scope="contact", case_ref="LIT-NUMBER", contact=new)
    request_ref = f"GDPR-{uuid.uuid4().hex[:8]}"
    blocked = await approved(
        stack.actions,
        stack.actions.request_erasure(REQUESTER, contact=new, request_ref=request_ref, reason=ERASE_WHY),
        approver=DPO_OPERATOR,
    )
    assert blocked.status == "blocked"
    assert await objects_of(pg_pool, [first])
    released = await approved(
        stack.actions,
        stack.actions.request_hold_release(REQUESTER, hold.hold_id, reason=RELEASE_WHY),
        approver=DPO_OPERATOR,
    )
    assert [(e.request_ref, e.status) for e in released.erasures] == [(request_ref, "completed")]

    # Erased: everything of Camille's, under both numbers; the stranger's message is still there and readable.
    assert await objects_of(pg_pool, sorted(camille_refs)) == set()
    keys = await pg_pool.fetch(
        "SELECT subject_ref FROM subject_keys WHERE subject_ref = ANY($1::text[])", [*camille_refs, stranger_ref]
    )
    assert [row["subject_ref"] for row in keys] == [stranger_ref]
    theirs = await stack.actions.messages(DPO_OPERATOR, contact=old, reason="complaint about order 4471")
    assert said(theirs.messages) == ["who is this"]

    # A replay of Camille's webhooks (a redelivery, a topic replayed) brings nothing of hers back; what she
    # writes after the erasure is new data, archived under a new key.
    replayed = pipeline.events_of(camille_bodies)
    after = pipeline.events_of(
        [pipeline.text_message(on_new, f"wamid.{uuid.uuid4().hex}", "hello again", int(time.time()) + 2)]
    )
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="identity")
    dlq = await create_topic(bootstrap, partitions=1, prefix="identity-dlq")
    await pipeline.produce(bootstrap, topic, [*replayed, *after])
    async with pipeline.running_archiver(pipeline.archiver_settings(demo_env, topic, dlq, prefix)):
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in after})
    dropped = await pg_pool.fetchval(
        "SELECT count(*) FROM erased_events WHERE event_id = ANY($1::text[])", [e.event_id for e in replayed]
    )
    assert dropped == len(replayed) == 3
    again = await stack.actions.messages(DPO_OPERATOR, contact=new, reason="after the erasure")
    assert said(again.messages) == ["hello again"]


async def test_the_parent_bsuid_finds_the_person_under_every_business_number_of_the_portfolio(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, stack: Stack
) -> None:
    """Léa writes to two business numbers of one portfolio: to the first by phone, to the second by her user id
    alone. Meta gives both contacts the same parent BSUID: by it, she is one person for retrieval, export and
    erasure across the numbers; someone with another parent BSUID on the same numbers is untouched."""
    access = stack.actions.access
    lea = Person.fresh()
    second = Person(lea.waba_id, pipeline.digits(15), lea.wa_id)
    parent, user_id = f"US.ENT.{pipeline.digits(20)}", bsuid()
    other = Person(lea.waba_id, lea.phone_number_id, "1" + pipeline.digits(10))

    def with_parent(body: bytes, parent_id: str) -> bytes:
        webhook = orjson.loads(body)
        for contact in webhook["entry"][0]["changes"][0]["value"]["contacts"]:
            contact["parent_user_id"] = parent_id
        return orjson.dumps(webhook)

    bodies = [
        with_parent(message(lea, wa_id=lea.wa_id, user_id=None, ts=NOW - 300), parent),
        with_parent(message(second, wa_id=None, user_id=user_id, ts=NOW - 200), parent),
        with_parent(message(other, wa_id=other.wa_id, user_id=None, ts=NOW - 100), f"US.ENT.{pipeline.digits(20)}"),
    ]
    await archive(demo_env, pg_pool, stack.settings.s3.prefix, bodies)
    hers = {
        subject_ref(access.pepper, lea.phone_number_id, lea.wa_id),
        subject_ref(access.pepper, second.phone_number_id, user_id),
    }
    # By the parent id, under every business number (one pseudonym per number, most without records): both hers.
    found = set(await resolve_subject_refs(pg_pool, access.pepper, parent))
    assert hers <= found
    assert subject_ref(access.pepper, other.phone_number_id, other.wa_id) not in found
    # Within one number the parent id is a link like any other: her phone number reaches it, not the other number.
    by_phone = set(await resolve_subject_refs(pg_pool, access.pepper, lea.wa_id, lea.phone_number_id))
    assert by_phone == {subject_ref(access.pepper, lea.phone_number_id, i) for i in (lea.wa_id, parent)}

    export = await stack.actions.export(DPO_OPERATOR, contact=parent, reason="Art. 15 request by Léa")
    assert said(export.messages) == ["hi", "hi"]
    assert {m.event_id for m in export.messages} == {e.event_id for e in pipeline.events_of(bodies[:2])}

    erased = await approved(
        stack.actions,
        stack.actions.request_erasure(
            REQUESTER, contact=parent, request_ref=f"GDPR-{uuid.uuid4().hex[:8]}", reason=ERASE_WHY
        ),
        approver=DPO_OPERATOR,
    )
    assert erased.status == "completed"
    assert await objects_of(pg_pool, sorted(hers)) == set()
    theirs = await stack.actions.messages(DPO_OPERATOR, contact=other.wa_id, reason="the other customer")
    assert said(theirs.messages) == ["hi"]
