"""Find every pseudonym of a person, and write the audit trail of reads about them.

A person may be known by ``wa_id`` (phone number) or by a business-scoped ``user_id``; each business phone
number gives them a different pseudonym. :func:`resolve_subject_refs` returns all of them, following the alias
table, so retrieval, export, holds and erasure by either identifier reach all their data.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import orjson

from services.core.pseudonym import subject_ref

# A pool works too: each query then takes a connection of its own.
Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool


class ReasonRequired(ValueError):
    """Decrypting a person's data needs a stated reason (DESIGN.md §1.5); nothing was read."""


async def business_numbers(conn: Connection) -> list[str]:
    rows = await conn.fetch("SELECT phone_number_id FROM business_numbers ORDER BY phone_number_id")
    return [row["phone_number_id"] for row in rows]


async def resolve_subject_refs(
    conn: Connection, pepper: bytes, contact: str, phone_number_id: str | None = None
) -> list[str]:
    """Every subject_ref under which this person's records are sealed (possibly none)."""
    numbers = [phone_number_id] if phone_number_id else await business_numbers(conn)
    aliases = [subject_ref(pepper, number, contact) for number in numbers]
    rows = await conn.fetch(
        "SELECT DISTINCT subject_ref FROM subject_aliases WHERE alias_ref = ANY($1::text[]) "
        "UNION SELECT DISTINCT s2.subject_ref FROM subject_aliases s1 "
        "JOIN subject_aliases s2 ON s2.alias_ref = s1.alias_ref WHERE s1.subject_ref = ANY($1::text[])",
        aliases,
    )
    return sorted(set(aliases) | {row["subject_ref"] for row in rows})


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


async def recent_audit(conn: Connection, limit: int) -> list[AuditEntry]:
    """The newest ``limit`` audit rows, oldest first (for `wa-archive audit` and ``GET /v1/audit``)."""
    rows = await conn.fetch(
        "SELECT audit_id, at, actor, action, reason, subject_ref, record_count, details::text AS details "
        "FROM audit_log ORDER BY audit_id DESC LIMIT $1",
        limit,
    )
    return [AuditEntry(**dict(row)) for row in reversed(rows)]
