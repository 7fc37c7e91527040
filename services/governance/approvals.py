"""Four eyes: requests for what cannot be undone, and their decisions (table ``approval_requests``, migration 0026).

One operator *requests* (a kind, a target, a reason); another, with the role the kind names and never the
requester, *approves* it before it expires, and the action is then carried out as the approver on behalf of the
request (services/actions/approvals.py runs it); or *rejects* it, with a reason, and nothing is done. This module
is the storage and the pure rules; which kinds exist and how each is carried out is the action layer's registry.

No personal data in clear: ``target`` holds references only (pseudonyms, a hold's id, a case's reference, counts);
the reasons may quote a person, so they are sealed under the DEK of the person the request names (an erasure of
the person destroys it: the reason is then read as None), else under the request's own key wrapped by the KEK.

A request's life: ``pending`` → ``approved`` (then carried out: the outcome is stored; a refusal met while carrying
it out makes it ``failed``, with the refusal's words) or ``rejected``. A pending request past its expiry is shown
``expired`` and can no longer be approved: nothing writes that state, so no sweep can be late. A kind whose
decision is a record another service waits for (a held send: services/actions/held_sends.py) marks when that record
was acknowledged (``published_at``); for an expired one, a sweep publishes the ``expired`` record and marks it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import asyncpg
import orjson

from services.core.crypto import WrappedDek, new_dek, open_record, seal_record
from services.core.db import Connection, ConnectionOrPool
from services.core.keyring import Keyring
from services.core.refusals import Forbidden, InvalidRequest, NotFound

RequestStatus = Literal["pending", "approved", "rejected", "failed"]
# What a request is shown as: its stored status, or ``expired`` for a pending one past its expiry.
RequestState = Literal["pending", "expired", "approved", "rejected", "failed"]

REASON_MIN = 3
REASON_MAX = 500


class ApprovalRefused(InvalidRequest):
    """The request cannot be decided now: it was decided already, or it expired; nothing was done."""

    http_status = 409
    kind = "approval"


class SelfApproval(Forbidden):
    """The requester may not approve (or reject) their own request: four eyes means another person."""

    kind = "four_eyes"


class UnknownRequest(NotFound):
    """No approval request with this id."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalRequest:
    """One request as stored, its reasons opened (``reason``/``decision``: None once the person they were sealed
    under is erased). ``target`` holds references only, as the kind's request wrote them."""

    request_id: str
    kind: str
    target: Mapping[str, Any]
    subject_ref: str | None
    reason: str | None
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    status: RequestStatus
    decided_by: str | None
    decided_at: datetime | None
    decision: str | None
    outcome: Mapping[str, Any] | None
    # When the decision was published to Kafka, for a kind whose decision is a record (a held send); else None.
    published_at: datetime | None = None

    def state(self, now: datetime) -> RequestState:
        return request_state(self.status, self.expires_at, now)

    def to_json(self, now: datetime) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "kind": self.kind,
            "target": dict(self.target),
            "subject_ref": self.subject_ref,
            "reason": self.reason,
            "requested_by": self.requested_by,
            "requested_at": self.requested_at.isoformat(),
            "expires_at": self.expires_at.isoformat(),
            "state": self.state(now),
            "decided_by": self.decided_by,
            "decided_at": self.decided_at.isoformat() if self.decided_at else None,
            "decision": self.decision,
            "outcome": dict(self.outcome) if self.outcome is not None else None,
            "published_at": self.published_at.isoformat() if self.published_at else None,
        }


def request_state(status: RequestStatus, expires_at: datetime, now: datetime) -> RequestState:
    """``expired`` for a pending request whose expiry has come (at the very instant too), else its status."""
    if status == "pending" and now >= expires_at:
        return "expired"
    return status


def check_decision(request: ApprovalRequest, decider: str, now: datetime) -> None:
    """Whether ``decider`` may decide ``request`` now: :class:`SelfApproval` for its requester, then
    :class:`ApprovalRefused` when it is no longer pending (decided, or expired). The role is the caller's check."""
    if decider == request.requested_by:
        raise SelfApproval("you asked for this: another person must approve or reject it (four eyes)")
    state = request.state(now)
    if state == "expired":
        raise ApprovalRefused(
            f"this request expired at {request.expires_at.isoformat(timespec='minutes')}: nothing was done; "
            "ask again if it is still needed"
        )
    if state != "pending":
        raise ApprovalRefused(f"this request was {state} already by {request.decided_by}: nothing was done")


def check_reason(reason: str | None, what: str = "reason") -> str:
    text = (reason or "").strip()
    if len(text) < REASON_MIN:
        raise InvalidRequest(f"a {what} of at least {REASON_MIN} characters is required (it is kept with the request)")
    if len(text) > REASON_MAX:
        raise InvalidRequest(f"the {what} is longer than {REASON_MAX} characters")
    return text


