"""Legal holds: data under a hold is never deleted by retention nor shredded by an erasure (GDPR Art. 17(3)(e)).

A hold covers a WABA, a business phone number, a contact (every pseudonym of the person, under every business
number), one conversation (the person under one number) or a Cloud API group (every record of the group: each
participant's messages there and the group's own updates; a participant's erasure waits while the hold lasts).
Holds are released, never deleted, so the audit log and the table together show when data was protected and by
which case.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.core.audit import write_audit
from services.core.db import Connection
from services.core.identity import expand_subject_refs, resolve_subject_refs
from services.core.index import binary_keys
from services.core.pseudonym import group_ref
from services.core.refusals import InvalidRequest
from services.core.vocabulary import PERSON_HOLD_SCOPES, HoldScope

# Orders hold creation against deletions. Retention chunks and erasures hold this advisory lock shared from the
# moment they check for holds until their deletions are done; creating a hold takes it exclusively. So once
# create_hold has returned, no deletion that checked before the hold existed is still running.
HOLDS_LOCK_ID = 0x5741_484F_4C44  # "WAHOLD"


@contextlib.asynccontextmanager
async def holds_settled(conn: Connection) -> AsyncIterator[None]:
    """No hold can be created while this block runs (it waits for us); holds checked inside stay true."""
    await conn.execute("SELECT pg_advisory_lock_shared($1)", HOLDS_LOCK_ID)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock_shared($1)", HOLDS_LOCK_ID)


async def held_objects(conn: Connection, object_keys: Sequence[str]) -> set[str]:
    """The objects among ``object_keys`` that hold at least one record covered by an active hold: of a held
    WABA, a held business number, a held person (contact and conversation holds list the pseudonyms) or a held
    group.
    The active holds are read once and matched as arrays: one pass over the objects' index rows."""
    if not object_keys:
        return set()
    holds = await conn.fetch(
        "SELECT scope, waba_id, phone_number_id, subject_refs, group_ref FROM legal_holds WHERE released_at IS NULL"
    )
    if not holds:
        return set()
    wabas = sorted({h["waba_id"] for h in holds if h["scope"] == "waba"})
    numbers = sorted({h["phone_number_id"] for h in holds if h["scope"] == "phone_number"})
    groups = sorted({h["group_ref"] for h in holds if h["scope"] == "group"})
    # A contact or conversation hold covers the person, not only the pseudonyms known when it was placed: an
    # identifier learned since (a business-scoped user id, say) is reached through the alias graph.
    placed = {ref for h in holds if h["scope"] in PERSON_HOLD_SCOPES for ref in h["subject_refs"]}
    refs = await expand_subject_refs(conn, placed)
    rows = await conn.fetch(
        "SELECT DISTINCT object_key FROM archived_events WHERE object_key = ANY($1::text[])"
        " AND (waba_id = ANY($2::text[]) OR phone_number_id = ANY($3::text[]) OR subject_ref = ANY($4::bytea[])"
        " OR group_ref = ANY($5::bytea[]))",
        list(object_keys),
        wabas,
        numbers,
        binary_keys(refs),
        groups,
    )
    return {row["object_key"] for row in rows}


