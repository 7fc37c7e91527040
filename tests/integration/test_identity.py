"""One person, several identifiers (issue #15): a customer known by phone number, then by phone number and
business-scoped user id (BSUID), then by user id only is one person, followed through the alias graph as far as
it goes (not one hop), by retrieval, by a hold placed before an identifier was learned, and by an erasure.

Against the real stack: the webhooks go through the archiver into S3 and PostgreSQL.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from mypy_boto3_s3 import S3Client

from services.core.index import binary_keys
from services.core.pseudonym import subject_ref
from services.retention.access import ArchiveAccess
from services.retention.erasure import carry_out, erase_subject
from services.retention.holds import create_hold, release_hold
from services.retention.run import retention_run
from services.retention.subjects import resolve_subject_refs
from tests import pipeline
from tests.integration.test_retention import NOW, access, archive, prefix
from tests.pipeline import Person

__all__ = ["access", "prefix"]  # fixtures shared with test_retention

pytestmark = pytest.mark.integration

LONG_AGO = NOW - 10 * 365 * 86400  # expired under every retention class of the test policy


def message(person: Person, *, wa_id: str | None, user_id: str | None, ts: int) -> bytes:
    """An inbound text as Meta sends it once BSUIDs exist: the phone number, the user id, or both."""
    sender = {k: v for k, v in (("from", wa_id), ("from_user_id", user_id)) if v}
    contact = {k: v for k, v in (("wa_id", wa_id), ("user_id", user_id)) if v}
    return pipeline.envelope(
        person,
        "messages",
        {
            "contacts": [{"profile": {"name": "Test Person"}, **contact}],
            "messages": [
                {
                    **sender,
                    "id": f"wamid.{uuid.uuid4().hex}",
                    "timestamp": str(ts),
                    "type": "text",
                    "text": {"body": "hi"},
                }
            ],
        },
    )


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
