"""The PostgreSQL index of the archive: one row per archived event, pointing at its object and position.

Writes happen inside the caller's transaction (the archiver commits Kafka offsets only after it). Event rows
are staged with COPY and merged on ``event_id``: a replayed or redelivered event points at the newest object
that holds it and is never indexed twice.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import attrgetter
from typing import NamedTuple

from services.core.container import RecordMeta, media_event_id
from services.core.db import Connection
from services.core.policy import Classifier


def binary_key(ref: str) -> bytes:
    """An event id or pseudonym (lowercase hex) as the index stores it: its bytes (migration 0006)."""
    return bytes.fromhex(ref)


def binary_keys(refs: Iterable[str]) -> list[bytes]:
    """:func:`binary_key` of each, for a ``bytea[]`` parameter (``… = ANY($1::bytea[])``)."""
    return [bytes.fromhex(ref) for ref in refs]


class IndexRow(NamedTuple):
    """One row of ``archived_events``, in column order: a tuple COPY takes as it is. Event ids and pseudonyms are
    bytes (``bytea``); queries give them back as hex with ``encode(column, 'hex')``."""

    event_id: bytes
    subject_ref: bytes | None
    dek_id: str | None
    waba_id: str | None
    phone_number_id: str | None
    kind: str
    type: str | None
    message_ref: bytes | None
    original_message_ref: bytes | None
    event_time: datetime | None
    received_at: datetime
    object_key: str
    record_index: int
    kafka_partition: int
    kafka_offset: int
    retention_class: str
    expires_at: datetime | None
    # The class's clock runs from the person's last contact: expires_at is a lower bound (migration 0008).
    anchor_last_contact: bool = False
    # The Cloud API group the event belongs to, as its pseudonym (services/core/pseudonym.py, migration 0011).
    group_ref: bytes | None = None


INDEX_COLUMNS = IndexRow._fields


@dataclass(frozen=True, slots=True, kw_only=True)
class ObjectRow:
    object_key: str
    topic: str
    kafka_partition: int
    first_offset: int
    last_offset: int
    record_count: int
    size_bytes: int
    retain_until: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaRow:
    event_id: str
    subject_ref: str | None
    status: str  # archived | missing
    object_key: str | None
    mime_type: str | None
    size_bytes: int | None
    attempts: int
    failure: str | None
    # For a missing file the media sweep can try again: what to fetch, sealed under the person's key
    # (services/archiver/sealing.py seal_media_retry); never stored in the clear.
    retry_ref: bytes | None = None


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
OBJECT_TUPLE = attrgetter(*ObjectRow.__dataclass_fields__)
MEDIA_TUPLE = attrgetter(*(name for name in MediaRow.__dataclass_fields__ if name != "retry_ref"))


def event_time(timestamp: int | None) -> datetime | None:
    """Meta's event time (unix seconds) as a datetime, or None when absent or beyond what a datetime (and
    PostgreSQL) can hold: the splitter accepts any decimal of up to 19 digits, as Meta might send it."""
    if timestamp is None:
        return None
    try:
        return datetime.fromtimestamp(timestamp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def received_time(received_at: str | None, fallback: datetime) -> datetime:
    """When ingest received the record (RFC 3339), or ``fallback`` when that is missing or unreadable."""
    if received_at:
        try:
            parsed = datetime.fromisoformat(received_at.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return fallback


def index_row(
    meta: RecordMeta,
    *,
    object_key: str,
    record_index: int,
    partition: int,
    classify: Classifier,
    now: datetime,
    group_ref: bytes | None = None,
) -> IndexRow:
    """The index row of one sealed record: the archiver's and ``rebuild-index``'s single way of making one.

    The retention clock runs from Meta's event time, or from the receipt time when Meta's is absent or out of
    range; ``now`` stands in for a receipt time that cannot be read. ``group_ref`` (the binary pseudonym of the
    event's group) comes from the event, not the header: the object format carries no group, so rows that
    ``rebuild-index`` makes have none (the merge keeps a row's group when it rewrites it)."""
    received = received_time(meta.received_at, now)
    when = event_time(meta.timestamp) or received
    retention_class, expires_at = classify(meta.phone_number_id, meta.kind, meta.type, when, group_ref is not None)
    return IndexRow(
        bytes.fromhex(meta.event_id),
        bytes.fromhex(meta.subject_ref) if meta.subject_ref else None,
        meta.dek_id,
        meta.waba_id,
        meta.phone_number_id,
        meta.kind,
        meta.type,
        bytes.fromhex(meta.message_ref) if meta.message_ref else None,
        bytes.fromhex(meta.original_message_ref) if meta.original_message_ref else None,
        when,
        received,
        object_key,
        record_index,
        partition,
        meta.offset,
        retention_class,
        expires_at,
        retention_class in classify.last_contact_classes,
        group_ref,
    )


def alias_rows(meta: RecordMeta) -> Iterable[tuple[str, str]]:
    """(alias_ref, subject_ref) rows linking every identifier of the record's person to its sealing pseudonym."""
    return ((alias, meta.subject_ref) for alias in meta.alias_refs or (meta.subject_ref,))


def archived_media_row(meta: RecordMeta, *, object_key: str, size_bytes: int | None, attempts: int) -> MediaRow:
    """The ``archived_media`` row of a media record (``meta.kind == "media"``), pointing at the message's event."""
    event_id = media_event_id(meta.event_id)
    if event_id is None:
        raise ValueError("not a media record id")
    return MediaRow(
        event_id=event_id,
        subject_ref=meta.subject_ref,
        status="archived",
        object_key=object_key,
        mime_type=meta.type,
        size_bytes=size_bytes,
        attempts=attempts,
        failure=None,
    )


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
    keywords: Sequence[tuple[str, Sequence[int]]] = (),
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
            "CREATE TEMP TABLE IF NOT EXISTS staged_index_rows (LIKE archived_events INCLUDING DEFAULTS) "
            "ON COMMIT DELETE ROWS"
        )
        await conn.copy_records_to_table("staged_index_rows", records=rows, columns=list(INDEX_COLUMNS))
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
        # A row rewritten without its group (rebuild-index reads headers, which carry none) keeps the one it had.
        updates += ", group_ref = coalesce(EXCLUDED.group_ref, archived_events.group_ref)"
        # The same event twice in one batch (a redelivery) keeps its latest copy.
        await conn.execute(
            f"INSERT INTO archived_events ({', '.join(INDEX_COLUMNS)}) "  # noqa: S608 — column names are constants
            f"SELECT DISTINCT ON (event_id) {', '.join(INDEX_COLUMNS)} FROM staged_index_rows "
            f"ORDER BY event_id, record_index DESC "
            f"ON CONFLICT (event_id) DO UPDATE SET {updates}"
        )
    numbers = sorted(
        {(row.phone_number_id, row.waba_id) for row in rows if row.phone_number_id}, key=lambda n: (n[0], n[1] or "")
    )
    if numbers:
        await conn.execute(
            "INSERT INTO business_numbers (phone_number_id, waba_id) SELECT * FROM unnest($1::text[], $2::text[]) "
            "ON CONFLICT DO NOTHING",
            [n[0] for n in numbers],
            [n[1] for n in numbers],
        )
    # One statement for the batch's aliases (one execution per row cost PostgreSQL more than the events' COPY),
    # in a fixed order so that two archivers inserting the same pairs cannot deadlock.
    pairs = sorted(set(aliases))
    if pairs:
        await conn.execute(
            "INSERT INTO subject_aliases (alias_ref, subject_ref) SELECT * FROM unnest($1::text[], $2::text[]) "
            "ON CONFLICT DO NOTHING",
            [p[0] for p in pairs],
            [p[1] for p in pairs],
        )
    if media:
        await write_media_rows(conn, media)
    if keywords:
        # The object's tokens as they are now: a replay that rewrote the object replaces them.
        await conn.execute("DELETE FROM keyword_index WHERE object_key = $1", obj.object_key)
        await conn.copy_records_to_table(
            "keyword_index",
            records=[(obj.object_key, bytes.fromhex(ref), list(tokens)) for ref, tokens in keywords],
            columns=["object_key", "subject_ref", "tokens"],
        )


# Failures a later attempt cannot change: not queued for the media sweep.
FINAL_MEDIA_FAILURES = frozenset({"bad media id"})
# A media id in a webhook lives 30 days at Meta: past that, a retry can only fail.
MEDIA_RETRY_WINDOW = timedelta(days=30)
FIRST_MEDIA_RETRY = timedelta(minutes=5)


async def write_media_rows(conn: Connection, media: Sequence[MediaRow]) -> None:
    """Record media files (archived or missing). An archived file is never downgraded to missing by a later
    attempt (a replay whose download failed), and a missing one is upgraded when a later download succeeds.

    A missing file with a sealed ``retry_ref`` whose failure a later attempt could change is queued for the media
    sweep (``media_retry``, first retry in 5 minutes, given up 30 days on); an archived one leaves the queue."""
    await conn.executemany(
        "INSERT INTO archived_media (event_id, subject_ref, status, object_key, mime_type, size_bytes,"
        " attempts, failure) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) "
        "ON CONFLICT (event_id) DO UPDATE SET status = EXCLUDED.status, object_key = EXCLUDED.object_key,"
        " size_bytes = coalesce(EXCLUDED.size_bytes, archived_media.size_bytes), attempts = EXCLUDED.attempts,"
        " failure = EXCLUDED.failure, archived_at = now()"
        " WHERE archived_media.status <> 'archived' OR EXCLUDED.status = 'archived'",
        [_media_tuple(m) for m in media],
    )
    archived = [bytes.fromhex(m.event_id) for m in media if m.status == "archived"]
    if archived:
        await conn.execute("DELETE FROM media_retry WHERE event_id = ANY($1::bytea[])", archived)
    retry = sorted(
        (bytes.fromhex(m.event_id), m.failure or "unknown", m.retry_ref)
        for m in media
        if m.status == "missing" and m.failure not in FINAL_MEDIA_FAILURES and m.retry_ref is not None
    )
    if retry:
        await conn.execute(
            "INSERT INTO media_retry (event_id, next_attempt_at, give_up_at, last_failure, sealed_ref)"
            " SELECT e, now() + $3::interval, now() + $4::interval, f, s"
            " FROM unnest($1::bytea[], $2::text[], $5::bytea[]) AS r(e, f, s)"
            " WHERE NOT EXISTS (SELECT 1 FROM archived_media m WHERE m.event_id = r.e AND m.status = 'archived')"
            " ON CONFLICT (event_id) DO NOTHING",
            [e for e, _, _ in retry],
            [f for _, f, _ in retry],
            FIRST_MEDIA_RETRY,
            MEDIA_RETRY_WINDOW,
            [r for _, _, r in retry],
        )


def _media_tuple(row: MediaRow) -> tuple[object, ...]:
    values = MEDIA_TUPLE(row)
    return (bytes.fromhex(row.event_id), bytes.fromhex(row.subject_ref) if row.subject_ref else None, *values[2:])


async def write_tombstones(conn: Connection, tombstones: Sequence[tuple[str, str]]) -> None:
    """Record (event_id, subject_ref) of records dropped because their person was erased after them."""
    await conn.executemany(
        "INSERT INTO erased_events (event_id, subject_ref) VALUES ($1, $2) ON CONFLICT (event_id) DO NOTHING",
        list(tombstones),
    )
