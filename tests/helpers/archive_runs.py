"""Archiving webhooks through the real pipeline for a test: the crisis of one person, a BSUID-era message, the
audit rows of a subject."""

from __future__ import annotations

import time
import uuid

import asyncpg

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person

NOW = int(time.time())


async def archive(demo_env: dict[str, str], pool: asyncpg.Pool, prefix: str, bodies: list[bytes]) -> list[str]:
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="retention")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    events = await pipeline.archive_bodies(demo_env, pool, topic, dlq, prefix, bodies)
    return [e.event_id for e in events]


def crisis_bodies(person: Person) -> list[bytes]:
    t = NOW - 3600
    return [
        pipeline.text_message(person, "wamid.M1", "the refund is approved, ref 4711", t),
        pipeline.status(person, "wamid.M1", "read", t + 5),
        pipeline.revoke(person, "wamid.R1", "wamid.M1", t + 60),
        pipeline.text_message(person, "wamid.M2", "call me at 10", t + 100),
        pipeline.edit(person, "wamid.E2", "wamid.M2", "call me at 11", t + 120),
        pipeline.echo(person, "wamid.B1", "we will ship tomorrow", t + 200),
        pipeline.envelope(
            person,
            "smb_message_echoes",
            {
                "message_echoes": [
                    {
                        "from": "15550001111",
                        "to": person.wa_id,
                        "id": "wamid.BR1",
                        "timestamp": str(t + 260),
                        "type": "revoke",
                        "revoke": {"original_message_id": "wamid.B1"},
                    }
                ]
            },
        ),
        pipeline.text_message(person, "wamid.M3", "status-deleted message", t + 300),
        pipeline.status(person, "wamid.M3", "deleted", t + 330),
    ]


async def audit_rows(pool: asyncpg.Pool, subject_refs: list[str]) -> list[asyncpg.Record]:
    return await pool.fetch(
        "SELECT actor, action, reason, record_count FROM audit_log"
        " WHERE subject_ref = ANY($1::text[]) ORDER BY audit_id",
        subject_refs,
    )


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
