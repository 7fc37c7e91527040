"""The audit log: the one writer of its rows, and its reading for the CLI, the API and the console.

Every action that changes the archive or discloses what it holds writes a row here (pseudonyms, counts and
references; never a phone number or content). Reads that decrypt a person's records state a reason first
(:func:`require_reason`) and decrypt only through :func:`audited_decrypt`, which writes their rows first. The
table is append-only in PostgreSQL (a trigger and the roles' grants), so nothing here updates or deletes a row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
import orjson

from services.core.db import ConnectionOrPool
from services.core.refusals import ReasonRequired

LiveConnection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy  # one connection: it can hold a transaction


def require_reason(reason: str | None) -> str:
    if reason is None or len(reason.strip()) < 3:
        raise ReasonRequired("a reason is required to decrypt a person's records (it is written to the audit log)")
    return reason.strip()


# While an approved request is carried out (services/actions/approvals.py), who asked and who approved: every audit
# row written meanwhile, by whichever domain function, carries both names in its details (``approval``).
_APPROVAL: ContextVar[Mapping[str, str] | None] = ContextVar("wa_archive_approval", default=None)


@contextlib.contextmanager
def on_behalf_of(*, request_id: str, kind: str, requester: str, approver: str) -> Iterator[None]:
    """Within this block (and the tasks it starts), every audit row's details name the approval request, its
    kind, its requester and its approver, beside the row's actor (the approver, who carries the action out)."""
    token = _APPROVAL.set({"request_id": request_id, "kind": kind, "requester": requester, "approver": approver})
    try:
        yield
    finally:
        _APPROVAL.reset(token)


# While a reader reads under an approved break-glass access (services/actions/break_glass.py): the requests' ids,
# which every audit row written meanwhile carries (``break_glass``), so that a query finds every such read.
_BREAK_GLASS: ContextVar[tuple[str, ...]] = ContextVar("wa_archive_break_glass", default=())


@contextlib.contextmanager
def under_break_glass(request_ids: Sequence[str]) -> Iterator[None]:
    """Within this block, every audit row's details carry ``break_glass``: the ids of the break-glass requests the
    read relies on (nothing when there are none)."""
    token = _BREAK_GLASS.set(tuple(request_ids))
    try:
        yield
    finally:
        _BREAK_GLASS.reset(token)


def current_approval() -> Mapping[str, str] | None:
    """The approved request being carried out in this context (:func:`on_behalf_of`), if any."""
    return _APPROVAL.get()


async def write_audit(
    conn: ConnectionOrPool,
    *,
    actor: str,
    action: str,
    reason: str | None,
    subject_ref: str | None = None,
    record_count: int | None = None,
    details: Mapping[str, Any] | None = None,
) -> None:
    """Append one audit row. Pseudonyms, counts and references only — never a phone number or content. Inside
    :func:`on_behalf_of`, the details carry the approval (``approval``: request id, requester, approver)."""
    approval = _APPROVAL.get()
    if approval is not None:
        details = {**(details or {}), "approval": dict(approval)}
    if broken := _BREAK_GLASS.get():
        details = {**(details or {}), "break_glass": list(broken)}
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


T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class Disclosure:
    """What a read is about to decrypt, as the audit log records it: who (``actor``), why (``reason``), for what
    (``action``: ``retrieval``, ``export``, ``media``), and how many records of each pseudonym (``records``);
    ``details`` are added to every row (references only: a group's pseudonym, an event id)."""

    actor: str
    action: str
    reason: str
    records: Mapping[str, int]
    details: Mapping[str, Any] = field(default_factory=dict)


async def audited_decrypt(conn: LiveConnection, disclosure: Disclosure, decrypt: Callable[[], Awaitable[T]]) -> T:
    """Write the audit rows of ``disclosure`` (one per pseudonym, in one transaction), then — only once they are
    committed — run ``decrypt`` and return what it returns: no disclosure without a trace, even if the decryption
    then fails. Every read that decrypts a person's records goes through here.

    Refuses (:class:`ReasonRequired`) a disclosure without a reason, before writing or decrypting anything; a
    failed audit write raises asyncpg's error and nothing is decrypted. ``conn`` must be a connection (the rows'
    transaction), not the pool.
    """
    reason = require_reason(disclosure.reason)
    async with conn.transaction():
        for subject_ref, count in sorted(disclosure.records.items()):
            await write_audit(
                conn,
                actor=disclosure.actor,
                action=disclosure.action,
                reason=reason,
                subject_ref=subject_ref,
                record_count=count,
                details=disclosure.details,
            )
    return await decrypt()


@dataclass(frozen=True, slots=True, kw_only=True)
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


async def recent_audit(conn: ConnectionOrPool, limit: int, where: AuditFilter | None = None) -> list[AuditEntry]:
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
