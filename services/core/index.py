"""The PostgreSQL index of the archive: one row per archived event, pointing at its object and position.

Writes happen inside the caller's transaction (the archiver commits Kafka offsets only after it). Event rows
are staged with COPY and merged on ``event_id``: a replayed or redelivered event points at the newest object
that holds it and is never indexed twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter

import asyncpg

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


@dataclass(frozen=True, slots=True)
class IndexRow:
    event_id: str
    subject_ref: str | None
    dek_id: str | None
    waba_id: str | None
    phone_number_id: str | None
    kind: str
    type: str | None
    message_ref: str | None
    original_message_ref: str | None
    event_time: datetime | None
    received_at: datetime
    object_key: str
    record_index: int
    kafka_partition: int
    kafka_offset: int
    retention_class: str
    expires_at: datetime | None


INDEX_COLUMNS = tuple(IndexRow.__dataclass_fields__)


@dataclass(frozen=True, slots=True)
class ObjectRow:
    object_key: str
    topic: str
    kafka_partition: int
    first_offset: int
    last_offset: int
    record_count: int
    size_bytes: int
    retain_until: datetime | None


@dataclass(frozen=True, slots=True)
class MediaRow:
    event_id: str
    subject_ref: str | None
    status: str  # archived | missing
    object_key: str | None
    mime_type: str | None
    size_bytes: int | None
    attempts: int
    failure: str | None


@contextlib.asynccontextmanager
async def index_scans(conn: Connection) -> AsyncIterator[None]:
    """Make the planner use indexes for the queries inside: for a handful of objects' or a person's rows, which
    are a sliver of the table. With objects of very different sizes its estimate for ``object_key = ANY(…)`` can
    be far too high, and it then reads the whole table (measured: 0.95 s instead of 0.02 s for 25,000 rows of a
    4.4M-row table in a retention chunk; 3.4 s for an erasure's sole-object check on 7.5M rows)."""
    await conn.execute("SET enable_seqscan = off")
    try:
        yield
    finally:
        await conn.execute("RESET enable_seqscan")


# dataclasses.astuple deep-copies every field (datetimes included): far too slow for 20,000 rows a second.
INDEX_TUPLE = attrgetter(*INDEX_COLUMNS)
OBJECT_TUPLE = attrgetter(*ObjectRow.__dataclass_fields__)
MEDIA_TUPLE = attrgetter(*MediaRow.__dataclass_fields__)


def object_expiry(rows: Sequence[IndexRow]) -> datetime | None:
    """When every record of an object has expired: the latest expiry, or None (never) if a record has none."""
    latest: datetime | None = None
    for row in rows:
        if row.expires_at is None:
            return None
        if latest is None or row.expires_at > latest:
            latest = row.expires_at
    return latest


async def write_object_index(
    conn: Connection,
    obj: ObjectRow,
    rows: Sequence[IndexRow],
    aliases: Iterable[tuple[str, str]] = (),
    media: Sequence[MediaRow] = (),
) -> None:
    """Record one batch object and its events (call inside a transaction).

    The object's expiry is the latest of its records' (NULL, kept forever, when one has none); rewriting an
    object (a replay) can only push it later, so retention never deletes a record before its own date."""
    await conn.execute(
        "INSERT INTO archive_objects (object_key, topic, kafka_partition, first_offset, last_offset, record_count,"
        " size_bytes, retain_until, expires_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8,"
        " coalesce($9, 'infinity'::timestamptz)) "
        "ON CONFLICT (object_key) DO UPDATE SET last_offset = EXCLUDED.last_offset,"
        " record_count = EXCLUDED.record_count, size_bytes = EXCLUDED.size_bytes,"
        " retain_until = EXCLUDED.retain_until, written_at = now(),"
        " expires_at = greatest(archive_objects.expires_at, EXCLUDED.expires_at)",
        *OBJECT_TUPLE(obj),
        object_expiry(rows),
    )
    if rows:
        await conn.execute(
            "CREATE TEMP TABLE IF NOT EXISTS staged_events (LIKE archived_events INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table(
            "staged_events", records=[INDEX_TUPLE(row) for row in rows], columns=list(INDEX_COLUMNS)
        )
        updates = ", ".join(
            f"{column} = EXCLUDED.{column}"
            for column in (
                "subject_ref",
                "dek_id",
                "object_key",
                "record_index",
                "kafka_partition",
                "kafka_offset",
            )
        )
        # The same event twice in one batch (a redelivery) keeps its latest copy.
        await conn.execute(
            f"INSERT INTO archived_events ({', '.join(INDEX_COLUMNS)}) "  # noqa: S608 — column names are constants
            f"SELECT DISTINCT ON (event_id) {', '.join(INDEX_COLUMNS)} FROM staged_events "
            f"ORDER BY event_id, record_index DESC "
            f"ON CONFLICT (event_id) DO UPDATE SET {updates}"
        )
    numbers = sorted(
        {(row.phone_number_id, row.waba_id) for row in rows if row.phone_number_id}, key=lambda n: (n[0], n[1] or "")
    )
    if numbers:
        await conn.executemany(
            "INSERT INTO business_numbers (phone_number_id, waba_id) VALUES ($1, $2) ON CONFLICT DO NOTHING", numbers
        )
    alias_rows = sorted(set(aliases))
    if alias_rows:
        await conn.executemany(
            "INSERT INTO subject_aliases (alias_ref, subject_ref) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            alias_rows,
        )
    if media:
        await conn.executemany(
            "INSERT INTO archived_media (event_id, subject_ref, status, object_key, mime_type, size_bytes,"
            " attempts, failure) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
            "ON CONFLICT (event_id) DO UPDATE SET status = EXCLUDED.status, object_key = EXCLUDED.object_key,"
            " size_bytes = EXCLUDED.size_bytes, attempts = EXCLUDED.attempts, failure = EXCLUDED.failure,"
            " archived_at = now() WHERE archived_media.status <> 'archived' OR EXCLUDED.status = 'archived'",
            [MEDIA_TUPLE(m) for m in media],
        )
