"""Erasure is final: nothing of an erased person from before the erasure becomes readable again, by any path.

Against the real stack: the person's webhooks are archived through ingest, the person is erased, then
- Meta redelivers the same signed webhooks (through ingest, as Meta would);
- the archiver's consumer group is reset: a new group consumes the topic from its earliest offset;
- an erasure commits while a batch of the person's is being written (between sealing and indexing);
- rebuild-index runs over the bucket.
After each, none of the person's pre-erasure messages is readable and each dropped record has a tombstone; a
bystander in the same batches is archived as usual, and a message the person sends after the erasure is new data,
archived and readable.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from datetime import datetime

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, end_offsets
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.archiver.metrics import ArchiverMetrics
from services.archiver.rebuild import rebuild_index
from services.archiver.sealing import RawRecord
from services.archiver.writer import BatchWriter
from services.core.bucket import ArchiveBucket
from services.core.crypto import DekCache, LocalKek
from services.core.events import Event
from services.core.index import binary_key, binary_keys
from services.core.kafka import AckedProducer
from services.core.keyring import Keyring
from services.core.retry import RetryPolicy
from services.core.schema import connect_pool
from services.core.settings import KafkaSettings
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.tools.replay import post_signed
from tests.helpers.erasure import erase, readable, tombstones
from tests.helpers.polling import wait_for

pytestmark = pytest.mark.integration

SECRET = b"erasure-final-secret"


@pytest.fixture
async def access(demo_env: dict[str, str]) -> AsyncIterator[ArchiveAccess]:
    opened = await open_access(pipeline.retention_settings(demo_env, f"test/final-{uuid.uuid4().hex[:8]}"))
    try:
        yield opened
    finally:
        await opened.close()


async def test_redelivery_and_replay_after_an_erasure_bring_nothing_back(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool, access: ArchiveAccess
) -> None:
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="final")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="final-dlq")
    prefix = access.bucket.settings.prefix
    person = Person.fresh()
    bystander = Person(person.waba_id, person.phone_number_id, "1" + pipeline.digits(10))
    sent_at = int(time.time()) - 3600
    before = [pipeline.text_message(person, f"wamid.BEFORE.{n}", f"before {n}", sent_at + n) for n in range(5)]
    others = [pipeline.text_message(bystander, f"wamid.OTHER.{n}", f"other {n}", sent_at + n) for n in range(3)]
    person_ids = [e.event_id for e in pipeline.events_of(before)]
    other_ids = {e.event_id for e in pipeline.events_of(others)}
    ingest = IngestApp(
        IngestSettings(
            app_secrets=[SecretStr(SECRET.decode())],
            verify_token=SecretStr("v"),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=topic),
        )
    )
    settings = pipeline.archiver_settings(demo_env, topic, dlq, prefix)
    async with serve_asgi(ingest) as url, httpx.AsyncClient(timeout=10) as client:
        await ingest.producer.wait_connected(20)

        async def deliver(bodies: list[bytes]) -> None:
            for body in bodies:
                assert await post_signed(client, f"{url}/webhooks/whatsapp", body, SECRET, attempts=1) == 200

        async with pipeline.running_archiver(settings):
            await deliver([*before, *others])
            await pipeline.wait_indexed(pg_pool, {*person_ids, *other_ids})
            assert len(await readable(access, person)) == 5
            await erase(access, person)
            assert await readable(access, person) == []

            # Meta redelivers the pre-erasure webhooks: received now, but they happened before the erasure.
            await deliver(before)
            await wait_for(lambda: _equals(tombstones(pg_pool, person_ids), len(person_ids)))
            # The person writes after the erasure: new data, a new key.
            after = pipeline.text_message(person, "wamid.AFTER", "hello again", int(time.time()) + 2)
            await deliver([after])
            await pipeline.wait_indexed(pg_pool, {e.event_id for e in pipeline.events_of([after])})
        assert await readable(access, person) == ["wamid.AFTER"]

        # The consumer group is reset: a new group reads the whole topic again, from its earliest offset.
        replay = pipeline.archiver_settings(demo_env, topic, dlq, prefix)
        assert replay.group_id != settings.group_id
        end = (await end_offsets(kafka_bootstrap, topic, 1))[0]
        async with pipeline.running_archiver(replay):
            await wait_for(lambda: _committed_to(kafka_bootstrap, replay.group_id, topic, end))
        assert await readable(access, person) == ["wamid.AFTER"]
        assert await tombstones(pg_pool, person_ids) == len(person_ids)

    # rebuild-index over everything written, the replays included.
    report = await rebuild_index(access.pool, access.bucket, access.policy, prefix=prefix)
    assert report.unreadable_objects == 0
    assert await readable(access, person) == ["wamid.AFTER"]
    rows = await pg_pool.fetchval(
        "SELECT count(*) FROM archived_events WHERE event_id = ANY($1::bytea[])", binary_keys(person_ids)
    )
    assert rows == 0, "no index row of a pre-erasure record comes back"


async def _equals(value: Awaitable[int], expected: int) -> bool:
    return await value == expected


async def _committed_to(bootstrap: str, group: str, topic: str, end: int) -> bool:
    return (await committed_offsets(bootstrap, group, topic, 1))[0] >= end


async def test_an_erasure_during_a_batch_drops_the_person_s_records_instead_of_sealing_them_again(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, access: ArchiveAccess
) -> None:
    person = Person.fresh()
    bystander = Person(person.waba_id, person.phone_number_id, "1" + pipeline.digits(10))
    sent_at = int(time.time()) - 600
    # The person has archived data (so a key) before the batch under test.
    first = pipeline.events_of([pipeline.text_message(person, "wamid.FIRST", "first", sent_at)])
    events = pipeline.events_of(
        [
            pipeline.text_message(person, "wamid.RACE.1", "being written", sent_at + 1),
            pipeline.text_message(bystander, "wamid.RACE.2", "not erased", sent_at + 2),
            pipeline.text_message(person, "wamid.RACE.3", "being written too", sent_at + 3),
        ]
    )
    registry = CollectorRegistry()
    metrics = ArchiverMetrics(registry)
    dlq = AckedProducer(KafkaSettings(bootstrap_servers=f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"))
    # The writer as the archiver runs it: its role, its write-only S3 identity; the erasure and the reads are
    # retention's (``access``), on the same prefix.
    archiver = pipeline.archiver_settings(demo_env, "unused", "unused", access.bucket.settings.prefix)
    pool = await connect_pool(archiver.pg.dsn.get_secret_value())
    bucket = ArchiveBucket(archiver.s3)
    writer = BatchWriter(
        topic="test.final.race",
        dlq_topic="test.final.race.dlq",
        bucket=bucket,
        pool=pool,
        keyring=Keyring(pool, LocalKek(archiver.keys.kek_bytes(), archiver.keys.current_kek_id), DekCache(100)),
        pepper=access.pepper,
        dlq=dlq,
        metrics=metrics,
        retry=RetryPolicy(initial_s=0.01, max_s=0.1),
    )
    try:
        await race(writer, bucket, access, pg_pool, person, first, events, registry)
    finally:
        await pool.close()


async def race(
    writer: BatchWriter,
    bucket: ArchiveBucket,
    access: ArchiveAccess,
    pg_pool: asyncpg.Pool,
    person: Person,
    first: list[Event],
    events: list[Event],
    registry: CollectorRegistry,
) -> None:
    now_ms = int(time.time() * 1000)
    await writer.write(
        0, [RawRecord(partition=0, offset=0, timestamp_ms=now_ms, key=e.key(), value=e.to_json()) for e in first]
    )
    assert await readable(access, person) == ["wamid.FIRST"]

    # The erasure commits after the batch was sealed with the person's key, before its index transaction.
    real_put = bucket.put
    erased_during: list[bool] = []

    async def put_then_erase(
        key: str, body: bytes, *, now: datetime | None = None, locked: bool = True
    ) -> datetime | None:
        until = await real_put(key, body, now=now, locked=locked)
        if not erased_during and key.endswith(".waarc") and "/media/" not in key:
            await erase(access, person)
            erased_during.append(True)
        return until

    bucket.put = put_then_erase  # type: ignore[method-assign]
    try:
        outcome = await writer.write(
            0,
            [
                RawRecord(partition=0, offset=n + 1, timestamp_ms=now_ms, key=e.key(), value=e.to_json())
                for n, e in enumerate(events)
            ],
        )
    finally:
        bucket.put = real_put  # type: ignore[method-assign]
    assert erased_during, "the erasure ran while the batch was being written"
    assert outcome.archived == 1
    assert outcome.erased_dropped == 2
    assert await readable(access, person) == []
    assert await tombstones(pg_pool, [events[0].event_id, events[2].event_id]) == 2
    bystander_rows = await pg_pool.fetchval(
        "SELECT count(*) FROM archived_events WHERE event_id = $1", binary_key(events[1].event_id)
    )
    assert bystander_rows == 1
    assert "wa_archiver_erased_records_dropped_total 2.0" in _metrics(registry)


def _metrics(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode()
