"""Find every pseudonym of a person, and write the audit trail of reads about them.

A person may be known by ``wa_id`` (phone number) or by a business-scoped ``user_id``; each business phone
number gives them a different pseudonym, and a number that changed hands one per holder. :func:`resolve_subject_refs`
returns all of them, following the alias table, so retrieval, export, holds and erasure by either identifier reach
all their data.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.core.holders import current_since, number_changes
from services.core.pseudonym import holder_ref, subject_ref

# A pool works too: each query then takes a connection of its own.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool


class PersonRequired(ValueError):
    """A read names nobody, or names a person twice over (a contact id and a pseudonym); nothing was read."""


def is_pseudonym(value: str) -> bool:
    """64 lowercase hex digits: how a subject_ref looks (services/core/pseudonym.py)."""
    return len(value) == 64 and all(c in "0123456789abcdef" for c in value)


class ReasonRequired(ValueError):
    """Decrypting a person's data needs a stated reason (DESIGN.md §1.5); nothing was read."""


async def business_numbers(conn: Connection) -> list[str]:
    rows = await conn.fetch("SELECT phone_number_id FROM business_numbers ORDER BY phone_number_id")
    return [row["phone_number_id"] for row in rows]


# How far an identity is followed through the alias graph; a person has a handful of identifiers per number.
ALIAS_DEPTH_MAX = 32


# Every pseudonym connected to the given ones through subject_aliases, in either direction. An alias row says "the
# record sealed under subject_ref also named the person by alias_ref" (wa_id and business-scoped user id in one
# message): Meta's own assertion that both are one person. Rows never link two business numbers (a pseudonym is
# per number), so the closure stays within the numbers asked for. Each row keeps the pseudonym it started from.
LINKED_SQL = """
WITH RECURSIVE reach(start, ref, depth) AS (
    SELECT s, s, 0 FROM unnest($1::text[]) AS s
    UNION
    SELECT r.start, n.other, r.depth + 1
    FROM reach r
    CROSS JOIN LATERAL (
        SELECT a.subject_ref AS other FROM subject_aliases a WHERE a.alias_ref = r.ref
        UNION ALL
        SELECT a.alias_ref FROM subject_aliases a WHERE a.subject_ref = r.ref
    ) n
    WHERE r.depth < $2
)
SELECT DISTINCT start, ref FROM reach
"""


async def linked_subject_refs(conn: Connection, refs: Iterable[str]) -> dict[str, set[str]]:
    """For each of ``refs``, itself and every pseudonym linked to it, transitively (one query for all of them)."""
    start = sorted(set(refs))
    found: dict[str, set[str]] = {ref: {ref} for ref in start}
    if start:
        for row in await conn.fetch(LINKED_SQL, start, ALIAS_DEPTH_MAX):
            found[row["start"]].add(row["ref"])
    return found


async def expand_subject_refs(conn: Connection, refs: Iterable[str]) -> list[str]:
    """``refs`` and every pseudonym linked to them, transitively: a person first seen by phone number, then by
    phone number and business-scoped user id, then by user id only is one person under all three."""
    return sorted({ref for linked in (await linked_subject_refs(conn, refs)).values() for ref in linked})


async def resolve_subject_refs(
    conn: Connection, pepper: bytes, contact: str, phone_number_id: str | None = None
) -> list[str]:
    """Every subject_ref under which this person's records are sealed (possibly none): the pseudonyms of
    ``contact`` under each business number (or the one given), and every pseudonym linked to them.

    A phone number that changed hands (services/core/holders.py) names its current holder: the person who left it
    is reached by their new number, through the link the change made."""
    numbers = [phone_number_id] if phone_number_id else await business_numbers(conn)
    firsts = {number: subject_ref(pepper, number, contact) for number in numbers}
    changes = await number_changes(conn, firsts.values())
    holders = [
        holder_ref(pepper, number, contact, current_since(changes.get(first, ()))) for number, first in firsts.items()
    ]
    return await expand_subject_refs(conn, holders)


def require_reason(reason: str | None) -> str:
    if reason is None or len(reason.strip()) < 3:
        raise ReasonRequired("a reason is required to decrypt a person's records (it is written to the audit log)")
    return reason.strip()


async def write_audit(
    conn: Connection,
    *,
    actor: str,
    action: str,
    reason: str | None,
    subject_ref: str | None = None,
    record_count: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Append one audit row. Pseudonyms, counts and references only — never a phone number or content."""
    await conn.execute(
        "INSERT INTO audit_log (actor, action, reason, subject_ref, record_count, details) "
        "VALUES ($1, $2, $3, $4, $5, $6::jsonb)",
        actor,
        action,
        reason,
        subject_ref,
        record_count,
        orjson.dumps(dict(details or {})).decode(),
    )


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One row of the audit log; ``details`` is its JSON object as text, as stored."""

    audit_id: int
    at: datetime
    actor: str
    action: str
    reason: str | None
    subject_ref: str | None
    record_count: int | None
    details: str

    def to_json(self) -> dict[str, Any]:
        return {
            "audit_id": self.audit_id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "action": self.action,
            "reason": self.reason,
            "subject_ref": self.subject_ref,
            "record_count": self.record_count,
            "details": self.details,
        }


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit rows to list: each field given narrows the list (all of them: the newest rows)."""

    actor: str | None = None
    action: str | None = None
    subject_ref: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def recent_audit(conn: Connection, limit: int, where: AuditFilter | None = None) -> list[AuditEntry]:
    """The newest ``limit`` audit rows matching ``where``, oldest first (for `wa-archive audit`, ``GET /v1/audit``
    and the console's audit page)."""
    where = where or AuditFilter()
    rows = await conn.fetch(
        "SELECT audit_id, at, actor, action, reason, subject_ref, record_count, details::text AS details "
        "FROM audit_log WHERE ($2::text IS NULL OR actor = $2) AND ($3::text IS NULL OR action = $3)"
        " AND ($4::text IS NULL OR subject_ref = $4) AND ($5::timestamptz IS NULL OR at >= $5)"
        " AND ($6::timestamptz IS NULL OR at <= $6) ORDER BY audit_id DESC LIMIT $1",
        limit,
        where.actor,
        where.action,
        where.subject_ref,
        where.since,
        where.until,
    )
    return [AuditEntry(**dict(row)) for row in reversed(rows)]
