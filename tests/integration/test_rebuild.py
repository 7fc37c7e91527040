"""rebuild-index over objects whose records carry event times at the limits the splitter accepts, and with the
keys, restoring what only the records' content says (groups, keyword tokens, number changes).

The archiver and ``rebuild-index`` make index rows through one function (services.core.index.index_row): the
rebuilt rows must equal the written ones, and a timestamp beyond the calendar must not abort the rebuild.
"""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest

from devtools import pipeline
from devtools.broker import create_topic
from services.actions.access import open_access
from services.archiver.rebuild import RecordKeys, rebuild_index
from services.core.index import binary_keys
from services.core.policy import DEFAULT_POLICY
from services.core.pseudonym import subject_ref
from tests.helpers.erasure import erase
from tests.helpers.groups import Group

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


async def fresh_archive(kafka_bootstrap: str, name: str) -> tuple[str, str, str]:
    """A topic, its dead-letter topic and a bucket prefix of this test's own."""
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix=name)
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix=f"{name}-dlq")
    return topic, dlq, f"test/{name}-{uuid.uuid4().hex[:8]}"


async def test_rebuild_index_at_the_splitter_s_timestamp_limits(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    topic, dlq, prefix = await fresh_archive(kafka_bootstrap, "rebuild")
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


async def index_of(pool: asyncpg.Pool, keys: list[str], first: str) -> dict[str, Any]:
    """What rebuild-index must give back for these objects: index rows with their groups, keyword rows, the
    number change kept for ``first``."""
    return {
        "events": sorted(
            tuple(row)
            for row in await pool.fetch(
                f"SELECT {COLUMNS}, encode(group_ref, 'hex') AS group_ref FROM archived_events"
                " WHERE object_key = ANY($1::text[])",
                keys,
            )
        ),
        "keywords": sorted(
            (row["object_key"], bytes(row["subject_ref"]).hex(), tuple(row["tokens"]))
            for row in await pool.fetch("SELECT * FROM keyword_index WHERE object_key = ANY($1::text[])", keys)
        ),
        "changes": [
            row["since"] for row in await pool.fetch("SELECT since FROM number_holders WHERE number_ref = $1", first)
        ],
    }


async def forget(pool: asyncpg.Pool, keys: list[str], first: str) -> None:
    """A lost index: the objects' rows, their keyword tokens, the number change."""
    await pool.execute("DELETE FROM archived_events WHERE object_key = ANY($1::text[])", keys)
    await pool.execute("DELETE FROM keyword_index WHERE object_key = ANY($1::text[])", keys)
    await pool.execute("DELETE FROM number_holders WHERE number_ref = $1", first)


async def test_rebuild_with_the_keys_restores_groups_keyword_tokens_and_number_changes(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    topic, dlq, prefix = await fresh_archive(kafka_bootstrap, "rebuild-open")
    group = Group.fresh()
    person = group.business
    erased = pipeline.Person(person.waba_id, person.phone_number_id, "1" + pipeline.digits(10))
    t = 1_760_000_000
    bodies = [
        group.message(group.alice, "wamid.G1", "rendez-vous au dépôt", t),
        pipeline.text_message(person, "wamid.T1", "Le remboursement est validé", t + 1),
        pipeline.number_change(person, "1" + pipeline.digits(10), t + 2),
        pipeline.text_message(erased, "wamid.E1", "effacez-moi", t + 3),
    ]
    await pipeline.archive_bodies(demo_env, pg_pool, topic, dlq, prefix, bodies)
    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        await erase(access, erased)
        keys = [
            r["object_key"]
            for r in await pg_pool.fetch(
                "SELECT object_key FROM archive_objects WHERE object_key LIKE $1", f"{prefix}/%"
            )
        ]
        first = subject_ref(access.pepper, person.phone_number_id, person.wa_id)
        written = await index_of(pg_pool, keys, first)
        assert sum(1 for row in written["events"] if row[-1] is not None) == 1  # the group message
        assert len(written["keywords"]) == 2  # the group message's sender and the text's; the erased one's is gone
        assert len(written["changes"]) == 1

        # From the headers alone: the rows, but neither the group, nor the tokens, nor the number change.
        await forget(pg_pool, keys, first)
        report = await rebuild_index(access.pool, access.bucket, DEFAULT_POLICY, prefix=prefix)
        headers_only = await index_of(pg_pool, keys, first)
        assert len(headers_only["events"]) == len(written["events"]) == 3
        assert all(row[-1] is None for row in headers_only["events"])
        assert (headers_only["keywords"], headers_only["changes"], report.records_opened) == ([], [], 0)

        # With the keys: exactly what the archiver had written.
        await forget(pg_pool, keys, first)
        report = await rebuild_index(
            access.pool, access.bucket, DEFAULT_POLICY, prefix=prefix, keys=RecordKeys(access.keyring, access.pepper)
        )
        assert await index_of(pg_pool, keys, first) == written
        assert (report.records_opened, report.records_unopened, report.skipped_shredded) == (3, 0, 1)
        assert (report.keyword_rows, report.number_changes) == (2, 1)
    finally:
        await access.close()