class HoldError(InvalidRequest):
    """The hold request is incomplete (e.g. a conversation hold without a phone number)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    hold_id: str
    case_ref: str
    scope: HoldScope
    waba_id: str | None
    phone_number_id: str | None
    subject_count: int
    created_by: str
    created_at: datetime
    released_at: datetime | None

    def to_json(self) -> dict[str, object]:
        return {
            "hold_id": self.hold_id,
            "case_ref": self.case_ref,
            "scope": self.scope,
            "waba_id": self.waba_id,
            "phone_number_id": self.phone_number_id,
            "subject_count": self.subject_count,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
            "released_at": self.released_at.isoformat() if self.released_at else None,
        }


def _hold(row: asyncpg.Record) -> Hold:
    return Hold(
        hold_id=str(row["hold_id"]),
        case_ref=row["case_ref"],
        scope=row["scope"],
        waba_id=row["waba_id"],
        phone_number_id=row["phone_number_id"],
        subject_count=len(row["subject_refs"] or []),
        created_by=row["created_by"],
        created_at=row["created_at"],
        released_at=row["released_at"],
    )


async def create_hold(
    conn: Connection,
    pepper: bytes,
    *,
    scope: HoldScope,
    case_ref: str,
    actor: str,
    waba_id: str | None = None,
    phone_number_id: str | None = None,
    contact: str | None = None,
    group_id: str | None = None,
    subject_refs: Sequence[str] | None = None,
) -> Hold:
    """Place a hold (audited ``hold.create``, reason: the case reference). A contact hold names the person by
    ``contact`` (resolved under every business number) or by ``subject_refs`` (pseudonyms already resolved, with
    every pseudonym linked to them: a case's custodian); :class:`HoldError` when the scope's identifiers are
    missing."""
    if not case_ref.strip():
        raise HoldError("a hold needs a case reference")
    refs: list[str] = []
    if scope == "waba" and not waba_id:
        raise HoldError("a WABA hold needs --waba-id")
    if scope == "phone_number" and not phone_number_id:
        raise HoldError("a phone-number hold needs --phone-number-id")
    group: bytes | None = None
    if scope == "group":
        if not group_id:
            raise HoldError("a group hold needs --group-id")
        group = bytes.fromhex(group_ref(pepper, group_id))
    if scope == "contact" and subject_refs:
        refs = await expand_subject_refs(conn, subject_refs)
    elif scope in PERSON_HOLD_SCOPES:
        if not contact:
            raise HoldError(f"a {scope} hold needs --contact")
        if scope == "conversation" and not phone_number_id:
            raise HoldError("a conversation hold needs --phone-number-id")
        refs = await resolve_subject_refs(conn, pepper, contact, phone_number_id if scope == "conversation" else None)
    hold_id = uuid.uuid4()
    async with conn.transaction():
        # waits for running deletions that checked holds before this one existed
        await conn.execute("SELECT pg_advisory_xact_lock($1)", HOLDS_LOCK_ID)
        row = await conn.fetchrow(
            "INSERT INTO legal_holds (hold_id, case_ref, scope, waba_id, phone_number_id, subject_refs, created_by,"
            " group_ref) VALUES ($1, $2, $3, $4, $5, $6::text[], $7, $8) RETURNING *",
            hold_id,
            case_ref,
            scope,
            waba_id,
            phone_number_id,
            refs,
            actor,
            group,
        )
        await write_audit(
            conn, actor=actor, action="hold.create", reason=case_ref, details={"hold_id": str(hold_id), "scope": scope}
        )
    assert row is not None
    return _hold(row)


async def release_hold(conn: Connection, hold_id: str, *, actor: str) -> Hold | None:
    async with conn.transaction():
        row = await conn.fetchrow(
            "UPDATE legal_holds SET released_at = now(), released_by = $2 "
            "WHERE hold_id = $1::uuid AND released_at IS NULL RETURNING *",
            hold_id,
            actor,
        )
        if row is not None:
            await write_audit(
                conn, actor=actor, action="hold.release", reason=row["case_ref"], details={"hold_id": hold_id}
            )
    return _hold(row) if row is not None else None


async def list_holds(conn: Connection, *, include_released: bool = False) -> list[Hold]:
    rows = await conn.fetch(
        "SELECT * FROM legal_holds WHERE $1 OR released_at IS NULL ORDER BY created_at", include_released
    )
    return [_hold(row) for row in rows]


async def holds_covering(conn: Connection, subject_refs: Sequence[str]) -> list[Hold]:
    """Active holds that cover any record of these subjects (directly, through their number or WABA, or through a
    group they have records in)."""
    rows = await conn.fetch(
        """SELECT DISTINCT h.* FROM legal_holds h WHERE h.released_at IS NULL AND (
               h.subject_refs && $1::text[]
            OR (h.scope = 'phone_number' AND EXISTS (SELECT 1 FROM archived_events e
                 WHERE e.subject_ref = ANY($2::bytea[]) AND e.phone_number_id = h.phone_number_id))
            OR (h.scope = 'waba' AND EXISTS (SELECT 1 FROM archived_events e
                 WHERE e.subject_ref = ANY($2::bytea[]) AND e.waba_id = h.waba_id))
            OR (h.scope = 'group' AND EXISTS (SELECT 1 FROM archived_events e
                 WHERE e.subject_ref = ANY($2::bytea[]) AND e.group_ref = h.group_ref)))""",
        list(subject_refs),
        binary_keys(subject_refs),
    )
    return [_hold(row) for row in rows]
