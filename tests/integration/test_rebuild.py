"""rebuild-index over objects whose records carry event times at the limits the splitter accepts.

The archiver and ``rebuild-index`` make index rows through one function (services.core.index.index_row): the
rebuilt rows must equal the written ones, and a timestamp beyond the calendar must not abort the rebuild.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from services.archiver.rebuild import rebuild_index
from services.core.index import binary_keys
from services.core.policy import DEFAULT_POLICY
from services.retention.access import open_access
from tests import pipeline
from tests.support import create_topic

pytestmark = pytest.mark.integration

# Strings of up to 18 digits and integers up to 2**63 - 1 are Meta timestamps to the splitter.
LIMITS: list[Any] = [0, "1", "1099511627776", "253402300799", "253402300800", "9" * 18, 2**63 - 1, "1760000000"]
COLUMNS = (
    "encode(event_id, 'hex') AS event_id, encode(subject_ref, 'hex') AS subject_ref, dek_id::text, waba_id,"
    " phone_number_id, kind, type, encode(message_ref, 'hex') AS message_ref,"
    " encode(original_message_ref, 'hex') AS original_message_ref, event_time, received_at, object_key,"
    " record_index, kafka_partition, kafka_offset, retention_class, expires_at"
)


def message(person: pipeline.Person, wamid: str, timestamp: Any) -> bytes:
    return pipeline.envelope(
        person,
        "messages",
        {
            "contacts": [{"profile": {"name": "Test Person"}, "wa_id": person.wa_id}],
            "messages": [
                {"from": person.wa_id, "id": wamid, "timestamp": timestamp, "type": "text", "text": {"body": "t"}}
            ],
        },
    )


async def test_rebuild_index_at_the_splitter_s_timestamp_limits(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="rebuild")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="rebuild-dlq")
    prefix = f"test/rebuild-{uuid.uuid4().hex[:8]}"
    person = pipeline.Person.fresh()
    bodies = [message(person, f"wamid.limit.{n}", timestamp) for n, timestamp in enumerate(LIMITS)]
    events = await pipeline.archive_bodies(demo_env, pg_pool, topic, dlq, prefix, bodies)
    assert len(events) == len(LIMITS)
    ids = [e.event_id for e in events]
    query = f"SELECT {COLUMNS} FROM archived_events WHERE event_id = ANY($1::bytea[]) ORDER BY event_id"
    written = [dict(row) for row in await pg_pool.fetch(query, binary_keys(ids))]
    assert len(written) == len(LIMITS)
    assert sum(1 for row in written if row["event_time"] is None) == 0, "the receipt time stands in"

    await pg_pool.execute("DELETE FROM archived_events WHERE event_id = ANY($1::bytea[])", binary_keys(ids))
    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        report = await rebuild_index(access.pool, access.bucket, DEFAULT_POLICY, prefix=prefix)
    finally:
        await access.close()
    assert report.unreadable_objects == 0
    assert report.events == len(LIMITS)
    rebuilt = [dict(row) for row in await pg_pool.fetch(query, binary_keys(ids))]
    assert rebuilt == written
