"""Driving the real pipeline, for the tests and the benchmarks: synthetic webhooks for fresh people, produce,
archive, wait.

Synthetic webhooks follow Meta's shapes (see tests/data/whatsapp) with random business numbers and
contacts, so runs never collide with one another or with earlier runs in the same database.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import secrets
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from services.archiver.service import run_archiver
from services.archiver.settings import ArchiverSettings, FlushSettings, GraphSettings, MediaSettings
from services.core.events import Event, decode_webhook, parse_webhook, webhook_scope
from services.core.index import binary_keys
from services.core.journal import split_record, webhook_record
from services.core.kafka import AckedProducer, OutgoingRecord
from services.core.settings import KafkaSettings, KeySettings, PostgresSettings, S3Settings
from services.retention.settings import AdminToken, RetentionSettings
from services.tools.loadgen import webhook_body


def digits(n: int) -> str:
    return "".join(random.choice("0123456789") for _ in range(n))


@dataclass(frozen=True)
class Person:
    waba_id: str
    phone_number_id: str
    wa_id: str

    @classmethod
    def fresh(cls) -> Person:
        return cls(digits(15), digits(15), "1" + digits(10))


def envelope(person: Person, field: str, value: dict[str, Any]) -> bytes:
    return webhook_body(person.waba_id, person.phone_number_id, value, field=field)


def number_change(person: Person, new_wa_id: str, ts: int) -> bytes:
    """The ``system`` message Meta sends from the old number when a customer changes number (no ``contacts``)."""
    return envelope(
        person,
        "messages",
        {
            "messages": [
                {
                    "from": person.wa_id,
                    "id": f"wamid.{uuid.uuid4().hex}",
                    "timestamp": str(ts),
                    "system": {"body": "User changed number", "wa_id": new_wa_id, "type": "user_changed_number"},
                    "type": "system",
                }
            ]
        },
    )


def text_message(person: Person, wamid: str, body: str, ts: int) -> bytes:
    return envelope(
        person,
        "messages",
        {
            "contacts": [{"profile": {"name": "Test Person"}, "wa_id": person.wa_id}],
            "messages": [
                {"from": person.wa_id, "id": wamid, "timestamp": str(ts), "type": "text", "text": {"body": body}}
            ],
        },
    )


def revoke(person: Person, wamid: str, original: str, ts: int) -> bytes:
    return envelope(
        person,
        "messages",
        {
            "contacts": [{"profile": {"name": "Test Person"}, "wa_id": person.wa_id}],
            "messages": [
                {
                    "from": person.wa_id,
                    "id": wamid,
                    "timestamp": str(ts),
                    "type": "revoke",
                    "revoke": {"original_message_id": original},
                }
            ],
        },
    )


def edit(person: Person, wamid: str, original: str, body: str, ts: int) -> bytes:
    return envelope(
        person,
        "messages",
        {
            "messages": [
                {
                    "from": person.wa_id,
                    "id": wamid,
                    "timestamp": str(ts),
                    "type": "edit",
                    "edit": {"original_message_id": original, "message": {"type": "text", "text": {"body": body}}},
                }
            ],
        },
    )


def image(person: Person, wamid: str, ts: int, **image: str) -> bytes:
    """An inbound image message; ``image`` is its object (id, mime_type, sha256, caption)."""
    return envelope(
        person,
        "messages",
        {
            "contacts": [{"profile": {"name": "Test Person"}, "wa_id": person.wa_id}],
            "messages": [
                {"from": person.wa_id, "id": wamid, "timestamp": str(ts), "type": "image", "image": dict(image)}
            ],
        },
    )


def status(person: Person, wamid: str, state: str, ts: int) -> bytes:
    return envelope(
        person,
        "messages",
        {"statuses": [{"id": wamid, "status": state, "timestamp": str(ts), "recipient_id": person.wa_id}]},
    )


def echo(person: Person, wamid: str, body: str, ts: int) -> bytes:
    return envelope(
        person,
        "smb_message_echoes",
        {
            "message_echoes": [
                {
                    "from": "15550001111",
                    "to": person.wa_id,
                    "id": wamid,
                    "timestamp": str(ts),
                    "type": "text",
                    "text": {"body": body},
                }
            ]
        },
    )


def events_of(bodies: Sequence[bytes]) -> list[Event]:
    found: list[Event] = []
    for body in bodies:
        found.extend(
            parse_webhook(
                body,
                raw_sha256=hashlib.sha256(body).hexdigest(),
                signature="sha256=test",
                received_at="2026-11-25T00:00:00.000Z",
            )
        )
    return found


async def produce(bootstrap: str, topic: str, events: Sequence[Event]) -> None:
    producer = AckedProducer(KafkaSettings(bootstrap_servers=bootstrap, events_topic=topic))
    await producer.start()
    try:
        await producer.wait_connected(20)
        await producer.produce([OutgoingRecord(topic, e.key(), e.to_json()) for e in events], deadline_s=30)
    finally:
        await producer.stop()


def journaled_events(records: Sequence[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]) -> list[Event]:
    """The events the archiver splits out of events-topic records ``(key, value, headers)``, in order."""
    events: list[Event] = []
    for _key, value, headers in records:
        split = split_record(value, headers)
        assert split.fault is None, split.fault
        events.extend(split.events)
    return events


async def produce_posts(bootstrap: str, topic: str, bodies: Sequence[bytes]) -> None:
    """Journal ``bodies`` as ingest does: one ``webhook/1`` record per POST, keyed by its business number."""
    producer = AckedProducer(KafkaSettings(bootstrap_servers=bootstrap, events_topic=topic))
    await producer.start()
    try:
        await producer.wait_connected(20)
        records = [
            webhook_record(
                topic,
                webhook_scope(decode_webhook(body))[0],
                body,
                signature="sha256=test",
                received_at="2026-11-25T00:00:00.000Z",
            )
            for body in bodies
        ]
        await producer.produce(records, deadline_s=30)
    finally:
        await producer.stop()


def key_settings(demo_env: dict[str, str]) -> KeySettings:
    keks = orjson.loads(demo_env["WA_ARCHIVER_KEYS__KEKS"])
    return KeySettings(
        keks={k: SecretStr(v) for k, v in keks.items()},
        current_kek_id=demo_env["WA_ARCHIVER_KEYS__CURRENT_KEK_ID"],
        pepper=SecretStr(demo_env["WA_ARCHIVER_KEYS__PEPPER"]),
    )


def s3_settings(demo_env: dict[str, str], prefix: str, service: str = "ARCHIVER") -> S3Settings:
    """The archive bucket under ``prefix``, with the S3 identity of ``service`` (ARCHIVER, RETENTION, CONSOLE)."""
    return S3Settings(
        endpoint_url=demo_env["WA_ARCHIVER_S3__ENDPOINT_URL"],
        access_key=demo_env[f"WA_{service}_S3__ACCESS_KEY"],
        secret_key=SecretStr(demo_env[f"WA_{service}_S3__SECRET_KEY"]),
        bucket=demo_env["WA_ARCHIVER_S3__BUCKET"],
        prefix=prefix,
    )


def archiver_settings(
    demo_env: dict[str, str],
    topic: str,
    dlq_topic: str,
    prefix: str,
    *,
    graph: GraphSettings | None = None,
    media: MediaSettings | None = None,
) -> ArchiverSettings:
    return ArchiverSettings(
        port=0,
        group_id=f"test-archiver-{uuid.uuid4().hex[:8]}",
        kafka=KafkaSettings(
            bootstrap_servers=f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}", events_topic=topic, dlq_topic=dlq_topic
        ),
        s3=s3_settings(demo_env, prefix),
        pg=PostgresSettings(dsn=SecretStr(demo_env["WA_ARCHIVER_PG__DSN"])),
        keys=key_settings(demo_env),
        graph=graph or GraphSettings(),
        media=media or MediaSettings(),
        flush=FlushSettings(max_records=50, max_age_s=0.5),
        retry_initial_s=0.05,
        retry_max_s=0.5,
    )


# The admin tokens of retention_settings: drawn at random, so that no token the tests use is published.
READER_TOKEN = secrets.token_urlsafe(24)
DPO_TOKEN = secrets.token_urlsafe(24)
SECOND_DPO_TOKEN = secrets.token_urlsafe(24)  # "test-dpo-2": four eyes need a second DPO


def retention_settings(demo_env: dict[str, str], prefix: str) -> RetentionSettings:
    return RetentionSettings(
        port=0,
        ops_port=0,
        s3=s3_settings(demo_env, prefix, "RETENTION"),
        pg=PostgresSettings(dsn=SecretStr(demo_env["WA_RETENTION_PG__DSN"])),
        keys=key_settings(demo_env),
        admin_tokens={
            "test-reader": AdminToken(token=SecretStr(READER_TOKEN), role="reader"),
            "test-dpo": AdminToken(token=SecretStr(DPO_TOKEN), role="dpo"),
            "test-dpo-2": AdminToken(token=SecretStr(SECOND_DPO_TOKEN), role="dpo"),
        },
        operator="test-operator",
        run_interval_s=0,
    )


@contextlib.asynccontextmanager
async def running_archiver(
    settings: ArchiverSettings, registry: CollectorRegistry | None = None
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_archiver(settings, stop, registry=registry or CollectorRegistry()))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 60)


async def wait_indexed(pool: asyncpg.Pool, event_ids: set[str], timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    count = 0
    keys = binary_keys(event_ids)
    while time.monotonic() < deadline:
        count = await pool.fetchval("SELECT count(*) FROM archived_events WHERE event_id = ANY($1::bytea[])", keys)
        if count == len(event_ids):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"only {count} of {len(event_ids)} events indexed after {timeout_s}s")


async def archive_bodies(
    demo_env: dict[str, str], pool: asyncpg.Pool, topic: str, dlq_topic: str, prefix: str, bodies: Sequence[bytes]
) -> list[Event]:
    """Produce the webhooks' events and run an archiver until every one is indexed."""
    events = events_of(bodies)
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    await produce(bootstrap, topic, events)
    async with running_archiver(archiver_settings(demo_env, topic, dlq_topic, prefix)):
        await wait_indexed(pool, {e.event_id for e in events})
    return events
