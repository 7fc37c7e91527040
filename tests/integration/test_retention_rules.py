"""Retention classes anchored on the last contact (CNIL guidance: prospects and customers are kept three years after
the last contact), against the real stack: a person who wrote again recently keeps their old records, a person who
did not loses them, and a delivery status is not a contact. The dry run says the same as the real run.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from mypy_boto3_s3 import S3Client

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from services.actions.access import ArchiveAccess
from services.core.index import binary_keys
from services.core.pseudonym import subject_ref
from services.governance.retention_run import retention_run
from tests.helpers.archive_runs import NOW, message

pytestmark = pytest.mark.integration

YEAR = 365 * 86400


def policy_file(tmp_path: Path, sales_number: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(
        "version: 1\n"
        "default_class: standard\n"
        f'categories: {{"{sales_number}": sales}}\n'
        "classes:\n"
        "  - name: prospects\n"
        "    keep_for: 3y\n"
        "    anchor: last_contact\n"
        "    match: {category: [sales]}\n"
        "  - name: standard\n"
        "    keep_for: 7y\n",
        encoding="utf-8",
    )
    return path


async def archive(demo_env: dict[str, str], pool: asyncpg.Pool, prefix: str, policy: Path, bodies: list[bytes]) -> None:
    """Through Kafka and one archiver that classifies with ``policy``: one batch object per call."""
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="retention-rules")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    events = pipeline.events_of(bodies)
    await pipeline.produce(bootstrap, topic, events)
    settings = pipeline.archiver_settings(demo_env, topic, dlq, prefix).model_copy(
        update={"retention_policy_file": policy}
    )
    async with pipeline.running_archiver(settings):
        await pipeline.wait_indexed(pool, {e.event_id for e in events})


async def object_of(pool: asyncpg.Pool, ref: str, at: int) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT o.object_key, o.expires_at, e.retention_class, e.anchor_last_contact FROM archived_events e"
        " JOIN archive_objects o USING (object_key) WHERE e.subject_ref = $1 AND e.event_time = $2",
        binary_keys([ref])[0],
        datetime.fromtimestamp(at, UTC),
    )
    assert row is not None
    return row


async def test_a_class_anchored_on_the_last_contact_keeps_what_a_later_contact_renews(
    demo_env: dict[str, str],
    pg_pool: asyncpg.Pool,
    prefix: str,
    access: ArchiveAccess,
    s3_client: S3Client,
    tmp_path: Path,
) -> None:
    returning = Person.fresh()
    policy = policy_file(tmp_path, returning.phone_number_id)
    silent = Person(returning.waba_id, returning.phone_number_id, "1" + pipeline.digits(10))
    only_status = Person(returning.waba_id, returning.phone_number_id, "1" + pipeline.digits(10))
    old, recent = NOW - 4 * YEAR, NOW - 30 * 86400
    # Four years ago, all three wrote (one object); since, only `returning` wrote again, and `only_status` was
    # merely delivered a message (a status is not a contact).
    await archive(
        demo_env,
        pg_pool,
        prefix,
        policy,
        [pipeline.text_message(p, f"wamid.{uuid.uuid4().hex}", "hello", old) for p in (returning,)],
    )
    await archive(demo_env, pg_pool, prefix, policy, [pipeline.text_message(silent, "wamid.S", "hello", old)])
    await archive(demo_env, pg_pool, prefix, policy, [pipeline.text_message(only_status, "wamid.Q", "hello", old)])
    await archive(
        demo_env,
        pg_pool,
        prefix,
        policy,
        [
            pipeline.text_message(returning, "wamid.R2", "me again", recent),
            pipeline.status(only_status, "wamid.Q2", "delivered", recent),
        ],
    )
    ref = {
        p.wa_id: subject_ref(access.pepper, returning.phone_number_id, p.wa_id)
        for p in (returning, silent, only_status)
    }
    renewed = await object_of(pg_pool, ref[returning.wa_id], old)
    gone_silent = await object_of(pg_pool, ref[silent.wa_id], old)
    gone_status = await object_of(pg_pool, ref[only_status.wa_id], old)
    assert (renewed["retention_class"], renewed["anchor_last_contact"]) == ("prospects", True)
    # Indexed with the expiry of its own time: already past.
    assert renewed["expires_at"] == datetime.fromtimestamp(old, UTC) + timedelta(days=3 * 365)

    dry = await retention_run(access.pool, access.bucket, dry_run=True)
    assert renewed["object_key"] not in dry.candidates
    assert {gone_silent["object_key"], gone_status["object_key"]} <= set(dry.candidates)
    assert dry.objects_deferred >= 1
    # A dry run changes nothing.
    assert (await object_of(pg_pool, ref[returning.wa_id], old))["expires_at"] == renewed["expires_at"]

    real = await retention_run(access.pool, access.bucket, dry_run=False)
    assert renewed["object_key"] not in real.candidates
    assert {gone_silent["object_key"], gone_status["object_key"]} <= set(real.candidates)
    s3_client.head_object(Bucket=access.bucket.name, Key=renewed["object_key"])
    for gone in (gone_silent, gone_status):
        assert (
            await pg_pool.fetchval("SELECT count(*) FROM archive_objects WHERE object_key = $1", gone["object_key"])
            == 0
        )
    # The kept object's expiry moved on to three years after the last contact: not a candidate again before then.
    moved = await object_of(pg_pool, ref[returning.wa_id], old)
    assert moved["expires_at"] == datetime.fromtimestamp(recent, UTC) + timedelta(days=3 * 365)
    again = await retention_run(access.pool, access.bucket, dry_run=True)
    assert renewed["object_key"] not in again.candidates


async def test_the_last_contact_is_the_persons_under_any_of_their_identifiers(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, tmp_path: Path
) -> None:
    """Four years ago the person wrote by phone number, and once with both their number and their business-scoped
    user id (which links the two); last month they wrote by user id only. Their old phone-number record is renewed
    by that message, although no record of that pseudonym is recent."""
    person = Person.fresh()
    policy = policy_file(tmp_path, person.phone_number_id)
    user_id = f"US.{uuid.uuid4().hex[:16]}"
    old, recent = NOW - 4 * YEAR, NOW - 30 * 86400
    await archive(
        demo_env,
        pg_pool,
        prefix,
        policy,
        [
            message(person, wa_id=person.wa_id, user_id=None, ts=old),
            message(person, wa_id=person.wa_id, user_id=user_id, ts=old + 60),
        ],
    )
    await archive(demo_env, pg_pool, prefix, policy, [message(person, wa_id=None, user_id=user_id, ts=recent)])
    by_number = subject_ref(access.pepper, person.phone_number_id, person.wa_id)
    kept = await object_of(pg_pool, by_number, old)
    assert kept["retention_class"] == "prospects"

    dry = await retention_run(access.pool, access.bucket, dry_run=True)
    assert kept["object_key"] not in dry.candidates
    await retention_run(access.pool, access.bucket, dry_run=False)
    moved = await object_of(pg_pool, by_number, old)
    assert moved["expires_at"] == datetime.fromtimestamp(recent, UTC) + timedelta(days=3 * 365)
