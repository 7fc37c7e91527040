"""Cases: what groups the messages of a dispute, and the incident record after a deletion crisis.

A case has a reference (``CASE-2026-0001``, or one given: it names no person), a title, a period, a status
(``open`` → ``closed``), custodians (business numbers, persons by their pseudonyms, groups), the reviewers assigned
to it (operator names), saved searches (words, optionally one custodian), review tags and notes on messages (by
event id), and, when it records a deletion crisis, an incident section: what was deleted, by whom, when, and what
was communicated.

Legal holds: a case opened ``with_holds`` places one hold per custodian through services/governance/holds.py (its
case reference on the hold, its id on the custodian row), so retention and erasure refuse what the case covers as
they refuse any hold; closing the case releases them, with the reason audited.

Encryption (docs/GDPR.md, "Cases"):

- a note may quote a person: it is sealed with AES-256-GCM under the DEK of the person the noted message belongs to
  (bound to the note's id and that pseudonym), so shredding the person's key makes it unreadable at once, and the
  erasure deletes the note rows in the same transaction (services/governance/erasure.py);
- the title, the incident section and the saved searches' words are sealed under the case's own key: a random
  256-bit key wrapped by the KEK and bound to the case id. They describe the case, not one person: they stay
  readable for as long as the case exists.

Nothing here logs a title, a note, an incident or a search's words; the audit rows hold references, pseudonyms,
event ids and counts only. Every function that changes a case writes its audit row in the same transaction.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

import asyncpg
import orjson

from services.core.audit import write_audit
from services.core.crypto import KekProvider, RecordTampered, WrappedDek, new_dek, open_record, seal_record
from services.core.db import Connection, ConnectionOrPool
from services.core.identity import expand_subject_refs, resolve_subject_refs
from services.core.index import binary_key, binary_keys
from services.core.keyring import Keyring
from services.core.pseudonym import group_ref
from services.core.refusals import InvalidRequest, NotFound
from services.core.vocabulary import (
    CUSTODIAN_HOLD_SCOPES,
    MESSAGE_KINDS,
    CaseStatus,
    CustodianKind,
    is_event_id,
    is_pseudonym,
)
from services.governance.holds import Hold, create_hold, release_hold

# A reference is printed, typed, put in URLs and audit rows: a short, plain token, never a sentence.
CASE_REF_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,47}$")
GENERATED_REF: Final = re.compile(r"^CASE-(\d{4})-(\d{4,})$")
# A tag is a label of the review (``relevant``, ``privileged``…), stored in clear: its shape keeps sentences out.
TAG_PATTERN: Final = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
TITLE_MAX: Final = 200
NOTE_MAX: Final = 4000
INCIDENT_FIELD_MAX: Final = 4000
KEYWORDS_MAX: Final = 200
REVIEWER_MAX: Final = 100
# The associated data of the case's own texts (services/core/crypto.py record_aad): bound to the case and the field.
CASE_KEY_SUBJECT: Final = "case:{case_id}"


class CaseRefused(InvalidRequest):
    """The case action cannot be done as asked (a malformed reference, a closed case, a message outside the case's
    custodians…); nothing was changed."""


class UnknownCase(NotFound):
    """No case with this reference."""


# --- pure steps ---------------------------------------------------------------------------------------------------


def check_case_ref(ref: str) -> str:
    """``ref`` without surrounding blanks if it is a plain reference token, else :class:`CaseRefused`."""
    ref = ref.strip()
    if not CASE_REF_PATTERN.match(ref):
        raise CaseRefused(
            "a case reference is 1 to 48 letters, digits, '.', '_' or '-', starting with one of the first two"
        )
    return ref


def next_case_ref(year: int, taken: Iterable[str]) -> str:
    """``CASE-<year>-<n>``: one more than the highest generated number of ``year`` among ``taken`` (given references
    of another shape do not count), four digits at least."""
    numbers = [
        int(match.group(2))
        for ref in taken
        if (match := GENERATED_REF.match(ref)) is not None and int(match.group(1)) == year
    ]
    return f"CASE-{year:04d}-{max(numbers, default=0) + 1:04d}"


def check_tag(tag: str) -> str:
    """The tag in lowercase if it is a label (a lowercase word of up to 40 letters, digits, '_' or '-'), else
    :class:`CaseRefused`: a tag is stored in clear, so it must not be able to carry a sentence about a person."""
    tag = tag.strip().lower()
    if not TAG_PATTERN.match(tag):
        raise CaseRefused("a tag is one lowercase word of up to 40 letters, digits, '_' or '-'")
    return tag


def check_text(value: str | None, what: str, limit: int, *, required: bool = False) -> str | None:
    """``value`` stripped; None when empty and not ``required``; :class:`CaseRefused` when missing or too long (the
    message names the field, never the text)."""
    value = (value or "").strip()
    if not value:
        if required:
            raise CaseRefused(f"the {what} is required")
        return None
    if len(value) > limit:
        raise CaseRefused(f"the {what} is longer than {limit} characters")
    return value


def check_period(start: datetime | None, end: datetime | None) -> None:
    if any(moment is not None and moment.tzinfo is None for moment in (start, end)):
        raise CaseRefused("the period's dates need a time zone")
    if start is not None and end is not None and end < start:
        raise CaseRefused("the period ends before it starts")


@dataclass(frozen=True, slots=True, kw_only=True)
class Incident:
    """The incident record of a deletion crisis (sealed under the case's key): each field free text."""

    what_deleted: str | None = None
    deleted_by: str | None = None
    deleted_when: str | None = None
    communicated: str | None = None

    def checked(self) -> Incident | None:
        """The incident with its fields stripped and within bounds; None when every field is empty."""
        fields_ = {
            name: check_text(getattr(self, name), name.replace("_", " "), INCIDENT_FIELD_MAX)
            for name in ("what_deleted", "deleted_by", "deleted_when", "communicated")
        }
        return Incident(**fields_) if any(fields_.values()) else None

    def to_json(self) -> dict[str, str | None]:
        return {
            "what_deleted": self.what_deleted,
            "deleted_by": self.deleted_by,
            "deleted_when": self.deleted_when,
            "communicated": self.communicated,
        }


def case_subject(case_id: str) -> str:
    return CASE_KEY_SUBJECT.format(case_id=case_id)


def seal_case_text(key: bytes, case_id: str, what: str, text: str) -> bytes:
    """Seal one of the case's own texts (``what``: ``title``, ``incident``, ``search/<id>``) under its key, bound to
    the case and the field: a title copied onto another case, or into the incident's place, does not open."""
    return seal_record(text.encode(), key, event_id=f"{what}", subject_ref=case_subject(case_id))


def open_case_text(key: bytes, case_id: str, what: str, sealed: bytes) -> str:
    """Raises RecordTampered when the bytes are not what :func:`seal_case_text` sealed for this case and field."""
    return open_record(sealed, key, event_id=what, subject_ref=case_subject(case_id)).decode()


def note_record_id(note_id: str) -> str:
    return f"case-note/{note_id}"


# --- records ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class CustodianSpec:
    """A custodian as asked: a business number (``phone_number_id``), a person (``contact``: a wa_id or username,
    optionally under one ``phone_number_id``; or ``subject_ref``: a pseudonym, as search prints it) or a group
    (``group_id``)."""

    kind: CustodianKind
    phone_number_id: str | None = None
    contact: str | None = None
    subject_ref: str | None = None
    group_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Custodian:
    custodian_id: str
    kind: CustodianKind
    phone_number_id: str | None
    subject_refs: tuple[str, ...]
    group_ref: str | None
    hold_id: str | None
    hold_active: bool

    @property
    def label(self) -> str:
        """How the custodian is shown: the business number, or the first 12 digits of a pseudonym."""
        if self.kind == "phone_number":
            return self.phone_number_id or ""
        if self.kind == "group":
            return f"group {(self.group_ref or '')[:12]}"
        return f"person {self.subject_refs[0][:12]}" if self.subject_refs else "person"

    def to_json(self) -> dict[str, object]:
        return {
            "custodian_id": self.custodian_id,
            "kind": self.kind,
            "label": self.label,
            "phone_number_id": self.phone_number_id,
            "subject_refs": list(self.subject_refs),
            "group_ref": self.group_ref,
            "hold_id": self.hold_id,
            "hold_active": self.hold_active,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class SavedSearch:
    search_id: str
    keywords: str
    custodian_id: str | None
    created_by: str
    created_at: datetime

    def to_json(self) -> dict[str, object]:
        return {
            "search_id": self.search_id,
            "keywords": self.keywords,
            "custodian_id": self.custodian_id,
            "created_by": self.created_by,
            "created_at": self.created_at.isoformat(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class ReviewNote:
    note_id: str
    text: str | None  # None: the person was erased, the note with them
    written_by: str
    written_at: datetime


@dataclass(kw_only=True)
class ReviewedMessage:
    """A message of the case with its tags and notes (nothing of the message itself is decrypted here)."""

    event_id: str
    subject_ref: str | None
    tags: list[str] = field(default_factory=list)
    notes: list[ReviewNote] = field(default_factory=list)

    def to_json(self) -> dict[str, object]:
        return {
            "event_id": self.event_id,
            "subject_ref": self.subject_ref,
            "tags": self.tags,
            "notes": [
                {
                    "note_id": n.note_id,
                    "text": n.text,
                    "written_by": n.written_by,
                    "written_at": n.written_at.isoformat(),
                }
                for n in self.notes
            ],
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseSummary:
    """A case as listed: its title decrypted, nothing else of it."""

    case_id: str
    case_ref: str
    title: str
    status: CaseStatus
    period_start: datetime | None
    period_end: datetime | None
    with_holds: bool
    opened_by: str
    opened_at: datetime
    closed_by: str | None
    closed_at: datetime | None
    reviewers: tuple[str, ...]

    def to_json(self) -> dict[str, object]:
        return {
            "case_ref": self.case_ref,
            "title": self.title,
            "status": self.status,
            "period_start": self.period_start.isoformat() if self.period_start else None,
            "period_end": self.period_end.isoformat() if self.period_end else None,
            "with_holds": self.with_holds,
            "opened_by": self.opened_by,
            "opened_at": self.opened_at.isoformat(),
            "closed_by": self.closed_by,
            "closed_at": self.closed_at.isoformat() if self.closed_at else None,
            "reviewers": list(self.reviewers),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseFile:
    """A case whole: its summary, incident, custodians (with their holds), saved searches and reviewed messages."""

    summary: CaseSummary
    incident: Incident | None
    custodians: list[Custodian]
    searches: list[SavedSearch]
    messages: list[ReviewedMessage]

    @property
    def case_ref(self) -> str:
        return self.summary.case_ref

    def to_json(self) -> dict[str, object]:
        return {
            **self.summary.to_json(),
            "incident": self.incident.to_json() if self.incident else None,
            "custodians": [c.to_json() for c in self.custodians],
            "searches": [s.to_json() for s in self.searches],
            "messages": [m.to_json() for m in self.messages],
        }


# --- the case's key -----------------------------------------------------------------------------------------------


CASE_ROW_SQL: Final = "SELECT * FROM cases WHERE case_ref = $1"
CASE_ROW_LOCKED_SQL: Final = CASE_ROW_SQL + " FOR UPDATE"


def _case_key(kek: KekProvider, row: asyncpg.Record) -> bytes:
    wrapped = WrappedDek(kek_id=row["kek_id"], blob=bytes(row["wrapped_key"]))
    return kek.unwrap(wrapped, subject_ref=case_subject(str(row["case_id"])))


def _summary(kek: KekProvider, row: asyncpg.Record, reviewers: Sequence[str]) -> CaseSummary:
    case_id = str(row["case_id"])
    return CaseSummary(
        case_id=case_id,
        case_ref=row["case_ref"],
        title=open_case_text(_case_key(kek, row), case_id, "title", bytes(row["sealed_title"])),
        status=row["status"],
        period_start=row["period_start"],
        period_end=row["period_end"],
        with_holds=row["with_holds"],
        opened_by=row["opened_by"],
        opened_at=row["opened_at"],
        closed_by=row["closed_by"],
        closed_at=row["closed_at"],
        reviewers=tuple(sorted(reviewers)),
    )


async def case_row(conn: ConnectionOrPool, case_ref: str, *, lock: bool = False) -> asyncpg.Record:
    """The case's row (``lock``: FOR UPDATE, in the caller's transaction); :class:`UnknownCase` when there is none."""
    sql = CASE_ROW_LOCKED_SQL if lock else CASE_ROW_SQL
    row = await conn.fetchrow(sql, case_ref.strip())
    if row is None:
        raise UnknownCase("no case with this reference")
    return row


async def reviewers_of(conn: ConnectionOrPool, case_id: uuid.UUID) -> list[str]:
    rows = await conn.fetch("SELECT reviewer FROM case_reviewers WHERE case_id = $1 ORDER BY reviewer", case_id)
    return [row["reviewer"] for row in rows]


# --- changes --------------------------------------------------------------------------------------------------------


async def with_records_first(conn: Connection, refs: list[str]) -> list[str]:
    """``refs`` with those the archive holds records of first: a person resolved under every business number has a
    pseudonym under each, and the custodian is shown by the first (the one their conversation page shows too)."""
    rows = await conn.fetch(
        "SELECT DISTINCT encode(subject_ref, 'hex') AS ref FROM archived_events WHERE subject_ref = ANY($1::bytea[])",
        binary_keys(refs),
    )
    found = sorted(row["ref"] for row in rows)
    return found + [ref for ref in refs if ref not in set(found)]


async def _resolve(conn: Connection, pepper: bytes, spec: CustodianSpec) -> tuple[list[str], bytes | None]:
    """The custodian's pseudonyms (a person) or group pseudonym (a group); :class:`CaseRefused` when incomplete."""
    if spec.kind == "phone_number":
        if not spec.phone_number_id:
            raise CaseRefused("a business-number custodian needs its phone number id")
        return [], None
    if spec.kind == "group":
        if not spec.group_id:
            raise CaseRefused("a group custodian needs its group id")
        return [], bytes.fromhex(group_ref(pepper, spec.group_id))
    if spec.subject_ref and spec.contact:
        raise CaseRefused("name the person by contact or by pseudonym, not both")
    if spec.subject_ref:
        if not is_pseudonym(spec.subject_ref):
            raise CaseRefused("a pseudonym is 64 lowercase hex digits")
        return await with_records_first(conn, await expand_subject_refs(conn, [spec.subject_ref])), None
    if not spec.contact:
        raise CaseRefused("a person custodian needs a contact (number or username) or a pseudonym")
    refs = await resolve_subject_refs(conn, pepper, spec.contact, spec.phone_number_id)
    if not refs:
        raise CaseRefused("no business number knows this person")
    return await with_records_first(conn, refs), None


async def _add_custodian(
    conn: Connection, pepper: bytes, case: asyncpg.Record, spec: CustodianSpec, *, actor: str
) -> Custodian:
    """Inside the caller's transaction: the custodian row, and its hold when the case places holds."""
    refs, group = await _resolve(conn, pepper, spec)
    hold: Hold | None = None
    if case["with_holds"]:
        hold = await create_hold(
            conn,
            pepper,
            scope=CUSTODIAN_HOLD_SCOPES[spec.kind],
            case_ref=case["case_ref"],
            actor=actor,
            phone_number_id=spec.phone_number_id if spec.kind == "phone_number" else None,
            group_id=spec.group_id,
            subject_refs=refs,
        )
    custodian_id = uuid.uuid4()
    await conn.execute(
        # clock_timestamp(), not the column's now(): the custodians a case opens with are added in one transaction,
        # and each must still come after the one before (case_custodians orders by it).
        "INSERT INTO case_custodians (custodian_id, case_id, kind, phone_number_id, subject_refs, group_ref, hold_id,"
        " added_by, added_at) VALUES ($1, $2, $3, $4, $5::text[], $6, $7::uuid, $8, clock_timestamp())",
        custodian_id,
        case["case_id"],
        spec.kind,
        spec.phone_number_id if spec.kind != "person" else None,
        refs,
        group,
        hold.hold_id if hold else None,
        actor,
    )
    await write_audit(
        conn,
        actor=actor,
        action="case.custodian_added",
        reason=case["case_ref"],
        record_count=len(refs) or None,
        details={
            "custodian_id": str(custodian_id),
            "kind": spec.kind,
            "subject_refs": refs,
            "hold_id": hold.hold_id if hold else None,
        },
    )
    return Custodian(
        custodian_id=str(custodian_id),
        kind=spec.kind,
        phone_number_id=spec.phone_number_id if spec.kind != "person" else None,
        subject_refs=tuple(refs),
        group_ref=group.hex() if group else None,
        hold_id=hold.hold_id if hold else None,
        hold_active=hold is not None,
    )


async def open_case(
    conn: Connection,
    kek: KekProvider,
    pepper: bytes,
    *,
    actor: str,
    title: str,
    case_ref: str | None = None,
    period_start: datetime | None = None,
    period_end: datetime | None = None,
    custodians: Sequence[CustodianSpec] = (),
    with_holds: bool = False,
    incident: Incident | None = None,
    year: int,
) -> CaseSummary:
    """Open a case (audited ``case.opened``, then one ``case.custodian_added`` and, with holds, one
    ``hold.create`` per custodian), all in one transaction: a custodian refused leaves no case behind.
    Without ``case_ref`` the next ``CASE-<year>-NNNN`` is given. :class:`CaseRefused` for a reference that is
    malformed or taken, an empty or overlong title, a period that ends before it starts, an incomplete custodian."""
    sealed_title_text = check_text(title, "title", TITLE_MAX, required=True)
    assert sealed_title_text is not None
    check_period(period_start, period_end)
    incident = incident.checked() if incident else None
    case_id = uuid.uuid4()
    key = new_dek()
    wrapped = kek.wrap(key, subject_ref=case_subject(str(case_id)))
    async with conn.transaction():
        if case_ref is None:
            # One opener at a time picks the next number (the lock is the transaction's).
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('wa-archive/case-ref'))")
            taken = await conn.fetch("SELECT case_ref FROM cases WHERE case_ref LIKE $1", f"CASE-{year:04d}-%")
            case_ref = next_case_ref(year, (row["case_ref"] for row in taken))
        case_ref = check_case_ref(case_ref)
        row = await conn.fetchrow(
            "INSERT INTO cases (case_id, case_ref, period_start, period_end, with_holds, kek_id, wrapped_key,"
            " sealed_title, sealed_incident, opened_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (case_ref) DO NOTHING RETURNING *",
            case_id,
            case_ref,
            period_start,
            period_end,
            with_holds,
            wrapped.kek_id,
            wrapped.blob,
            seal_case_text(key, str(case_id), "title", sealed_title_text),
            seal_case_text(key, str(case_id), "incident", orjson.dumps(incident.to_json()).decode())
            if incident
            else None,
            actor,
        )
        if row is None:
            raise CaseRefused("a case with this reference exists already")
        await write_audit(
            conn,
            actor=actor,
            action="case.opened",
            reason=case_ref,
            details={"with_holds": with_holds, "custodians": len(custodians), "incident": incident is not None},
        )
        for spec in custodians:
            await _add_custodian(conn, pepper, row, spec, actor=actor)
    return _summary(kek, row, [])


async def add_custodian(
    conn: Connection, kek: KekProvider, pepper: bytes, case_ref: str, spec: CustodianSpec, *, actor: str
) -> Custodian:
    """Add a custodian to an open case (with its hold when the case places holds); audited."""
    async with conn.transaction():
        case = await case_row(conn, case_ref, lock=True)
        if case["status"] != "open":
            raise CaseRefused("the case is closed")
        return await _add_custodian(conn, pepper, case, spec, actor=actor)


async def assign_reviewer(conn: Connection, case_ref: str, reviewer: str, *, actor: str) -> bool:
    """Assign ``reviewer`` (an operator name) to the case; False when they already were. Audited when assigned."""
    name = check_text(reviewer, "reviewer's name", REVIEWER_MAX, required=True)
    async with conn.transaction():
        case = await case_row(conn, case_ref, lock=True)
        if case["status"] != "open":
            raise CaseRefused("the case is closed")
        added = await conn.fetchval(
            "INSERT INTO case_reviewers (case_id, reviewer, assigned_by) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING true",
            case["case_id"],
            name,
            actor,
        )
        if added:
            await write_audit(
                conn, actor=actor, action="case.reviewer_assigned", reason=case["case_ref"], details={"reviewer": name}
            )
    return bool(added)


async def close_case(conn: Connection, case_ref: str, *, reason: str, actor: str) -> list[Hold]:
    """Close an open case and release its active holds (each audited ``hold.release``; the closing ``case.closed``
    with ``reason``), in one transaction. Returns the holds released. :class:`CaseRefused` when it is closed
    already or the reason is missing."""
    why = check_text(reason, "reason for closing", 500, required=True)
    if why is None or len(why) < 3:
        raise CaseRefused("closing a case needs a reason of at least 3 characters (it is written to the audit log)")
    async with conn.transaction():
        case = await case_row(conn, case_ref, lock=True)
        if case["status"] != "open":
            raise CaseRefused("the case is closed already")
        hold_ids = await conn.fetch(
            "SELECT c.hold_id::text AS hold_id FROM case_custodians c JOIN legal_holds h ON h.hold_id = c.hold_id"
            " WHERE c.case_id = $1 AND h.released_at IS NULL ORDER BY c.added_at",
            case["case_id"],
        )
        released = [
            hold for row in hold_ids if (hold := await release_hold(conn, row["hold_id"], actor=actor)) is not None
        ]
        await conn.execute(
            "UPDATE cases SET status = 'closed', closed_by = $2, closed_at = now() WHERE case_id = $1",
            case["case_id"],
            actor,
        )
        await write_audit(
            conn,
            actor=actor,
            action="case.closed",
            reason=why,
            details={"case_ref": case["case_ref"], "holds_released": [h.hold_id for h in released]},
        )
    return released


async def save_search(
    conn: Connection, kek: KekProvider, case_ref: str, keywords: str, custodian_id: str | None, *, actor: str
) -> SavedSearch:
    """Save a keyword search on the case (its words sealed under the case's key; audited with how many words)."""
    words = check_text(keywords, "search's words", KEYWORDS_MAX, required=True)
    assert words is not None
    async with conn.transaction():
        case = await case_row(conn, case_ref)
        if case["status"] != "open":
            raise CaseRefused("the case is closed")
        if custodian_id is not None:
            found = await conn.fetchval(
                "SELECT 1 FROM case_custodians WHERE case_id = $1 AND custodian_id::text = $2",
                case["case_id"],
                custodian_id,
            )
            if not found:
                raise CaseRefused("this custodian is not one of the case's")
        search_id = uuid.uuid4()
        sealed = seal_case_text(_case_key(kek, case), str(case["case_id"]), f"search/{search_id}", words)
        row = await conn.fetchrow(
            "INSERT INTO case_searches (search_id, case_id, custodian_id, sealed_keywords, created_by)"
            " VALUES ($1, $2, $3::uuid, $4, $5) RETURNING created_at",
            search_id,
            case["case_id"],
            custodian_id,
            sealed,
            actor,
        )
        assert row is not None
        await write_audit(
            conn,
            actor=actor,
            action="case.search_saved",
            reason=case["case_ref"],
            details={"search_id": str(search_id), "custodian_id": custodian_id, "words": len(words.split())},
        )
    return SavedSearch(
        search_id=str(search_id),
        keywords=words,
        custodian_id=custodian_id,
        created_by=actor,
        created_at=row["created_at"],
    )


async def message_of_case(conn: ConnectionOrPool, case: asyncpg.Record, event_id: str) -> str:
    """The pseudonym of the person a message of the case belongs to: a message (not a status or a record of the
    business) of one of its custodians. :class:`CaseRefused` otherwise."""
    if not is_event_id(event_id):
        raise CaseRefused("an event id is 32 lowercase hex digits")
    row = await conn.fetchrow(
        "SELECT encode(e.subject_ref, 'hex') AS subject_ref, e.kind, e.phone_number_id, e.group_ref"
        " FROM archived_events e WHERE e.event_id = $1",
        binary_key(event_id),
    )
    if row is None or row["kind"] not in MESSAGE_KINDS or row["subject_ref"] is None:
        raise CaseRefused("no archived message of a person with this event id")
    custodians = await conn.fetch("SELECT * FROM case_custodians WHERE case_id = $1", case["case_id"])
    refs = await expand_subject_refs(conn, [ref for c in custodians for ref in c["subject_refs"]])
    if (
        not any(
            (c["kind"] == "phone_number" and c["phone_number_id"] == row["phone_number_id"])
            or (
                c["kind"] == "group"
                and row["group_ref"] is not None
                and bytes(c["group_ref"]) == bytes(row["group_ref"])
            )
            for c in custodians
        )
        and row["subject_ref"] not in refs
    ):
        raise CaseRefused("this message is not one of the case's custodians'")
    return str(row["subject_ref"])


async def tag_message(conn: Connection, case_ref: str, event_id: str, tag: str, *, actor: str) -> bool:
    """Tag a message of the case; False when it had this tag already. Audited when tagged."""
    label = check_tag(tag)
    async with conn.transaction():
        case = await case_row(conn, case_ref)
        if case["status"] != "open":
            raise CaseRefused("the case is closed")
        subject = await message_of_case(conn, case, event_id)
        added = await conn.fetchval(
            "INSERT INTO case_tags (case_id, event_id, tag, tagged_by) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT DO NOTHING RETURNING true",
            case["case_id"],
            event_id,
            label,
            actor,
        )
        if added:
            await write_audit(
                conn,
                actor=actor,
                action="case.message_tagged",
                reason=case["case_ref"],
                subject_ref=subject,
                details={"event_id": event_id, "tag": label},
            )
    return bool(added)


async def note_message(
    conn: Connection, keyring: Keyring, case_ref: str, event_id: str, text: str, *, actor: str
) -> str:
    """Write a note on a message of the case, sealed under the DEK of the message's person; returns its id.
    Audited (``case.note_added``: the event id and the pseudonym, never the text). :class:`CaseRefused` when the
    person has no live key (they were erased: nothing may be written about them under a key that is gone)."""
    note = check_text(text, "note", NOTE_MAX, required=True)
    assert note is not None
    async with conn.transaction():
        case = await case_row(conn, case_ref)
        if case["status"] != "open":
            raise CaseRefused("the case is closed")
        subject = await message_of_case(conn, case, event_id)
        dek = await keyring.live_key(subject)
        if dek is None:
            raise CaseRefused("the message's person was erased: no note can be written about them")
        note_id = str(uuid.uuid4())
        sealed = seal_record(note.encode(), dek.aead(), event_id=note_record_id(note_id), subject_ref=subject)
        await conn.execute(
            "INSERT INTO case_notes (note_id, case_id, event_id, subject_ref, dek_id, sealed_note, written_by)"
            " VALUES ($1::uuid, $2, $3, $4, $5::uuid, $6, $7)",
            note_id,
            case["case_id"],
            event_id,
            subject,
            dek.dek_id,
            sealed,
            actor,
        )
        await write_audit(
            conn,
            actor=actor,
            action="case.note_added",
            reason=case["case_ref"],
            subject_ref=subject,
            details={"event_id": event_id, "note_id": note_id},
        )
    return note_id


# --- reading ------------------------------------------------------------------------------------------------------


async def list_cases(
    conn: ConnectionOrPool, kek: KekProvider, *, reviewer: str | None = None, status: CaseStatus | None = None
) -> list[CaseSummary]:
    """Every case (or those ``reviewer`` is assigned to; of ``status``), newest first, titles decrypted."""
    rows = await conn.fetch(
        "SELECT c.*, coalesce(array_agg(r.reviewer) FILTER (WHERE r.reviewer IS NOT NULL), '{}') AS reviewer_names"
        " FROM cases c LEFT JOIN case_reviewers r ON r.case_id = c.case_id"
        " WHERE ($2::text IS NULL OR c.status = $2)"
        " GROUP BY c.case_id HAVING $1::text IS NULL OR $1 = ANY(array_agg(r.reviewer))"
        " ORDER BY c.opened_at DESC",
        reviewer,
        status,
    )
    return [_summary(kek, row, row["reviewer_names"]) for row in rows]


async def case_custodians(conn: ConnectionOrPool, case_id: uuid.UUID) -> list[Custodian]:
    """The case's custodians in the order they were added (the case page and the case export's bags list them so,
    run after run: each is added at its own ``clock_timestamp()``, also when a case opens with several)."""
    rows = await conn.fetch(
        "SELECT c.*, h.hold_id IS NOT NULL AND h.released_at IS NULL AS hold_active FROM case_custodians c"
        " LEFT JOIN legal_holds h ON h.hold_id = c.hold_id WHERE c.case_id = $1 ORDER BY c.added_at, c.custodian_id",
        case_id,
    )
    return [
        Custodian(
            custodian_id=str(row["custodian_id"]),
            kind=row["kind"],
            phone_number_id=row["phone_number_id"],
            subject_refs=tuple(row["subject_refs"]),
            group_ref=bytes(row["group_ref"]).hex() if row["group_ref"] is not None else None,
            hold_id=str(row["hold_id"]) if row["hold_id"] else None,
            hold_active=bool(row["hold_active"]),
        )
        for row in rows
    ]


async def saved_searches(conn: ConnectionOrPool, kek: KekProvider, case: asyncpg.Record) -> list[SavedSearch]:
    key, case_id = _case_key(kek, case), str(case["case_id"])
    rows = await conn.fetch("SELECT * FROM case_searches WHERE case_id = $1 ORDER BY created_at", case["case_id"])
    return [
        SavedSearch(
            search_id=str(row["search_id"]),
            keywords=open_case_text(key, case_id, f"search/{row['search_id']}", bytes(row["sealed_keywords"])),
            custodian_id=str(row["custodian_id"]) if row["custodian_id"] else None,
            created_by=row["created_by"],
            created_at=row["created_at"],
        )
        for row in rows
    ]


async def reviewed_messages(conn: ConnectionOrPool, keyring: Keyring, case_id: uuid.UUID) -> list[ReviewedMessage]:
    """The case's tagged or noted messages, in the order they were first reviewed, with their notes decrypted (a
    note whose person was erased reads None; its row is normally gone with them)."""
    found: dict[str, ReviewedMessage] = {}
    for row in await conn.fetch(
        "SELECT event_id, tag FROM case_tags WHERE case_id = $1 ORDER BY tagged_at, tag", case_id
    ):
        found.setdefault(row["event_id"], ReviewedMessage(event_id=row["event_id"], subject_ref=None)).tags.append(
            row["tag"]
        )
    for row in await conn.fetch(
        "SELECT note_id::text AS note_id, event_id, subject_ref, dek_id::text AS dek_id, sealed_note, written_by,"
        " written_at FROM case_notes WHERE case_id = $1 ORDER BY written_at",
        case_id,
    ):
        message = found.setdefault(row["event_id"], ReviewedMessage(event_id=row["event_id"], subject_ref=None))
        message.subject_ref = row["subject_ref"]
        message.notes.append(
            ReviewNote(
                note_id=row["note_id"],
                text=await open_note(keyring, row),
                written_by=row["written_by"],
                written_at=row["written_at"],
            )
        )
    return list(found.values())


async def open_note(keyring: Keyring, row: asyncpg.Record) -> str | None:
    """The note's text, or None when its person's key is gone (shredded)."""
    dek = await keyring.key_for_reading(row["subject_ref"], row["dek_id"])
    if dek is None:
        return None
    try:
        return open_record(
            bytes(row["sealed_note"]),
            dek.aead(),
            event_id=note_record_id(row["note_id"]),
            subject_ref=row["subject_ref"],
        ).decode()
    except RecordTampered:
        return None


async def case_file(conn: ConnectionOrPool, keyring: Keyring, case_ref: str) -> CaseFile:
    """The whole case, its texts and notes decrypted. :class:`UnknownCase` when there is none."""
    case = await case_row(conn, case_ref)
    kek = keyring.kek
    incident: Incident | None = None
    if case["sealed_incident"] is not None:
        sealed = bytes(case["sealed_incident"])
        fields_: dict[str, Any] = orjson.loads(
            open_case_text(_case_key(kek, case), str(case["case_id"]), "incident", sealed)
        )
        incident = Incident(**fields_)
    return CaseFile(
        summary=_summary(kek, case, await reviewers_of(conn, case["case_id"])),
        incident=incident,
        custodians=await case_custodians(conn, case["case_id"]),
        searches=await saved_searches(conn, kek, case),
        messages=await reviewed_messages(conn, keyring, case["case_id"]),
    )


async def delete_notes_of(conn: Connection, subject_refs: Sequence[str]) -> int:
    """In the erasure's shredding transaction: delete the notes written about these pseudonyms (their key goes in
    the same transaction); returns how many."""
    deleted = await conn.fetchval(
        "WITH gone AS (DELETE FROM case_notes WHERE subject_ref = ANY($1::text[]) RETURNING 1)"
        " SELECT count(*) FROM gone",
        list(subject_refs),
    )
    return int(deleted or 0)


async def case_keys_by_kek(conn: ConnectionOrPool) -> dict[str, int]:
    """How many case keys each KEK id wraps (a KEK that wraps one cannot be retired yet)."""
    rows = await conn.fetch("SELECT kek_id, count(*) AS keys FROM cases GROUP BY kek_id")
    return {row["kek_id"]: row["keys"] for row in rows}


async def rewrap_case_keys(conn: Connection, kek: KekProvider, to_kek_id: str) -> int:
    """Rewrap every case key not under ``to_kek_id`` (same key, new wrapping), in one transaction: cases are few.
    Returns how many. Raises UnknownKek / RecordTampered as :meth:`KekProvider.rewrap`; nothing changes then."""
    async with conn.transaction():
        rows = await conn.fetch(
            "SELECT case_id, kek_id, wrapped_key FROM cases WHERE kek_id <> $1 FOR UPDATE", to_kek_id
        )
        for row in rows:
            wrapped = WrappedDek(kek_id=row["kek_id"], blob=bytes(row["wrapped_key"]))
            again = kek.rewrap(wrapped, subject_ref=case_subject(str(row["case_id"])), to_kek_id=to_kek_id)
            await conn.execute(
                "UPDATE cases SET kek_id = $2, wrapped_key = $3 WHERE case_id = $1",
                row["case_id"],
                again.kek_id,
                again.blob,
            )
    return len(rows)
