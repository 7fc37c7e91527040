"""Search over index metadata only: nothing is decrypted, so no reason is needed and no content is shown.

Filters: business phone number, contact (resolved to every pseudonym of the person), time range, kind, type,
deleted-only (a revoke or a ``deleted`` status points at the message), edited-only (an edit points at it) and
keywords: the messages of a person in a batch object whose keyword tokens hold every word of the query
(services/core/keywords.py). Keyword hits are candidates: the index knows that the person wrote the words in that
object, not in which message; the decrypted conversation says which.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

import asyncpg

from services.core.identity import resolve_subject_refs
from services.core.index import binary_keys
from services.core.keywords import keyword_key, query_tokens
from services.core.vocabulary import MESSAGE_KINDS, EventKind
from services.governance.scope import EVERYTHING, ReadingScope, scope_sql

DELETED = (
    "EXISTS (SELECT 1 FROM archived_events d WHERE d.original_message_ref = e.message_ref "
    "AND (d.type = 'revoke' OR (d.kind = 'status' AND d.type = 'deleted')))"
)
# Keywords are the words of messages (services/core/keywords.py): a keyword search finds messages only.
SEARCHABLE_KINDS = sorted(MESSAGE_KINDS)
EDITED = "EXISTS (SELECT 1 FROM archived_events d WHERE d.original_message_ref = e.message_ref AND d.type = 'edit')"


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexHit:
    """One index row: pseudonymous metadata of an archived event, nothing decrypted."""

    event_id: str
    kind: EventKind
    type: str | None
    phone_number_id: str | None
    subject_ref: str | None
    event_time: datetime | None
    received_at: datetime
    retention_class: str
    expires_at: datetime | None
    deleted: bool
    edited: bool

    def to_json(self) -> dict[str, Any]:
        """The row as JSON-ready values (timestamps as ISO 8601), as the API and the CLI print it."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self)}


def _jsonable(value: object) -> object:
    return value.isoformat() if isinstance(value, datetime) else value


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchFilter:
    phone_number_id: str | None = None
    contact: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kind: EventKind | None = None
    type: str | None = None
    deleted_only: bool = False
    edited_only: bool = False
    limit: int = 1000
    keywords: str | None = None
    # Pseudonyms already resolved (a case's custodian: a person's, or a group's), narrowing like ``contact``.
    subject_refs: tuple[str, ...] | None = None
    group_ref: str | None = None


async def search_index(
    pool: asyncpg.Pool, pepper: bytes, query: SearchFilter, scope: ReadingScope = EVERYTHING
) -> list[IndexHit]:
    """The index rows ``query`` asks for within ``scope`` (the reader's: services/governance/scope.py), in time
    order, at most ``query.limit``: the scope is part of the query, so that what it leaves out is neither returned
    nor counted nor crowds out what it lets through."""
    clauses: list[str] = []
    args: list[Any] = []

    def arg(value: Any) -> str:
        args.append(value)
        return f"${len(args)}"

    # Every value is a bind parameter; only the fixed clauses above are interpolated.
    async with pool.acquire() as conn:
        if not scope.everything:
            clauses.append(scope_sql(scope, arg))
        if query.contact:
            refs = await resolve_subject_refs(conn, pepper, query.contact, query.phone_number_id)
            clauses.append(f"e.subject_ref = ANY({arg(binary_keys(refs))}::bytea[])")
        if query.subject_refs is not None:
            clauses.append(f"e.subject_ref = ANY({arg(binary_keys(query.subject_refs))}::bytea[])")
        if query.group_ref is not None:
            clauses.append(f"e.group_ref = {arg(bytes.fromhex(query.group_ref))}")
        if query.phone_number_id:
            clauses.append(f"e.phone_number_id = {arg(query.phone_number_id)}")
        if query.since:
            clauses.append(f"e.event_time >= {arg(query.since)}")
        if query.until:
            clauses.append(f"e.event_time <= {arg(query.until)}")
        if query.kind:
            clauses.append(f"e.kind = {arg(query.kind)}")
        if query.type:
            clauses.append(f"e.type = {arg(query.type)}")
        if query.deleted_only:
            clauses.append(DELETED)
        if query.edited_only:
            clauses.append(EDITED)
        if query.keywords is not None:
            tokens = query_tokens(keyword_key(pepper), query.keywords)
            if not tokens:
                return []  # no searchable word (one letter, punctuation): nothing can match
            placeholder = arg(tokens)  # a bind parameter: only its number is interpolated
            clauses.append(
                "(e.object_key, e.subject_ref) IN (SELECT k.object_key, k.subject_ref FROM keyword_index k"  # noqa: S608
                f" WHERE k.tokens @> {placeholder}::bigint[])"
            )
            clauses.append(f"e.kind = ANY({arg(SEARCHABLE_KINDS)}::text[])")
            clauses.append("e.type IS DISTINCT FROM 'revoke'")  # a deletion carries no words of its own
        where = " AND ".join(clauses) or "TRUE"
        sql = (
            "SELECT encode(e.event_id, 'hex') AS event_id, e.kind, e.type, e.phone_number_id,"  # noqa: S608 — clauses are constants; values are bind parameters
            " encode(e.subject_ref, 'hex') AS subject_ref, e.event_time, e.received_at,"
            f" e.retention_class, e.expires_at, {DELETED} AS deleted, {EDITED} AS edited "
            f"FROM archived_events e WHERE {where} ORDER BY e.event_time LIMIT {arg(query.limit)}"
        )
        if query.keywords is None:
            rows = await conn.fetch(sql, *args)
        else:
            # The statement is prepared once per connection, and after a few runs PostgreSQL may switch to a generic
            # plan that cannot see how rare the words are and joins every event of the business number (~430 ms on
            # 1,000,000 messages, against 14-120 ms for a plan made for the words: bench/console.py).
            async with conn.transaction():
                await conn.execute("SET LOCAL plan_cache_mode = force_custom_plan")
                rows = await conn.fetch(sql, *args)
    return [IndexHit(**dict(row)) for row in rows]
