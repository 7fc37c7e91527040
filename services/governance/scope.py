"""What a reader may read: the custodians of the open cases assigned to them, each within its case's period.

The rule (:func:`case_scope`, pure): a reviewer sees an archived record iff some case

- is ``open``,
- has the reviewer among its assigned reviewers,
- has a period that holds the record's time (an open end is no bound; both ends are included; the record's time
  is its event time, else the time the archive received it: a message the business sent has no Meta time),
- and names a custodian the record belongs to: a person (the record is sealed under one of the person's
  pseudonyms, their linked identifiers included: :func:`load_case_scope` follows the links as they stand now), a
  business number (every record of that number) or a group (every record of that group, whoever wrote it).

:class:`ReadingScope` is the rule's answer for one reader: :meth:`ReadingScope.covers` decides one record (the
index's metadata: nothing is decrypted to decide), and :func:`scope_sql` says the same as a WHERE clause, so that a
search returns (and counts) only what the reader may see. The data protection officer, and every reader of a
deployment configured ``reader_scope = "all"`` (docs/OPERATIONS.md), read under :data:`EVERYTHING`.

A record outside the scope is refused (:class:`OutsideScope`, 403) before anything is read or audited as read; the
way past it is a break-glass request approved by a DPO (docs/GDPR.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final, Protocol

import orjson

from services.core.db import ConnectionOrPool
from services.core.identity import linked_subject_refs
from services.core.refusals import Forbidden
from services.core.vocabulary import CaseStatus, CustodianKind


class OutsideScope(Forbidden):
    """What a reader asked to read is outside the cases assigned to them; nothing was read. A break-glass request
    (with a reason, approved by a DPO) opens it."""

    kind = "scope"


class IndexedPlace(Protocol):
    """Where a record is, as the index says: whose pseudonym it is sealed under, its business number, its group's
    pseudonym (hex), and its time (event time, else the time it was received)."""

    @property
    def subject_ref(self) -> str | None: ...

    @property
    def phone_number_id(self) -> str | None: ...

    @property
    def group_ref(self) -> str | None: ...

    @property
    def event_time(self) -> datetime | None: ...

    @property
    def received_at(self) -> datetime: ...


def record_time(place: IndexedPlace) -> datetime:
    """The time a period is compared with: the event time, else the receipt time (as the SQL's coalesce)."""
    return place.event_time if place.event_time is not None else place.received_at


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    """What one open case lets its reviewers read: the records of its custodians within its period. ``source`` is
    the case's reference (shown to the reader, written to the audit log), or, for an approved break-glass access
    (``break_glass``), the approval request's id: a person's or a group's records, whatever their time, until the
    access ends (:func:`load_reader_scope` loads only those that have not ended)."""

    source: str
    break_glass: bool = False
    since: datetime | None = None
    until: datetime | None = None
    subject_refs: frozenset[str] = frozenset()
    phone_number_ids: frozenset[str] = frozenset()
    group_refs: frozenset[str] = frozenset()

    def covers(self, place: IndexedPlace) -> bool:
        moment = record_time(place)
        if (self.since is not None and moment < self.since) or (self.until is not None and moment > self.until):
            return False
        return (
            (place.subject_ref is not None and place.subject_ref in self.subject_refs)
            or (place.phone_number_id is not None and place.phone_number_id in self.phone_number_ids)
            or (place.group_ref is not None and place.group_ref in self.group_refs)
        )


@dataclass(frozen=True, slots=True)
class ReadingScope:
    """What one operator may read: every record (``everything``), or those some grant covers."""

    grants: tuple[Grant, ...] = ()
    everything: bool = False

    def covers(self, place: IndexedPlace) -> bool:
        return self.everything or any(grant.covers(place) for grant in self.grants)

    @property
    def sources(self) -> list[str]:
        """The references of the cases the scope comes from, sorted, each once."""
        return sorted({grant.source for grant in self.grants if not grant.break_glass})

    def break_glass_for(self, *, subject_refs: Iterable[str] = (), group_ref: str | None = None) -> list[str]:
        """The break-glass requests (ids) that open this person (any of ``subject_refs``) or this group: a read of
        them is flagged in the audit log with these ids."""
        refs = set(subject_refs)
        return sorted(
            grant.source
            for grant in self.grants
            if grant.break_glass
            and (refs & grant.subject_refs or (group_ref is not None and group_ref in grant.group_refs))
        )

    def visible(self) -> Callable[[IndexedPlace], bool] | None:
        """The predicate a read filters its records with; None when everything is visible (nothing to filter)."""
        return None if self.everything else self.covers


EVERYTHING: Final = ReadingScope(everything=True)


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseCustodian:
    """A custodian as the rule sees it: a person's pseudonyms (linked ones included), a business number or a
    group's pseudonym (hex)."""

    kind: CustodianKind
    subject_refs: tuple[str, ...] = ()
    phone_number_id: str | None = None
    group_ref: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseCover:
    """A case as the rule sees it."""

    case_ref: str
    status: CaseStatus
    reviewers: frozenset[str]
    period_start: datetime | None
    period_end: datetime | None
    custodians: tuple[CaseCustodian, ...]


def case_scope(cases: Iterable[CaseCover], reviewer: str) -> ReadingScope:
    """The rule (see the module docstring): one grant per open case ``reviewer`` is assigned to, of its custodians
    within its period. No such case: an empty scope (nothing is visible)."""
    grants = []
    for case in cases:
        if case.status != "open" or reviewer not in case.reviewers:
            continue
        grants.append(
            Grant(
                source=case.case_ref,
                since=case.period_start,
                until=case.period_end,
                subject_refs=frozenset(r for c in case.custodians if c.kind == "person" for r in c.subject_refs),
                phone_number_ids=frozenset(
                    c.phone_number_id for c in case.custodians if c.kind == "phone_number" and c.phone_number_id
                ),
                group_refs=frozenset(c.group_ref for c in case.custodians if c.kind == "group" and c.group_ref),
            )
        )
    return ReadingScope(tuple(grants))


def scope_sql(scope: ReadingScope, arg: Callable[[Any], str], alias: str = "e") -> str:
    """:meth:`ReadingScope.covers` as a condition on ``archived_events`` rows (``alias``), its values bound through
    ``arg`` (which appends a value and returns its placeholder): ``TRUE`` for everything, ``FALSE`` for nothing."""
    if scope.everything:
        return "TRUE"
    moment = f"coalesce({alias}.event_time, {alias}.received_at)"
    alternatives = []
    for grant in scope.grants:
        whose = []
        if grant.subject_refs:
            refs = [bytes.fromhex(ref) for ref in sorted(grant.subject_refs)]
            whose.append(f"{alias}.subject_ref = ANY({arg(refs)}::bytea[])")
        if grant.phone_number_ids:
            whose.append(f"{alias}.phone_number_id = ANY({arg(sorted(grant.phone_number_ids))}::text[])")
        if grant.group_refs:
            groups = [bytes.fromhex(ref) for ref in sorted(grant.group_refs)]
            whose.append(f"{alias}.group_ref = ANY({arg(groups)}::bytea[])")
        if not whose:
            continue
        clauses = [f"({' OR '.join(whose)})"]
        if grant.since is not None:
            clauses.append(f"{moment} >= {arg(grant.since)}")
        if grant.until is not None:
            clauses.append(f"{moment} <= {arg(grant.until)}")
        alternatives.append(f"({' AND '.join(clauses)})")
    return f"({' OR '.join(alternatives)})" if alternatives else "FALSE"


def break_glass_grant(request_id: str, target: Mapping[str, Any]) -> Grant:
    """The grant of an approved break-glass request (its target: a person's ``subject_refs``, or a group's
    ``group_ref``): every record of theirs, whatever its time."""
    return Grant(
        source=request_id,
        break_glass=True,
        subject_refs=frozenset(target.get("subject_refs") or ()),
        group_refs=frozenset([target["group_ref"]] if target.get("group_ref") else []),
    )


async def load_reader_scope(conn: ConnectionOrPool, reviewer: str, now: datetime) -> ReadingScope:
    """What ``reviewer`` may read at ``now``: :func:`load_case_scope`, and the break-glass accesses approved for
    them that have not ended (kind ``break_glass``, services/actions/break_glass.py; ``outcome.until`` after
    ``now``)."""
    cases = await load_case_scope(conn, reviewer)
    rows = await conn.fetch(
        "SELECT request_id::text AS request_id, target::text AS target FROM approval_requests"
        " WHERE kind = 'break_glass' AND status = 'approved' AND requested_by = $1"
        " AND (outcome->>'until')::timestamptz > $2",
        reviewer,
        now,
    )
    granted = tuple(break_glass_grant(row["request_id"], orjson.loads(row["target"])) for row in rows)
    return ReadingScope(cases.grants + granted)


async def load_case_scope(conn: ConnectionOrPool, reviewer: str) -> ReadingScope:
    """:func:`case_scope` over the open cases ``reviewer`` is assigned to, each person custodian's pseudonyms
    followed through their links as they stand now (an identifier linked after the case named the person is
    theirs too). Raises asyncpg's error when the database fails (nothing is read then)."""
    rows = await conn.fetch(
        "SELECT c.case_ref, c.status, c.period_start, c.period_end, k.kind, k.phone_number_id, k.subject_refs,"
        " encode(k.group_ref, 'hex') AS group_ref"
        " FROM cases c JOIN case_reviewers r ON r.case_id = c.case_id"
        " LEFT JOIN case_custodians k ON k.case_id = c.case_id"
        " WHERE r.reviewer = $1 AND c.status = 'open' ORDER BY c.case_ref",
        reviewer,
    )
    people = [ref for row in rows if row["kind"] == "person" for ref in row["subject_refs"]]
    links = await linked_subject_refs(conn, people)
    by_case: dict[str, list[Any]] = {}
    for row in rows:
        by_case.setdefault(row["case_ref"], []).append(row)
    cases = [
        CaseCover(
            case_ref=ref,
            status=found[0]["status"],
            reviewers=frozenset({reviewer}),
            period_start=found[0]["period_start"],
            period_end=found[0]["period_end"],
            custodians=tuple(_custodian(row, links) for row in found if row["kind"] is not None),
        )
        for ref, found in by_case.items()
    ]
    return case_scope(cases, reviewer)


def _custodian(row: Any, links: dict[str, set[str]]) -> CaseCustodian:
    refs: Sequence[str] = row["subject_refs"] or ()
    if row["kind"] == "person":
        refs = sorted({linked for ref in refs for linked in links.get(ref, {ref})})
    return CaseCustodian(
        kind=row["kind"], subject_refs=tuple(refs), phone_number_id=row["phone_number_id"], group_ref=row["group_ref"]
    )
