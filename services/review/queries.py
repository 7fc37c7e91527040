"""The read side's SQL: which records of a person or a group the index holds, their archived media, and which
objects the keyword index says hold a query's words. Nothing here decrypts or decides what to show.

Every function takes a connection (or the pool) and returns typed rows; a failing query raises asyncpg's error
unchanged (nothing was read, nothing was audited).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from services.core.db import ConnectionOrPool
from services.core.index import binary_keys
from services.core.reader import RecordLocation
from services.core.vocabulary import EventKind

# The columns every index read selects, in the index's order (event time, then the order the archiver wrote).
_INDEXED_COLUMNS = (
    "SELECT encode(event_id, 'hex') AS event_id, object_key, record_index, encode(subject_ref, 'hex') AS subject_ref,"
    " kind, type, event_time, received_at, message_ref, original_message_ref, phone_number_id,"
    " encode(group_ref, 'hex') AS group_ref FROM archived_events"
)
_INDEX_ORDER = " ORDER BY event_time, kafka_offset"


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexedRecord:
    """Where an archived record is and what the index says of it: enough to choose what a view decrypts, to audit
    it (``subject_ref``) and to show it when it cannot be read. ``message_ref`` and ``original_message_ref`` are
    the peppered hashes of its message id and of the message it changes (None when it has none);
    ``phone_number_id`` and ``group_ref`` (the group's pseudonym) say whose it is with ``subject_ref``, for the
    reader's scope (services/governance/scope.py)."""

    location: RecordLocation
    subject_ref: str
    kind: EventKind
    type: str | None
    event_time: datetime | None
    received_at: datetime
    message_ref: bytes | None = None
    original_message_ref: bytes | None = None
    phone_number_id: str | None = None
    group_ref: str | None = None

    @property
    def event_id(self) -> str:
        return self.location.event_id

    @classmethod
    def of(cls, row: asyncpg.Record | dict[str, Any]) -> IndexedRecord:
        """From an ``archived_events`` row as :data:`_INDEXED_COLUMNS` selects it."""
        return cls(
            location=RecordLocation(row["event_id"], row["object_key"], row["record_index"]),
            subject_ref=row["subject_ref"],
            kind=row["kind"],
            type=row["type"],
            event_time=row["event_time"],
            received_at=row["received_at"],
            message_ref=row["message_ref"],
            original_message_ref=row["original_message_ref"],
            phone_number_id=row.get("phone_number_id"),
            group_ref=row.get("group_ref"),
        )


async def person_records(conn: ConnectionOrPool, subject_refs: Sequence[str]) -> list[IndexedRecord]:
    """Every indexed record of the pseudonyms ``subject_refs``, in the index's order."""
    rows = await conn.fetch(
        _INDEXED_COLUMNS + " WHERE subject_ref = ANY($1::bytea[])" + _INDEX_ORDER, binary_keys(subject_refs)
    )
    return [IndexedRecord.of(row) for row in rows]


async def group_records(conn: ConnectionOrPool, group_ref: str, phone_number_id: str) -> list[IndexedRecord]:
    """Every indexed record of the group ``group_ref`` (its pseudonym) of the business number, every
    participant's, in the index's order."""
    return await custodian_records(conn, group_ref=group_ref, phone_number_id=phone_number_id)


def _within(since: int, until: int) -> str:
    """A period's condition on a record's time as the reader's scope compares it (services/governance/scope.py
    record_time: the event time, else the receipt time), its bounds the placeholders ``$since`` and ``$until``."""
    return (
        f" AND (${since}::timestamptz IS NULL OR coalesce(event_time, received_at) >= ${since})"
        f" AND (${until}::timestamptz IS NULL OR coalesce(event_time, received_at) <= ${until})"
    )


async def custodian_records(
    conn: ConnectionOrPool,
    *,
    group_ref: str | None = None,
    phone_number_id: str | None = None,
    subject_ref: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[IndexedRecord]:
    """The indexed records of a case's group or business-number custodian, in the index's order: of the group
    ``group_ref`` (its pseudonym; under ``phone_number_id`` when given), or of the business number
    ``phone_number_id`` sealed under the pseudonym ``subject_ref`` (one conversation of the number); each record
    whose time (event time, else receipt time) is within ``since``..``until`` (both included, None: unbounded).
    ValueError when neither a group nor a number and a pseudonym are named (that would be everyone's records)."""
    if group_ref is not None:
        rows = await conn.fetch(
            _INDEXED_COLUMNS
            + " WHERE group_ref = $1 AND ($2::text IS NULL OR phone_number_id = $2)"
            + _within(3, 4)
            + _INDEX_ORDER,
            bytes.fromhex(group_ref),
            phone_number_id,
            since,
            until,
        )
    elif phone_number_id is not None and subject_ref is not None:
        rows = await conn.fetch(
            _INDEXED_COLUMNS + " WHERE subject_ref = $1 AND phone_number_id = $2" + _within(3, 4) + _INDEX_ORDER,
            bytes.fromhex(subject_ref),
            phone_number_id,
            since,
            until,
        )
    else:
        raise ValueError("custodian_records needs a group, or a business number and a pseudonym")
    return [IndexedRecord.of(row) for row in rows]


async def count_records(
    conn: ConnectionOrPool,
    *,
    group_ref: str,
    phone_number_id: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """How many records :func:`custodian_records` would return for the group ``group_ref`` (nothing decrypted)."""
    count = await conn.fetchval(
        "SELECT count(*) FROM archived_events WHERE group_ref = $1 AND ($2::text IS NULL OR phone_number_id = $2)"
        " AND ($3::timestamptz IS NULL OR coalesce(event_time, received_at) >= $3)"
        " AND ($4::timestamptz IS NULL OR coalesce(event_time, received_at) <= $4)",
        bytes.fromhex(group_ref),
        phone_number_id,
        since,
        until,
    )
    return int(count or 0)


async def count_person_records(
    conn: ConnectionOrPool, subject_refs: Sequence[str], *, since: datetime | None, until: datetime | None
) -> int:
    """How many indexed records of the pseudonyms ``subject_refs`` fall within ``since``..``until``."""
    count = await conn.fetchval(
        "SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])"
        " AND ($2::timestamptz IS NULL OR coalesce(event_time, received_at) >= $2)"
        " AND ($3::timestamptz IS NULL OR coalesce(event_time, received_at) <= $3)",
        binary_keys(subject_refs),
        since,
        until,
    )
    return int(count or 0)


@dataclass(frozen=True, slots=True)
class NumberConversation:
    """One conversation of a business number within a period: the pseudonym its records are sealed under and how
    many records it holds there."""

    subject_ref: str
    records: int


async def number_conversations(
    conn: ConnectionOrPool, phone_number_id: str, *, since: datetime | None, until: datetime | None
) -> list[NumberConversation]:
    """The conversations of the business number ``phone_number_id`` with records within ``since``..``until``
    (as :func:`custodian_records` counts them), by pseudonym: what a business-number custodian exports, one
    conversation at a time. A record indexed without a pseudonym belongs to no conversation and is not counted."""
    rows = await conn.fetch(
        "SELECT encode(subject_ref, 'hex') AS subject_ref, count(*) AS records FROM archived_events"
        " WHERE phone_number_id = $1 AND subject_ref IS NOT NULL"
        " AND ($2::timestamptz IS NULL OR coalesce(event_time, received_at) >= $2)"
        " AND ($3::timestamptz IS NULL OR coalesce(event_time, received_at) <= $3)"
        " GROUP BY subject_ref ORDER BY subject_ref",
        phone_number_id,
        since,
        until,
    )
    return [NumberConversation(row["subject_ref"], int(row["records"])) for row in rows]


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchivedMedia:
    """The ``archived_media`` row of a message's media: ``archived`` (with its object), ``pending`` or
    ``missing``/``failed`` (with why); ``subject_ref`` is the pseudonym its key belongs to."""

    event_id: str
    subject_ref: str
    status: str
    object_key: str | None
    mime_type: str | None
    size_bytes: int | None
    failure: str | None

    def to_json(self) -> dict[str, Any]:
        """What a message's ``media`` says (API bodies, the timeline): the row without its pseudonym."""
        return {
            "event_id": self.event_id,
            "status": self.status,
            "object_key": self.object_key,
            "mime_type": self.mime_type,
            "size_bytes": self.size_bytes,
            "failure": self.failure,
        }


async def record_place(conn: ConnectionOrPool, event_id: str) -> IndexedRecord | None:
    """The index row of one record (None when the index has none)."""
    row = await conn.fetchrow(_INDEXED_COLUMNS + " WHERE event_id = $1", bytes.fromhex(event_id))
    return None if row is None else IndexedRecord.of(row)


async def archived_media(
    conn: ConnectionOrPool, *, subject_refs: Sequence[str] | None = None, event_ids: Sequence[str] | None = None
) -> dict[str, ArchivedMedia]:
    """The media rows of the pseudonyms ``subject_refs`` and/or of the messages ``event_ids`` (each given narrows
    the rows; neither is refused: that would be every person's media), by event id."""
    if subject_refs is None and event_ids is None:
        raise ValueError("archived_media needs pseudonyms or event ids")
    rows = await conn.fetch(
        "SELECT encode(event_id, 'hex') AS event_id, encode(subject_ref, 'hex') AS subject_ref, status, object_key,"
        " mime_type, size_bytes, failure FROM archived_media"
        " WHERE ($1::bytea[] IS NULL OR subject_ref = ANY($1::bytea[]))"
        " AND ($2::bytea[] IS NULL OR event_id = ANY($2::bytea[]))",
        None if subject_refs is None else binary_keys(subject_refs),
        None if event_ids is None else binary_keys(event_ids),
    )
    return {row["event_id"]: ArchivedMedia(**dict(row)) for row in rows}


async def keyword_objects(
    conn: ConnectionOrPool, subject_refs: Sequence[str], tokens: Sequence[int]
) -> set[tuple[str, str]]:
    """The (object key, pseudonym) pairs whose keyword tokens hold every one of ``tokens``: the objects that may
    hold a query's words (a token collision makes a false candidate, never a missed one)."""
    rows = await conn.fetch(
        "SELECT object_key, encode(subject_ref, 'hex') AS subject_ref FROM keyword_index"
        " WHERE subject_ref = ANY($1::bytea[]) AND tokens @> $2::bigint[]",
        binary_keys(subject_refs),
        list(tokens),
    )
    return {(row["object_key"], row["subject_ref"]) for row in rows}


async def selected_records(conn: ConnectionOrPool, event_ids: Sequence[str]) -> list[IndexedRecord]:
    """The indexed records ``event_ids`` name and the records that change them (their statuses, edits and
    deletion: a record of the same person whose ``original_message_ref`` is one of theirs), in the index's order.
    An id the index does not hold (erased, or expired since) is left out."""
    # Two indexed lookups joined by UNION: one OR across both would scan the whole index.
    rows = await conn.fetch(
        _INDEXED_COLUMNS  # noqa: S608 — constants only; the ids are a bind parameter
        + " WHERE event_id IN (SELECT event_id FROM archived_events WHERE event_id = ANY($1::bytea[])"
        " UNION SELECT c.event_id FROM archived_events h JOIN archived_events c"
        " ON c.original_message_ref = h.message_ref AND c.subject_ref = h.subject_ref"
        " WHERE h.event_id = ANY($1::bytea[]) AND h.message_ref IS NOT NULL)" + _INDEX_ORDER,
        binary_keys(event_ids),
    )
    return [IndexedRecord.of(row) for row in rows]