# --- sealing ------------------------------------------------------------------------------------------------------


def _own_subject(request_id: str) -> str:
    return f"approval-request/{request_id}"


def _record_id(request_id: str, what: str) -> str:
    return f"approval/{request_id}/{what}"


async def _person_key(
    conn: ConnectionOrPool, keyring: Keyring, subject_refs: Sequence[str], dek_id: str | None = None
) -> tuple[str, str, bytes] | None:
    """(pseudonym, dek id, key) of the first of ``subject_refs`` with a live key (with ``dek_id``: that key only),
    read from ``subject_keys`` and unwrapped here, never put in the keyring's cache: a request listed in the
    console must not leave a person's key cached in a process that an erasure elsewhere would not reach."""
    row = await conn.fetchrow(
        "SELECT subject_ref, dek_id::text AS dek_id, kek_id, wrapped_dek FROM subject_keys"
        " WHERE subject_ref = ANY($1::text[]) AND ($2::uuid IS NULL OR dek_id = $2::uuid) ORDER BY subject_ref LIMIT 1",
        list(subject_refs),
        dek_id,
    )
    if row is None:
        return None
    wrapped = WrappedDek(kek_id=row["kek_id"], blob=bytes(row["wrapped_dek"]))
    return row["subject_ref"], row["dek_id"], keyring.kek.unwrap(wrapped, subject_ref=row["subject_ref"])


async def _key(keyring: Keyring, row: asyncpg.Record) -> tuple[bytes, str] | None:
    """The key the request's texts are sealed under and the subject they are bound to; None when it was the
    person's and the person was erased since."""
    request_id = str(row["request_id"])
    if row["dek_id"] is not None:
        found = await _person_key(keyring.pool, keyring, [row["subject_ref"]], str(row["dek_id"]))
        return None if found is None else (found[2], row["subject_ref"])
    wrapped = WrappedDek(kek_id=row["kek_id"], blob=bytes(row["wrapped_key"]))
    return keyring.kek.unwrap(wrapped, subject_ref=_own_subject(request_id)), _own_subject(request_id)


async def _open(keyring: Keyring, row: asyncpg.Record, what: str, sealed: bytes | None) -> str | None:
    if sealed is None:
        return None
    key = await _key(keyring, row)
    if key is None:
        return None
    record_id = _record_id(str(row["request_id"]), what)
    return open_record(bytes(sealed), key[0], event_id=record_id, subject_ref=key[1]).decode()


async def _request(keyring: Keyring, row: asyncpg.Record) -> ApprovalRequest:
    return ApprovalRequest(
        request_id=str(row["request_id"]),
        kind=row["kind"],
        target=orjson.loads(row["target"]),
        subject_ref=row["subject_ref"],
        reason=await _open(keyring, row, "reason", row["sealed_reason"]),
        requested_by=row["requested_by"],
        requested_at=row["requested_at"],
        expires_at=row["expires_at"],
        status=row["status"],
        decided_by=row["decided_by"],
        decided_at=row["decided_at"],
        decision=await _open(keyring, row, "decision", row["sealed_decision"]),
        outcome=orjson.loads(row["outcome"]) if row["outcome"] is not None else None,
        published_at=row["published_at"],
    )


_COLUMNS = (
    "request_id, kind, target::text AS target, subject_ref, dek_id, kek_id, wrapped_key, sealed_reason, requested_by,"
    " requested_at, expires_at, status, decided_by, decided_at, sealed_decision, outcome::text AS outcome, published_at"
)

_INSERT = (  # noqa: S608 — constant columns
    "INSERT INTO approval_requests (request_id, kind, target, subject_ref, dek_id, kek_id, wrapped_key, sealed_reason,"
    " requested_by, requested_at, expires_at, source_ref)"
    " VALUES ($1::uuid, $2, $3::json, $4, $5::uuid, $6, $7, $8, $9, $10, $11, $12)"
    " ON CONFLICT (kind, source_ref) WHERE source_ref IS NOT NULL DO NOTHING RETURNING "
) + _COLUMNS
_DECIDE = (  # noqa: S608 — constant columns
    "UPDATE approval_requests SET status = $2, decided_by = $3, decided_at = $4, sealed_decision = $5"
    " WHERE request_id = $1 RETURNING "
) + _COLUMNS


# --- storage ------------------------------------------------------------------------------------------------------


