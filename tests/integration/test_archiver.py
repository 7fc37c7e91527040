"""ingest → Kafka → archiver → S3 + PostgreSQL with the real servers, then read back byte for byte."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
import httpx
import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, generate_latest
from pydantic import SecretStr

from services.archiver.service import run_archiver
from services.archiver.settings import ArchiverSettings, FlushSettings
from services.core.bucket import ArchiveBucket
from services.core.crypto import DekCache, LocalKek
from services.core.events import Event, parse_webhook
from services.core.keyring import Keyring
from services.core.pseudonym import message_ref
from services.core.reader import ArchiveReader, RecordLocation
from services.core.schema import connect_pool
from services.core.settings import KafkaSettings, KeySettings, PostgresSettings, S3Settings
from services.ingest.app import IngestApp
from services.ingest.replay import load_bodies, post_signed
from services.ingest.settings import IngestSettings
from tests.support import create_topic, payloads_dir, read_topic, serve_asgi

pytestmark = pytest.mark.integration

SECRET = b"archiver-it-secret"


@dataclass
class Pipeline:
    topic: str
    dlq_topic: str
    settings: ArchiverSettings
    registry: CollectorRegistry


def archiver_settings(demo_env: dict[str, str], topic: str, dlq_topic: str, prefix: str) -> ArchiverSettings:
    return ArchiverSettings(
        port=0,
        group_id=f"test-archiver-{uuid.uuid4().hex[:8]}",
        kafka=KafkaSettings(bootstrap_servers="127.0.0.1:9092", events_topic=topic, dlq_topic=dlq_topic),
        s3=S3Settings(
            endpoint_url=demo_env["WA_ARCHIVER_S3__ENDPOINT_URL"],
            access_key=demo_env["WA_ARCHIVER_S3__ACCESS_KEY"],
            secret_key=SecretStr(demo_env["WA_ARCHIVER_S3__SECRET_KEY"]),
            bucket=demo_env["WA_ARCHIVER_S3__BUCKET"],
            prefix=prefix,
        ),
        pg=PostgresSettings(dsn=SecretStr(demo_env["WA_ARCHIVER_PG__DSN"])),
        keys=KeySettings(
            keks={"local-2026": SecretStr(orjson.loads(demo_env["WA_ARCHIVER_KEYS__KEKS"])["local-2026"])},
            current_kek_id="local-2026",
            pepper=SecretStr(demo_env["WA_ARCHIVER_KEYS__PEPPER"]),
        ),
        flush=FlushSettings(max_records=50, max_age_s=0.5),
        retry_initial_s=0.05,
        retry_max_s=0.5,
    )


@contextlib.asynccontextmanager
async def running_archiver(settings: ArchiverSettings, registry: CollectorRegistry) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_archiver(settings, stop, registry=registry))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def wait_indexed(pool: asyncpg.Pool, event_ids: set[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    count = 0
    while time.monotonic() < deadline:
        count = await pool.fetchval(
            "SELECT count(*) FROM archived_events WHERE event_id = ANY($1::text[])", list(event_ids)
        )
        if count == len(event_ids):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"only {count} of {len(event_ids)} events indexed after {timeout_s}s")


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


@pytest.fixture
async def pipeline(kafka_bootstrap: str, demo_env: dict[str, str]) -> Pipeline:
    topic = await create_topic(kafka_bootstrap, prefix="archiver")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="dlq")
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    return Pipeline(topic, dlq, archiver_settings(demo_env, topic, dlq, prefix), CollectorRegistry())


async def test_every_sample_payload_is_archived_and_reads_back_byte_for_byte(
    kafka_bootstrap: str, pg_pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    ingest = IngestApp(
        IngestSettings(
            app_secrets=[SecretStr(SECRET.decode())],
            verify_token=SecretStr("v"),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=pipeline.topic),
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
    produced = {
        orjson.loads(v)["event_id"]: v for _k, v in await read_topic(kafka_bootstrap, pipeline.topic, len(expected))
    }
    assert len(produced) == len({e.event_id for e in expected})

    async with running_archiver(pipeline.settings, pipeline.registry):
        await wait_indexed(pg_pool, set(produced))
        # Offsets are committed once the batches are durable.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            committed = await committed_offsets(kafka_bootstrap, pipeline.settings.group_id, pipeline.topic, 3)
            if sum(committed.values()) == len(produced):
                break
            await asyncio.sleep(0.2)
        assert sum(committed.values()) == len(produced)

    rows = await pg_pool.fetch(
        "SELECT event_id, object_key, record_index, kind, message_ref, original_message_ref, subject_ref "
        "FROM archived_events WHERE event_id = ANY($1::text[])",
        list(produced),
    )
    assert all(row["object_key"].startswith(pipeline.settings.s3.prefix + "/") for row in rows)
    keys = pipeline.settings.keys
    pool = await connect_pool(pipeline.settings.pg.dsn.get_secret_value())
    try:
        keyring = Keyring(pool, LocalKek(keys.kek_bytes(), keys.current_kek_id), DekCache(1000))
        reader = ArchiveReader(ArchiveBucket(pipeline.settings.s3), keyring)
        opened = await reader.open([RecordLocation(r["event_id"], r["object_key"], r["record_index"]) for r in rows])
    finally:
        await pool.close()
    assert opened == produced  # every archived record is the exact Kafka value, byte for byte

    # Deletions and edits are linked to the message they concern.
    pepper = keys.pepper_bytes()
    linked = {e.event_id: e for e in expected if e.original_message_id is not None}
    assert linked, "the sample payloads include revokes, edits and a deleted status"
    by_id = {row["event_id"]: row for row in rows}
    for event_id, event in linked.items():
        assert by_id[event_id]["original_message_ref"] == message_ref(pepper, event.original_message_id or "")
    # Object keys and index rows hold pseudonyms only: no wa_id, no wamid.
    for row in rows:
        assert "wamid" not in row["object_key"]
        assert "16505551234" not in row["object_key"]
        assert row["message_ref"] is None or not row["message_ref"].startswith("wamid")
    metrics = generate_latest(pipeline.registry).decode()
    assert "wa_archiver_events_archived_total" in metrics
    assert 'wa_archive_last_success_timestamp_seconds{phone_number_id="106540352242922"}' in metrics


async def test_poison_record_goes_to_the_dead_letter_topic_and_is_committed(
    kafka_bootstrap: str, pg_pool: asyncpg.Pool, pipeline: Pipeline
) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        await producer.send_and_wait(pipeline.topic, b"this is not an envelope", key=b"k", partition=0)
    finally:
        await producer.stop()
    async with running_archiver(pipeline.settings, pipeline.registry):
        dead = await read_topic(kafka_bootstrap, pipeline.dlq_topic, 1, partitions=1)
        deadline = time.monotonic() + 20
        committed = {}
        while time.monotonic() < deadline:
            committed = await committed_offsets(kafka_bootstrap, pipeline.settings.group_id, pipeline.topic, 3)
            if committed[0] == 1:
                break
            await asyncio.sleep(0.2)
    assert dead == [(b"k", b"this is not an envelope")]
    assert committed[0] == 1
    assert "wa_archiver_dead_letters_total" in generate_latest(pipeline.registry).decode()


async def test_auto_commit_is_refused_at_start_up(demo_env: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="at-most-once"):
        ArchiverSettings(
            keys=archiver_settings(demo_env, "t", "d", "p").keys,
            consumer_options={"enable.auto.commit": "true"},
        )
