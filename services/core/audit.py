"""The audit log: the one writer of its rows, and its reading for the CLI, the API and the console.

Every action that changes the archive or discloses what it holds writes a row here (pseudonyms, counts and
references; never a phone number or content). Reads that decrypt a person's records state a reason first
(:func:`require_reason`) and write their row *before* anything is decrypted. The table is append-only in
PostgreSQL (a trigger and the roles' grants), so nothing here updates or deletes a row.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from services.core.identity import Connection
from services.core.refusals import ReasonRequired


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
