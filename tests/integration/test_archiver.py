"""ingest → Kafka → archiver → S3 + PostgreSQL with the real servers, then read back byte for byte."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
import uuid
from dataclasses import dataclass

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, read_records, read_topic
from devtools.samples import payloads_dir
from devtools.serving import serve_asgi
from services.archiver.settings import ArchiverSettings
from services.core.bucket import ArchiveBucket
from services.core.crypto import DekCache, LocalKek
from services.core.events import Event, parse_webhook
from services.core.index import binary_keys
from services.core.keyring import Keyring
from services.core.pseudonym import group_ref, message_ref
from services.core.reader import ArchiveReader, RecordLocation
from services.core.schema import connect_pool
from services.core.settings import KafkaSettings
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.tools.replay import load_bodies, post_signed

pytestmark = pytest.mark.integration

SECRET = b"archiver-it-secret"


@dataclass
class Pipeline:
    topic: str
    dlq_topic: str
    settings: ArchiverSettings
    registry: CollectorRegistry


@pytest.fixture
async def pipe(kafka_bootstrap: str, demo_env: dict[str, str]) -> Pipeline:
    topic = await create_topic(kafka_bootstrap, prefix="archiver")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="dlq")
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    return Pipeline(topic, dlq, pipeline.archiver_settings(demo_env, topic, dlq, prefix), CollectorRegistry())


async def test_every_sample_payload_is_archived_and_reads_back_byte_for_byte(
    kafka_bootstrap: str, pg_pool: asyncpg.Pool, pipe: Pipeline, demo_env: dict[str, str]
) -> None:
    ingest = IngestApp(
        IngestSettings(
            app_secrets=[SecretStr(SECRET.decode())],
            verify_token=SecretStr("v"),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=pipe.topic),
        )
    )
    bodies = load_bodies([payloads_dir()])
    expected: list[Event] = []
    async with serve_asgi(ingest) as url, httpx.AsyncClient(timeout=10) as client:
        await ingest.producer.wait_connected(20)
        for name, body in bodies:
            assert await post_signed(client, f"{url}/webhooks/whatsapp", body, SECRET, attempts=1) == 200, name
            expected.extend(
                parse_webhook(body, raw_sha256=hashlib.sha256(body).hexdigest(), signature=None, received_at="-")
            )
    records = await read_records(kafka_bootstrap, pipe.topic, len(bodies))
    assert len(records) == len(bodies), "one journal record per POST"
    # What the archiver seals for each event: its envelope, split out of the journaled POST.
    produced = {e.event_id: e.to_json() for e in pipeline.journaled_events(records)}
    assert set(produced) == {e.event_id for e in expected}

    async with pipeline.running_archiver(pipe.settings, pipe.registry):
        await pipeline.wait_indexed(pg_pool, set(produced))
        # Offsets are committed once the batches are durable.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            committed = await committed_offsets(kafka_bootstrap, pipe.settings.group_id, pipe.topic, 3)
            if sum(committed.values()) == len(records):
                break
            await asyncio.sleep(0.2)
        assert sum(committed.values()) == len(records)

    rows = await pg_pool.fetch(
        "SELECT encode(event_id, 'hex') AS event_id, object_key, record_index, kind,"
        " encode(message_ref, 'hex') AS message_ref, encode(original_message_ref, 'hex') AS original_message_ref,"
        " encode(subject_ref, 'hex') AS subject_ref, encode(group_ref, 'hex') AS group_ref"
        " FROM archived_events WHERE event_id = ANY($1::bytea[])",
        binary_keys(produced),
    )
    assert all(row["object_key"].startswith(pipe.settings.s3.prefix + "/") for row in rows)
    keys = pipe.settings.keys
    # Read back as retention reads (the archiver's S3 identity may only write).
    readers = pipeline.retention_settings(demo_env, pipe.settings.s3.prefix)
    pool = await connect_pool(readers.pg.dsn.get_secret_value())
    try:
        keyring = Keyring(pool, LocalKek(keys.kek_bytes(), keys.current_kek_id), DekCache(1000))
        reader = ArchiveReader(ArchiveBucket(readers.s3), keyring)
        opened = await reader.open([RecordLocation(r["event_id"], r["object_key"], r["record_index"]) for r in rows])
    finally:
        await pool.close()
    assert opened == produced  # every archived record is its event's envelope, byte for byte

    # Deletions and edits are linked to the message they concern.
    pepper = keys.pepper_bytes()
    linked = {e.event_id: e for e in expected if e.original_message_id is not None}
    assert linked, "the sample payloads include revokes, edits and a deleted status"
    by_id = {row["event_id"]: row for row in rows}
    for event_id, event in linked.items():
        assert by_id[event_id]["original_message_ref"] == message_ref(pepper, event.original_message_id or "")
    # A group's events are indexed under its pseudonym (the samples' group messages, statuses, participants and
    # updates), every other event under none.
    groups = {e.event_id: e.group_id for e in expected}
    assert any(groups.values()), "the sample payloads include Cloud API groups"
    for row in rows:
        group = groups[row["event_id"]]
        assert row["group_ref"] == (group_ref(pepper, group) if group else None)
    # Object keys and index rows hold pseudonyms only: no wa_id, no wamid, no group id.
    for row in rows:
        assert "wamid" not in row["object_key"]
        assert "16505551234" not in row["object_key"]
        assert row["message_ref"] is None or not row["message_ref"].startswith("wamid")
        assert not any(group in row["object_key"] for group in groups.values() if group)
    metrics = generate_latest(pipe.registry).decode()
    assert "wa_archiver_events_archived_total" in metrics
    assert 'wa_archive_last_success_timestamp_seconds{phone_number_id="106540352242922"}' in metrics


async def test_poison_record_goes_to_the_dead_letter_topic_and_is_committed(
    kafka_bootstrap: str, pg_pool: asyncpg.Pool, pipe: Pipeline
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(pipe.topic, b"this is not an envelope", key=b"k", partition=0)
    finally:
        await producer.stop()
    async with pipeline.running_archiver(pipe.settings, pipe.registry):
        dead = await read_topic(kafka_bootstrap, pipe.dlq_topic, 1, partitions=1)
        deadline = time.monotonic() + 20
        committed = {}
        while time.monotonic() < deadline:
            committed = await committed_offsets(kafka_bootstrap, pipe.settings.group_id, pipe.topic, 3)
            if committed[0] == 1:
                break
            await asyncio.sleep(0.2)
    assert dead == [(b"k", b"this is not an envelope")]
    assert committed[0] == 1
    assert "wa_archiver_dead_letters_total" in generate_latest(pipe.registry).decode()


async def test_auto_commit_is_refused_at_start_up(demo_env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="at-most-once"):
        ArchiverSettings(
            keys=pipeline.key_settings(demo_env),
            consumer_options={"enable.auto.commit": "true"},
        )


async def test_a_post_larger_than_the_fetch_bound_is_archived_with_those_after_it(
    kafka_bootstrap: str, pg_pool: asyncpg.Pool, pipe: Pipeline
) -> None:
    """The consumer's fetches are bounded per partition (memory), while ingest journals POSTs of up to 4 MiB:
    Kafka returns a record larger than the bound whole, alone, and the records behind it come after."""
    person = pipeline.Person.fresh()
    # Random text: lz4 cannot shrink it, so the record stays larger than the bound on the wire too.
    big = pipeline.envelope(
        person,
        "messages",
        {
            "contacts": [{"profile": {"name": "Test Person"}, "wa_id": person.wa_id}],
            "messages": [
                {
                    "from": person.wa_id,
                    "id": f"wamid.BIG{n:04d}{uuid.uuid4().hex}",
                    "timestamp": str(1_760_000_000 + n),
                    "type": "text",
                    "text": {"body": secrets.token_urlsafe(3_000)},
                }
                for n in range(300)
            ],
        },
    )
    assert len(big) > 4 * pipe.settings.max_partition_fetch_bytes
    after = [
        pipeline.text_message(person, f"wamid.AFTER{uuid.uuid4().hex}", "after", 1_760_001_000 + n) for n in range(3)
    ]
    bodies = [pipeline.text_message(person, f"wamid.BEFORE{uuid.uuid4().hex}", "before", 1_759_999_000), big, *after]
    await pipeline.produce_posts(kafka_bootstrap, pipe.topic, bodies)
    events = pipeline.events_of(bodies)
    async with pipeline.running_archiver(pipe.settings, pipe.registry):
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
    assert len(events) == 304