async def create_request(
    conn: ConnectionOrPool,
    keyring: Keyring,
    *,
    kind: str,
    target: Mapping[str, Any],
    subject_refs: Sequence[str],
    reason: str,
    requested_by: str,
    ttl: timedelta,
    now: datetime | None = None,
) -> ApprovalRequest:
    """Store a pending request expiring ``ttl`` after ``now``, about the person ``subject_refs`` name (their
    pseudonyms; none for a request about no person). The reason is sealed under the live DEK of the first of them
    that has one, else under a key of the request's own. ``target`` must hold references only: the caller (the
    kind's request) is responsible for that. Not audited here: the action layer writes the row."""
    now = now or datetime.now(UTC)
    created = await _insert(
        conn,
        keyring,
        kind=kind,
        target=target,
        subject_refs=subject_refs,
        reason=reason,
        requested_by=requested_by,
        expires_at=now + ttl,
        now=now,
        source_ref=None,
    )
    assert created is not None  # without a source, nothing conflicts
    return created


async def open_sourced_request(
    conn: ConnectionOrPool,
    keyring: Keyring,
    *,
    kind: str,
    source_ref: str,
    target: Mapping[str, Any],
    subject_refs: Sequence[str],
    reason: str,
    requested_by: str,
    expires_at: datetime,
    now: datetime | None = None,
) -> ApprovalRequest | None:
    """:func:`create_request` for a request that a consumed record opens (a held send): at most one per ``kind``
    and ``source_ref`` (the record's own id), whatever the number of times the record is consumed. None when
    that request exists already (nothing is written)."""
    return await _insert(
        conn,
        keyring,
        kind=kind,
        target=target,
        subject_refs=subject_refs,
        reason=reason,
        requested_by=requested_by,
        expires_at=expires_at,
        now=now or datetime.now(UTC),
        source_ref=source_ref,
    )


async def _insert(
    conn: ConnectionOrPool,
    keyring: Keyring,
    *,
    kind: str,
    target: Mapping[str, Any],
    subject_refs: Sequence[str],
    reason: str,
    requested_by: str,
    expires_at: datetime,
    now: datetime,
    source_ref: str | None,
) -> ApprovalRequest | None:
    request_id = str(uuid.uuid4())
    subject_ref = subject_refs[0] if subject_refs else None
    dek_id: str | None = None
    wrapped: WrappedDek | None = None
    # A person resolved under every business number has many pseudonyms, few with a key: one query finds one.
    dek = await _person_key(conn, keyring, subject_refs) if subject_refs else None
    if dek is not None:
        subject_ref, dek_id, key = dek
        bound = subject_ref
    else:
        key, bound = new_dek(), _own_subject(request_id)
        wrapped = keyring.kek.wrap(key, subject_ref=bound)
    row = await conn.fetchrow(
        _INSERT,
        request_id,
        kind,
        orjson.dumps(dict(target)).decode(),
        subject_ref,
        dek_id,
        wrapped.kek_id if wrapped else None,
        wrapped.blob if wrapped else None,
        seal_record(reason.encode(), key, event_id=_record_id(request_id, "reason"), subject_ref=bound),
        requested_by,
        now,
        expires_at,
        source_ref,
    )
    return None if row is None else await _request(keyring, row)


def _parse_id(request_id: str) -> str:
    try:
        return str(uuid.UUID(request_id))
    except ValueError:
        raise UnknownRequest("no approval request with this id") from None


async def get_request(conn: ConnectionOrPool, keyring: Keyring, request_id: str) -> ApprovalRequest:
    """The request; :class:`UnknownRequest` when there is none."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM approval_requests WHERE request_id = $1::uuid",  # noqa: S608 — constant columns
        _parse_id(request_id),
    )
    if row is None:
        raise UnknownRequest("no approval request with this id")
    return await _request(keyring, row)


async def list_requests(
    conn: ConnectionOrPool, keyring: Keyring, *, pending_only: bool, now: datetime | None = None, limit: int = 200
) -> list[ApprovalRequest]:
    """The newest requests first; with ``pending_only``, those still pending and not expired, soonest to expire
    first (what waits for a decision)."""
    now = now or datetime.now(UTC)
    if pending_only:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM approval_requests WHERE status = 'pending' AND expires_at > $1"  # noqa: S608
            " ORDER BY expires_at LIMIT $2",
            now,
            limit,
        )
    else:
        rows = await conn.fetch(
            f"SELECT {_COLUMNS} FROM approval_requests ORDER BY requested_at DESC LIMIT $1",  # noqa: S608
            limit,
        )
    return [await _request(keyring, row) for row in rows]


async def requests_about_case(
    conn: ConnectionOrPool, keyring: Keyring, *, kind: str, case_ref: str, limit: int = 20
) -> list[ApprovalRequest]:
    """The requests of ``kind`` whose target names the case ``case_ref``, newest first (a case page's exports)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM approval_requests WHERE kind = $1 AND target->>'case_ref' = $2"  # noqa: S608
        " ORDER BY requested_at DESC LIMIT $3",
        kind,
        case_ref,
        limit,
    )
    return [await _request(keyring, row) for row in rows]


