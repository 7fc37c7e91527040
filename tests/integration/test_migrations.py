"""The migrations against the real PostgreSQL, each in a scratch schema of its own (the shared schema is the
archive the other tests use): they apply in order on an empty database, and 0006 carries the rows of the text
layout over to binary keys byte for byte, or fails whole."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.core.schema import SCHEMA_MIGRATIONS_DDL, SchemaNotCurrent, connect_pool, latest_version, migration_files

pytestmark = pytest.mark.asyncio(loop_scope="session")

EVENT_ID = "0123456789abcdef0123456789abcdef"
SUBJECT = "ab" * 32
MESSAGE = "cd" * 32


@pytest.fixture
async def scratch_name(pg_dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """As :func:`scratch`, with the schema's name."""
    conn = await asyncpg.connect(pg_dsn)
    schema = f"test_migrations_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
    await conn.execute(SCHEMA_MIGRATIONS_DDL)
    try:
        yield conn, schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


@pytest.fixture
async def scratch(pg_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A connection whose search_path is a new schema, empty but for the runner's own table, dropped afterwards."""
    conn = await asyncpg.connect(pg_dsn)
    schema = f"test_migrations_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
    await conn.execute(SCHEMA_MIGRATIONS_DDL)
    try:
        yield conn
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def apply(conn: asyncpg.Connection, *, up_to: int, after: int = 0) -> None:
    """Migrations ``after`` < version <= ``up_to``, each in its own transaction, as :func:`migrate` runs them."""
    for version, _name, sql in migration_files():
        if after < version <= up_to:
            async with conn.transaction():
                await conn.execute(sql)


async def insert_text_layout_row(conn: asyncpg.Connection, event_id: str) -> None:
    await conn.execute(
        "INSERT INTO archived_events (event_id, subject_ref, kind, type, message_ref, original_message_ref,"
        " received_at, object_key, record_index, kafka_partition, kafka_offset)"
        " VALUES ($1, $2, 'message', 'text', $3, NULL, now(), 'p/events/0/1.waarc', 0, 0, 1)",
        event_id,
        SUBJECT,
        MESSAGE,
    )
    await conn.execute(
        "INSERT INTO archived_media (event_id, subject_ref, status, attempts) VALUES ($1, $2, 'missing', 3)",
        event_id,
        SUBJECT,
    )


async def test_every_migration_applies_in_order_on_an_empty_schema(scratch: asyncpg.Connection) -> None:
    await apply(scratch, up_to=10_000)
    types = {
        (row["table_name"], row["column_name"]): row["data_type"]
        for row in await scratch.fetch(
            "SELECT table_name, column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name IN ('archived_events', 'archived_media')"
        )
    }
    for column in ("event_id", "subject_ref", "message_ref", "original_message_ref", "group_ref"):
        assert types[("archived_events", column)] == "bytea", column
    assert types[("archived_media", "event_id")] == types[("archived_media", "subject_ref")] == "bytea"
    indexes = {
        row["indexname"]
        for row in await scratch.fetch("SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    }
    assert "archived_events_message" not in indexes
    assert {"archived_events_subject_time", "archived_events_original", "archived_events_object_subject"} <= indexes
    assert "archived_events_object" not in indexes  # 0013: replaced by (object_key, subject_ref)
    assert "archived_events_group" in indexes  # 0011: partial, the group events alone
    assert "archived_events_message_time" in indexes  # 0030: the messages in time order, for keyword search


async def test_binary_keys_carry_the_text_layout_rows_over_byte_for_byte(scratch: asyncpg.Connection) -> None:
    await apply(scratch, up_to=5)
    await insert_text_layout_row(scratch, EVENT_ID)
    await apply(scratch, after=5, up_to=6)
    row = await scratch.fetchrow("SELECT event_id, subject_ref, message_ref, original_message_ref FROM archived_events")
    assert row is not None
    assert (row["event_id"], row["subject_ref"], row["message_ref"], row["original_message_ref"]) == (
        bytes.fromhex(EVENT_ID),
        bytes.fromhex(SUBJECT),
        bytes.fromhex(MESSAGE),
        None,
    )
    media = await scratch.fetchrow("SELECT event_id, subject_ref FROM archived_media")
    assert media is not None
    assert (media["event_id"], media["subject_ref"]) == (bytes.fromhex(EVENT_ID), bytes.fromhex(SUBJECT))


async def test_a_key_that_is_not_hex_fails_the_whole_migration(scratch: asyncpg.Connection) -> None:
    await apply(scratch, up_to=5)
    await insert_text_layout_row(scratch, "not-hex-" + EVENT_ID[8:])
    with pytest.raises(asyncpg.PostgresError):
        await apply(scratch, after=5, up_to=6)
    # Rolled back whole: the text layout and its message_ref index are still there, the row intact.
    assert (
        await scratch.fetchval(
            "SELECT data_type FROM information_schema.columns WHERE table_schema = current_schema()"
            " AND table_name = 'archived_events' AND column_name = 'event_id'"
        )
        == "text"
    )
    assert (
        await scratch.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE schemaname = current_schema()"
            " AND indexname = 'archived_events_message'"
        )
        == 1
    )
    assert await scratch.fetchval("SELECT event_id FROM archived_events") == "not-hex-" + EVENT_ID[8:]


async def test_a_service_waits_for_the_schema_its_code_needs_and_never_migrates(
    scratch_name: tuple[asyncpg.Connection, str], pg_dsn: str
) -> None:
    conn, schema = scratch_name
    dsn = f"{pg_dsn}?search_path={schema}"  # asyncpg passes unknown parameters as server settings
    needed = latest_version()
    with pytest.raises(SchemaNotCurrent, match=f"has no migrations, this build needs {needed:04d}"):
        await connect_pool(dsn, schema_wait_s=0)
    await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, 'older')", needed - 1)
    with pytest.raises(SchemaNotCurrent, match=f"is at migration {needed - 1:04d}.*wa-archive migrate"):
        await connect_pool(dsn, schema_wait_s=0.3)
    assert await conn.fetchval("SELECT count(*) FROM pg_tables WHERE schemaname = $1", schema) == 1, "it migrated"
    # The migrator's work done (here: recorded), and a newer schema too (a rolling upgrade), are both fine.
    for version in (needed, needed + 1):
        await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, 'applied')", version)
        pool = await connect_pool(dsn, schema_wait_s=0)
        await pool.close()
