"""Erasure requests as records: the DPO's decisions on an open request (refused on a legal ground, its deadline
extended once), the deadlines the metrics and alerts watch, and the listing the CLI, the API and the console show.
Carrying a request out is services/governance/erasure.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.core.audit import write_audit
from services.core.db import Connection, ConnectionOrPool
from services.governance.erasure import (
    ERASURE_EXTENSION,
    EXTENSION_REASON_MAX,
    OPEN_STATUSES,
    ErasureError,
    UnknownErasure,
)
from services.governance.grounds import REFUSAL_GROUNDS


async def refuse_erasure(conn: Connection, request_ref: str, *, ground: str, actor: str) -> ErasureRequest:
    """The data protection officer refuses the open request on a legal ground (Art. 17(3), Art. 12(5)); the person
    must be told why and of their right to complain (Art. 12(4)). Final: nothing processes it again."""
    if ground not in REFUSAL_GROUNDS:
        raise ErasureError(f"unknown refusal ground; one of: {', '.join(REFUSAL_GROUNDS)}")
    async with conn.transaction():
        row = await _open_request(conn, request_ref)
        if row["status"] == "in_progress":
            raise ErasureError("the erasure is in progress: its keys may already be destroyed")
        await conn.execute(
            "UPDATE erasure_requests SET status = 'refused', refusal_ground = $2, refused_at = now()"
            " WHERE request_ref = $1",
            request_ref,
            ground,
        )
        await write_audit(
            conn,
            actor=actor,
            action="erasure.refused",
            reason=request_ref,
            details={"ground": ground, "was": row["status"]},
        )
    return await erasure_request(conn, request_ref)


async def extend_erasure(
    conn: Connection, request_ref: str, *, reason: str, actor: str, now: datetime | None = None
) -> ErasureRequest:
    """Extend the open request's deadline by two months (Art. 12(3)): once, before the first deadline has passed,
    with the reason the person is told. ``reason`` is stored and audited: a reference or a sentence, no data."""
    now = now or datetime.now(UTC)
    reason = reason.strip()
    if not reason or len(reason) > EXTENSION_REASON_MAX or not reason.isprintable():
        raise ErasureError(f"an extension needs a reason of 1 to {EXTENSION_REASON_MAX} printable characters")
    async with conn.transaction():
        row = await _open_request(conn, request_ref)
        if row["extended_at"] is not None:
            raise ErasureError("this request's deadline was already extended (Art. 12(3) allows one extension)")
        if now > row["deadline_at"]:
            raise ErasureError("the deadline has passed: an extension must be decided within the first month")
        deadline = row["deadline_at"] + ERASURE_EXTENSION
        await conn.execute(
            "UPDATE erasure_requests SET deadline_at = $2, extended_at = $3, extension_reason = $4,"
            " status = CASE WHEN status = 'in_progress' THEN status ELSE 'extended' END WHERE request_ref = $1",
            request_ref,
            deadline,
            now,
            reason,
        )
        await write_audit(
            conn,
            actor=actor,
            action="erasure.extended",
            reason=request_ref,
            details={"deadline_at": deadline.isoformat(), "was": row["status"]},
        )
    return await erasure_request(conn, request_ref)


async def _open_request(conn: ConnectionOrPool, request_ref: str) -> asyncpg.Record:
    row = await conn.fetchrow(
        "SELECT status, deadline_at, extended_at FROM erasure_requests WHERE request_ref = $1 FOR UPDATE",
        request_ref,
    )
    if row is None:
        raise UnknownErasure("no erasure request with this reference")
    if row["status"] not in OPEN_STATUSES:
        raise ErasureError(f"the request is {row['status']}: it can no longer change")
    return row


async def pending_erasures(conn: ConnectionOrPool) -> ErasureDeadlines:
    """What the deadline metrics show: the open requests, the oldest one's age and the nearest deadline."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(received_at)), 0) AS age,"
        " extract(epoch FROM min(deadline_at) - now()) AS nearest, count(*) FILTER (WHERE deadline_at < now()) AS late"
        " FROM erasure_requests WHERE status = ANY($1::text[])",
        list(OPEN_STATUSES),
    )
    assert row is not None
    nearest = float(row["nearest"]) if row["nearest"] is not None else None
    return ErasureDeadlines(int(row["n"]), float(row["age"]), nearest, int(row["late"]))


@dataclass(frozen=True, slots=True)
class ErasureDeadlines:
    open: int
    oldest_age_s: float
    nearest_deadline_s: float | None  # negative when overdue; None without open requests
    overdue: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureRequest:
    """An erasure request as tracked against its deadline (``holds``: how many holds block it, 0 if none)."""

    request_ref: str
    status: str
    received_at: datetime
    deadline_at: datetime
    completed_at: datetime | None
    holds: int
    extended_at: datetime | None
    extension_reason: str | None
    refusal_ground: str | None
    refused_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        return {
            "request_ref": self.request_ref,
            "status": self.status,
            "received_at": self.received_at.isoformat(),
            "deadline_at": self.deadline_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "holds": self.holds,
            "extended_at": self.extended_at.isoformat() if self.extended_at else None,
            "extension_reason": self.extension_reason,
            "refusal_ground": self.refusal_ground,
            "refused_at": self.refused_at.isoformat() if self.refused_at else None,
        }


REQUEST_COLUMNS = (
    "request_ref, status, received_at, deadline_at, completed_at, cardinality(blocked_by) AS holds, extended_at,"
    " extension_reason, refusal_ground, refused_at"
)


async def erasure_requests(conn: ConnectionOrPool) -> list[ErasureRequest]:
    """Every erasure request, oldest first."""
    rows = await conn.fetch(f"SELECT {REQUEST_COLUMNS} FROM erasure_requests ORDER BY received_at")  # noqa: S608
    return [ErasureRequest(**dict(row)) for row in rows]


async def erasure_request(conn: ConnectionOrPool, request_ref: str) -> ErasureRequest:
    row = await conn.fetchrow(
        f"SELECT {REQUEST_COLUMNS} FROM erasure_requests WHERE request_ref = $1",  # noqa: S608 — constant columns
        request_ref,
    )
    if row is None:
        raise UnknownErasure("no erasure request with this reference")
    return ErasureRequest(**dict(row))