async def pending_heads(conn: ConnectionOrPool, now: datetime | None = None) -> list[tuple[str, str]]:
    """(kind, requester) of every pending, unexpired request: who may decide what, without opening a reason."""
    rows = await conn.fetch(
        "SELECT kind, requested_by FROM approval_requests WHERE status = 'pending' AND expires_at > $1",
        now or datetime.now(UTC),
    )
    return [(row["kind"], row["requested_by"]) for row in rows]


async def pending_counts(conn: ConnectionOrPool, now: datetime | None = None) -> dict[str, int]:
    """Pending, unexpired requests by kind (the gauge and the console's count)."""
    rows = await conn.fetch(
        "SELECT kind, count(*) AS n FROM approval_requests WHERE status = 'pending' AND expires_at > $1 GROUP BY kind",
        now or datetime.now(UTC),
    )
    return {row["kind"]: row["n"] for row in rows}


async def pending_nearest_expiry(conn: ConnectionOrPool, now: datetime | None = None) -> dict[str, float]:
    """Seconds until the soonest pending, unexpired request of each kind expires (kinds with none left out)."""
    moment = now or datetime.now(UTC)
    rows = await conn.fetch(
        "SELECT kind, min(expires_at) AS soonest FROM approval_requests WHERE status = 'pending' AND expires_at > $1"
        " GROUP BY kind",
        moment,
    )
    return {row["kind"]: (row["soonest"] - moment).total_seconds() for row in rows}


async def decide(
    conn: Connection,
    keyring: Keyring,
    request_id: str,
    *,
    decider: str,
    status: Literal["approved", "rejected"],
    reason: str,
    now: datetime | None = None,
) -> ApprovalRequest:
    """Record a decision on a pending request, the row locked so that two deciders cannot both win; the decision's
    reason sealed as the request's. Raises (nothing written) :class:`UnknownRequest`, :class:`SelfApproval`,
    :class:`ApprovalRefused` (decided already, or expired). The caller, in the same transaction, audits it, and
    for an approval carries the action out after."""
    now = now or datetime.now(UTC)
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM approval_requests WHERE request_id = $1::uuid FOR UPDATE",  # noqa: S608
        _parse_id(request_id),
    )
    if row is None:
        raise UnknownRequest("no approval request with this id")
    check_decision(await _request(keyring, row), decider, now)
    key = await _key(keyring, row)
    if key is None:
        # The person was erased by another way meanwhile: the decision's words have no key to be sealed under.
        sealed = None
    else:
        sealed = seal_record(
            reason.encode(), key[0], event_id=_record_id(str(row["request_id"]), "decision"), subject_ref=key[1]
        )
    updated = await conn.fetchrow(
        _DECIDE,
        row["request_id"],
        status,
        decider,
        now,
        sealed,
    )
    assert updated is not None
    return await _request(keyring, updated)


async def record_outcome(conn: ConnectionOrPool, request_id: str, *, failed: bool, outcome: Mapping[str, Any]) -> None:
    """Store what carrying out an approved request returned (references and counts), or the refusal met."""
    await conn.execute(
        "UPDATE approval_requests SET outcome = $2::json, status = CASE WHEN $3 THEN 'failed' ELSE status END"
        " WHERE request_id = $1::uuid",
        request_id,
        orjson.dumps(dict(outcome)).decode(),
        failed,
    )


async def mark_published(conn: Connection, request_id: str, *, now: datetime | None = None) -> None:
    """Record that the request's decision record was acknowledged: it is never published again."""
    await conn.execute(
        "UPDATE approval_requests SET published_at = $2 WHERE request_id = $1::uuid",
        request_id,
        now or datetime.now(UTC),
    )


async def lock_expired_unpublished(
    conn: Connection, keyring: Keyring, *, kind: str, now: datetime | None = None, limit: int = 50
) -> list[ApprovalRequest]:
    """The pending requests of ``kind`` opened from a record (:func:`open_sourced_request`) whose expiry has come
    and whose decision was not published yet, locked until the caller's transaction ends (another sweeper skips
    them; an approver waits, then finds them expired). Soonest expired first. ``conn`` must be in a transaction."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM approval_requests WHERE status = 'pending' AND source_ref IS NOT NULL"  # noqa: S608
        " AND published_at IS NULL AND expires_at <= $1 AND kind = $2 ORDER BY expires_at LIMIT $3"
        " FOR UPDATE SKIP LOCKED",
        now or datetime.now(UTC),
        kind,
        limit,
    )
    return [await _request(keyring, row) for row in rows]
