"""The case actions (services/governance/cases.py): the DPO opens and closes cases, names their custodians and
assigns reviewers; a reviewer assigned to a case (or the DPO) sees it, tags and notes its messages, saves and runs
its searches. A reader not assigned to a case is told it does not exist (:class:`NotFound`), as for an unknown one:
the list of cases is not theirs to learn.

Every change is audited in its own transaction by the domain (``case.opened``, ``case.custodian_added``,
``case.reviewer_assigned``, ``case.message_tagged``, ``case.note_added``, ``case.search_saved``, ``case.closed``,
and ``hold.create`` / ``hold.release`` for the holds); reading a case, which decrypts its notes, is audited here
(``case.viewed``, one row per person whose notes were decrypted, the case as the reason), and a saved search runs
through :meth:`ReadingActions.search`, audited as every search.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from services.actions.approvals import empty_or_new, require_approval
from services.actions.governing import GoverningActions
from services.actions.operators import ROLE_RANK, Operator, ProgressCallback, authorize
from services.actions.reading import ReadingActions, SubjectExport
from services.core.audit import require_reason, write_audit
from services.core.identity import expand_subject_refs
from services.core.refusals import NotFound
from services.core.vocabulary import CaseStatus
from services.evidence import case_export
from services.evidence.case_export import CASE_BAG_RECORDS, PlannedBag, plan_case_bags, write_case_manifest
from services.evidence.case_export import CaseCustodian as PlanCustodian
from services.evidence.header import Custodian as HeaderCustodian
from services.evidence.header import ExportHeader
from services.evidence.package import BAG_FORMATS, WrittenPackage, write_package
from services.evidence.pdf import VolumeLimits
from services.governance.cases import (
    REVIEWER_MAX,
    CaseFile,
    CaseRefused,
    CaseSummary,
    Custodian,
    CustodianSpec,
    Incident,
    SavedSearch,
    UnknownCase,
    add_custodian,
    assign_reviewer,
    case_custodians,
    case_file,
    case_row,
    check_text,
    close_case,
    list_cases,
    note_message,
    open_case,
    reviewers_of,
    save_search,
    saved_searches,
    tag_message,
)
from services.governance.erasure import ErasureOutcome
from services.governance.holds import Hold
from services.review.conversation import load_records
from services.review.correspondent import group_subject
from services.review.queries import (
    IndexedRecord,
    count_person_records,
    count_records,
    custodian_records,
    number_conversations,
)
from services.review.search import IndexHit, SearchFilter

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["CaseActions", "CaseClosing", "CaseExport", "CaseExporting", "CaseRefused", "CaseSize", "UnknownCase"]


class CaseClosing:
    """A closed case: the holds its closing released, and the erasure requests they had blocked, processed just
    after (those no other hold covers are carried out)."""

    def __init__(self, case_ref: str, holds: list[Hold], erasures: list[ErasureOutcome]) -> None:
        self.case_ref = case_ref
        self.holds = holds
        self.erasures = erasures

    def to_json(self) -> dict[str, object]:
        return {
            "case_ref": self.case_ref,
            "holds_released": [h.hold_id for h in self.holds],
            "erasures": [{"request_ref": e.request_ref, "status": e.status} for e in self.erasures],
        }


class CaseActions(ReadingActions, GoverningActions):
    """Cases over the same archive as the other actions: holds through the governance actions, saved searches
    through the reading actions' search."""

    def _is_dpo(self, operator: Operator) -> bool:
        return ROLE_RANK[operator.role] >= ROLE_RANK["dpo"]

    async def _reviewable(self, operator: Operator, case_ref: str) -> None:
        """Allow the DPO, and a reader assigned to the case; :class:`NotFound` for anyone else (and for a case
        that does not exist)."""
        authorize(operator, "case.review")
        case = await case_row(self.access.pool, case_ref)
        if not self._is_dpo(operator) and operator.name not in await reviewers_of(self.access.pool, case["case_id"]):
            raise UnknownCase("no case with this reference")

    async def open_case(
        self,
        operator: Operator,
        *,
        title: str,
        case_ref: str | None = None,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
        custodians: Sequence[CustodianSpec] = (),
        with_holds: bool = False,
        incident: Incident | None = None,
        reviewers: Sequence[str] = (),
    ) -> CaseSummary:
        """Open a case (``dpo``): with ``with_holds``, one legal hold per custodian; then assign ``reviewers``."""
        authorize(operator, "case.open")
        # Checked before the case exists: a name refused after it was opened would leave it half staffed.
        names = [check_text(name, "reviewer's name", REVIEWER_MAX, required=True) or "" for name in reviewers]
        async with self.access.pool.acquire() as conn:
            summary = await open_case(
                conn,
                self.access.keyring.kek,
                self.access.pepper,
                actor=operator.name,
                title=title,
                case_ref=case_ref,
                period_start=period_start,
                period_end=period_end,
                custodians=custodians,
                with_holds=with_holds,
                incident=incident,
                year=datetime.now(UTC).year,
            )
            for reviewer in names:
                await assign_reviewer(conn, summary.case_ref, reviewer, actor=operator.name)
        return summary

    async def add_custodian(self, operator: Operator, case_ref: str, spec: CustodianSpec) -> Custodian:
        """Name one more custodian of an open case (``dpo``; with its hold when the case places holds)."""
        authorize(operator, "case.custodian")
        async with self.access.pool.acquire() as conn:
            return await add_custodian(
                conn, self.access.keyring.kek, self.access.pepper, case_ref, spec, actor=operator.name
            )

    async def assign_reviewer(self, operator: Operator, case_ref: str, reviewer: str) -> bool:
        """Assign an operator (by name) to review an open case (``dpo``); False when they already were."""
        authorize(operator, "case.assign")
        async with self.access.pool.acquire() as conn:
            return await assign_reviewer(conn, case_ref, reviewer, actor=operator.name)

    async def close_case(self, operator: Operator, case_ref: str, *, reason: str) -> CaseClosing:
        """Close a case (``dpo``), releasing its holds; the erasure requests they blocked resume at once. Only on an
        approved request (:meth:`ApprovalActions.request_case_close`; :class:`ApprovalRequired` otherwise)."""
        authorize(operator, "case.close")
        require_approval(operator, "case.close")
        async with self.access.pool.acquire() as conn:
            released = await close_case(conn, case_ref, reason=reason, actor=operator.name)
        erasures = await self._process_erasures(operator, blocked_by=[h.hold_id for h in released]) if released else []
        return CaseClosing(case_ref.strip(), released, erasures)

    async def cases(self, operator: Operator, *, status: CaseStatus | None = None) -> list[CaseSummary]:
        """The cases the operator may see: all of them for the DPO, those they are assigned to for a reader. Not
        audited: titles and references of the system's own records, as the hold listing."""
        authorize(operator, "case.list")
        reviewer = None if self._is_dpo(operator) else operator.name
        return await list_cases(self.access.pool, self.access.keyring.kek, reviewer=reviewer, status=status)

    async def case(self, operator: Operator, case_ref: str) -> CaseFile:
        """The whole case, its notes decrypted: audited ``case.viewed`` (one row per person whose notes were read,
        with their count; the case reference as the reason) before it is returned."""
        await self._reviewable(operator, case_ref)
        found = await case_file(self.access.pool, self.access.keyring, case_ref)
        notes: dict[str | None, int] = {}
        for message in found.messages:
            if message.subject_ref and message.notes:
                notes[message.subject_ref] = notes.get(message.subject_ref, 0) + len(message.notes)
        async with self.access.pool.acquire() as conn, conn.transaction():
            # One row per person whose notes were decrypted; one without a person when the case holds no note.
            for subject_ref, count in sorted(notes.items(), key=lambda item: item[0] or "") or [(None, 0)]:
                await write_audit(
                    conn,
                    actor=operator.name,
                    action="case.viewed",
                    reason=found.case_ref,
                    subject_ref=subject_ref,
                    record_count=count,
                    details={"case_ref": found.case_ref},
                )
        return found

    async def tag_message(self, operator: Operator, case_ref: str, *, event_id: str, tag: str) -> bool:
        """Tag a message of the case's custodians (an assigned reviewer, or the DPO); False when it had the tag."""
        await self._reviewable(operator, case_ref)
        async with self.access.pool.acquire() as conn:
            return await tag_message(conn, case_ref, event_id, tag, actor=operator.name)

    async def note_message(self, operator: Operator, case_ref: str, *, event_id: str, text: str) -> str:
        """Note a message of the case's custodians, sealed under its person's key; returns the note's id."""
        await self._reviewable(operator, case_ref)
        async with self.access.pool.acquire() as conn:
            return await note_message(conn, self.access.keyring, case_ref, event_id, text, actor=operator.name)

    async def save_search(
        self, operator: Operator, case_ref: str, *, keywords: str, custodian_id: str | None = None
    ) -> SavedSearch:
        """Save a keyword search on the case (an assigned reviewer, or the DPO)."""
        await self._reviewable(operator, case_ref)
        async with self.access.pool.acquire() as conn:
            return await save_search(
                conn, self.access.keyring.kek, case_ref, keywords, custodian_id, actor=operator.name
            )

    async def run_saved_search(self, operator: Operator, case_ref: str, search_id: str) -> list[IndexHit]:
        """Run a saved search through the keyword search (index metadata; audited as a search): within the case's
        period, among its custodian's records when it names one, else among all the case's custodians'."""
        hits, _query = await self.saved_search_hits(operator, case_ref, search_id)
        return hits

    async def saved_search_hits(
        self, operator: Operator, case_ref: str, search_id: str
    ) -> tuple[list[IndexHit], SearchFilter]:
        """:meth:`run_saved_search`'s hits, and the search as one filter (its words and the case's period, without
        the custodians it ran among): what describes it (services/evidence/selection.py)."""
        await self._reviewable(operator, case_ref)
        case = await case_row(self.access.pool, case_ref)
        searches = {s.search_id: s for s in await saved_searches(self.access.pool, self.access.keyring.kek, case)}
        saved = searches.get(search_id)
        if saved is None:
            raise NotFound("no saved search with this id in this case")
        custodians = await case_custodians(self.access.pool, case["case_id"])
        chosen = [c for c in custodians if saved.custodian_id in (None, c.custodian_id)]
        hits: dict[str, IndexHit] = {}
        for custodian in chosen:
            query = SearchFilter(
                keywords=saved.keywords,
                since=case["period_start"],
                until=case["period_end"],
                phone_number_id=custodian.phone_number_id if custodian.kind == "phone_number" else None,
                subject_refs=custodian.subject_refs if custodian.kind == "person" else None,
                group_ref=custodian.group_ref if custodian.kind == "group" else None,
            )
            for hit in await self.search(operator, query):
                hits[hit.event_id] = hit
        found = sorted(hits.values(), key=lambda h: (h.event_time or h.received_at, h.event_id))
        return found, SearchFilter(keywords=saved.keywords, since=case["period_start"], until=case["period_end"])


@dataclass(frozen=True, slots=True)
class CaseExport:
    """What ``wa-archive case export`` wrote: one signed bag per person custodian, per group custodian and per
    conversation (or volume of one) of a business-number custodian, and the custodians with nothing to export
    (kind and why), all listed in the signed ``case.json`` at the top of the folder."""

    case_ref: str
    bags: list[WrittenPackage]
    skipped: list[dict[str, str]]
    manifest: Path

    def to_json(self) -> dict[str, object]:
        return {
            "case_ref": self.case_ref,
            "bags": [str(p.bag.path) for p in self.bags if p.bag is not None],
            "skipped": self.skipped,
            "manifest": str(self.manifest),
            "fingerprint": next((p.bag.fingerprint for p in self.bags if p.bag is not None), None),
        }


@dataclass(frozen=True, slots=True)
class CaseSize:
    """What a case export would hold, counted from the index (nothing decrypted): records within the case's
    period and the bags they make (services/evidence/case_export.py plan_case_bags). A person custodian's
    records are counted over the whole period of their conversation, as their bag reads it."""

    records: int
    bags: int

    def to_json(self) -> dict[str, int]:
        return {"records": self.records, "bags": self.bags}


class CaseExporting(CaseActions):
    """A case exported as evidence (services/evidence/case_export.py): a signed BagIt bag per person custodian
    (their messages of the case's period, with their media), per group custodian (every participant's records of
    the group within the period) and per conversation of a business-number custodian within the period (split
    into volumes of at most ``bag_records`` records), each written and signed before the next is read; and a
    signed ``case.json`` that lists the bags with the digest of each one's tag manifest (what its signature
    covers), so that a bag left out or swapped is seen."""

    async def _plan(
        self,
        custodians: Sequence[Custodian],
        since: datetime | None,
        until: datetime | None,
        bag_records: int,
    ) -> tuple[list[PlannedBag], list[dict[str, str]], dict[str, int]]:
        """The bags of the case's export (pure planning over counts the index gives: nothing is decrypted) and how
        many records each holds (by folder)."""
        conversations: dict[str, list[tuple[str, int]]] = {}
        groups: dict[str, int] = {}
        people: dict[str, int] = {}
        async with self.access.pool.acquire() as conn:
            for custodian in custodians:
                if custodian.kind == "phone_number" and custodian.phone_number_id:
                    found = await number_conversations(conn, custodian.phone_number_id, since=since, until=until)
                    conversations[custodian.custodian_id] = [(c.subject_ref, c.records) for c in found]
                elif custodian.kind == "group" and custodian.group_ref:
                    groups[custodian.custodian_id] = await count_records(
                        conn,
                        group_ref=custodian.group_ref,
                        phone_number_id=custodian.phone_number_id,
                        since=since,
                        until=until,
                    )
                elif custodian.kind == "person" and custodian.subject_refs:
                    refs = await expand_subject_refs(conn, custodian.subject_refs[:1])
                    people[custodian.custodian_id] = await count_person_records(conn, refs, since=since, until=until)
        planned, skipped = plan_case_bags(
            [
                PlanCustodian(
                    custodian_id=c.custodian_id,
                    kind=c.kind,
                    phone_number_id=c.phone_number_id,
                    subject_refs=c.subject_refs,
                    group_ref=c.group_ref,
                )
                for c in custodians
            ],
            conversations,
            group_records=groups,
            bag_records=bag_records,
        )
        sizes: dict[str, int] = {}
        for bag in planned:
            if bag.kind == "person":
                sizes[bag.folder] = people.get(bag.custodian_id, 0)
            elif bag.kind == "group":
                sizes[bag.folder] = groups.get(bag.custodian_id, 0)
            else:
                total = dict(conversations.get(bag.custodian_id, ())).get(bag.subject_ref or "", 0)
                sizes[bag.folder] = min(bag_records, total - (bag.part - 1) * bag_records)
        return planned, skipped, sizes

    async def case_export_size(
        self, operator: Operator, case_ref: str, *, bag_records: int = CASE_BAG_RECORDS
    ) -> CaseSize:
        """How many records a case export would hold and in how many bags (the DPO; counted from the index,
        nothing decrypted, not audited): what a request for it announces to its approver."""
        authorize(operator, "export")
        case = await case_row(self.access.pool, case_ref)  # the case's row only: its notes stay sealed
        custodians = await case_custodians(self.access.pool, case["case_id"])
        planned, _skipped, sizes = await self._plan(custodians, case["period_start"], case["period_end"], bag_records)
        return CaseSize(records=sum(sizes.values()), bags=len(planned))

    async def _custodian_export(
        self, operator: Operator, bag: PlannedBag, records: Sequence[IndexedRecord], *, reason: str, case_ref: str
    ) -> SubjectExport:
        """The records of a group or business-number bag decrypted for the export (audited ``export``: one row
        per pseudonym, with the case, the custodian and the group's pseudonym)."""
        authorize(operator, "export")
        details: dict[str, object] = {"case_ref": case_ref, "custodian_id": bag.custodian_id}
        if bag.group_ref:
            details.update(group=True, group_ref=bag.group_ref)
        conversation = await load_records(
            self.access.pool,
            self.access.reader,
            records,
            actor=operator.name,
            reason=reason,
            purpose="export",
            details=details,
            keep_archived=True,
        )
        self.metrics.decryptions.labels("export").inc()
        self.metrics.exports.inc()
        return SubjectExport(
            messages=conversation.messages,
            request_ref=case_ref,
            generated_at=datetime.now(UTC),
            subject_refs=tuple(conversation.subject_refs),
            archived=conversation.archived,
            correspondent=conversation.correspondent,
        )

    async def _bag_export(
        self,
        operator: Operator,
        bag: PlannedBag,
        case: CaseFile,
        *,
        reason: str,
        bag_records: int,
        conversation_records: dict[tuple[str, str], list[IndexedRecord]],
    ) -> SubjectExport:
        """What one planned bag holds, decrypted (audited as an export)."""
        summary = case.summary
        if bag.kind == "person":
            assert bag.subject_ref is not None
            return await self.export(
                operator,
                subject_ref=bag.subject_ref,
                reason=reason,
                request_ref=case.case_ref,
                since=summary.period_start,
                until=summary.period_end,
                keep_archived=True,
            )
        async with self.access.pool.acquire() as conn:
            if bag.kind == "group":
                records = await custodian_records(
                    conn,
                    group_ref=bag.group_ref,
                    phone_number_id=bag.phone_number_id,
                    since=summary.period_start,
                    until=summary.period_end,
                )
            else:
                assert bag.subject_ref is not None
                assert bag.phone_number_id is not None
                key = (bag.custodian_id, bag.subject_ref)
                if key not in conversation_records:  # one conversation's index rows at a time, for its volumes
                    conversation_records.clear()
                    conversation_records[key] = await custodian_records(
                        conn,
                        phone_number_id=bag.phone_number_id,
                        subject_ref=bag.subject_ref,
                        since=summary.period_start,
                        until=summary.period_end,
                    )
                every = conversation_records[key]
                start = (bag.part - 1) * bag_records
                # The last volume takes whatever arrived since the plan counted (an open period).
                records = every[start:] if bag.part == bag.parts else every[start : start + bag_records]
        return await self._custodian_export(operator, bag, records, reason=reason, case_ref=case.case_ref)

    async def export_case(
        self,
        operator: Operator,
        case_ref: str,
        out: Path,
        *,
        reason: str | None,
        signing_key: Ed25519PrivateKey,
        language: Literal["en", "fr"] = "en",
        time_zone: str = "UTC",
        pdf_limits: VolumeLimits | None = None,
        progress: ProgressCallback | None = None,
        bag_records: int | None = None,
        formats: Collection[str] | None = None,
    ) -> CaseExport:
        """Export the case (the DPO, with a reason: every bag's read is audited as an export, every medium as its
        own view) into the empty or new folder ``out``: the bags of the module docstring, each holding
        ``formats`` (among services/evidence/package.py BAG_FORMATS; all of them when None), written one after
        the other (one bag's records in memory at a time; ``bag_records``: at most this many records per bag,
        services/evidence/case_export.py CASE_BAG_RECORDS when None). Only on an approved request
        (:meth:`ApprovalActions.request_case_export`; :class:`ApprovalRequired` otherwise)."""
        authorize(operator, "export")
        require_approval(operator, "case.export")
        reason = require_reason(reason)
        if formats is not None and (not formats or set(formats) - set(BAG_FORMATS)):
            raise CaseRefused(f"a case export's formats are among {', '.join(BAG_FORMATS)}")
        if not await asyncio.to_thread(empty_or_new, out):  # before anything is read
            raise CaseRefused(f"{out} is not empty: a case is exported into an empty folder")
        found = await self.case(operator, case_ref)
        bag_records = bag_records or case_export.CASE_BAG_RECORDS
        summary = found.summary
        planned, skipped, _sizes = await self._plan(
            found.custodians, summary.period_start, summary.period_end, bag_records
        )
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
        # The archive's hash chain, signed as it stands now: every bag names the checkpoint that pins it.
        pinned = await self.write_checkpoint(operator)
        bags: list[WrittenPackage] = []
        held: dict[tuple[str, str], list[IndexedRecord]] = {}
        for n, bag in enumerate(planned, start=1):
            if progress:
                progress(n - 1, len(planned))
            export = await self._bag_export(
                operator, bag, found, reason=reason, bag_records=bag_records, conversation_records=held
            )
            header = ExportHeader(
                scope="case",
                title=summary.title if bag.parts == 1 else f"{summary.title} ({bag.part}/{bag.parts})",
                export_id=f"{case_ref}-{n:02d}",
                custodians=bag_custodians(bag, export),
                period_start=summary.period_start,
                period_end=summary.period_end,
                time_zone=time_zone,
                language=language,
                requested_by=operator.name,
                reason=reason,
                generated_at=export.generated_at,
                case_ref=case_ref,
                checkpoint=pinned[0] if pinned else None,
            )
            bags.append(
                await write_package(
                    out / bag.folder,
                    "all",
                    header=header,
                    messages=export.messages,
                    archived=export.archived,
                    media=self.media(operator, export.conversation(), reason=reason),
                    request_ref=case_ref,
                    signing_key=signing_key,
                    pdf_limits=pdf_limits,
                    bag_formats=formats,
                )
            )
        if progress:
            progress(len(planned), len(planned))
        about = {bag.folder: bag.to_json() for bag in planned}
        manifest = await asyncio.to_thread(write_case_manifest, out, case_ref, bags, skipped, signing_key, about)
        return CaseExport(case_ref, bags, skipped, manifest)


def bag_custodians(bag: PlannedBag, export: SubjectExport) -> tuple[HeaderCustodian, ...]:
    """Who a bag's header names: the person (as their records name them), the group (its subject, as its
    records name it) and the business numbers the records were read under."""
    numbers = tuple(
        HeaderCustodian(kind="business", label=b.display_number or b.phone_number_id, ref=b.phone_number_id)
        for b in export.correspondent.business_numbers
    )
    if bag.kind == "group":
        assert bag.group_ref is not None
        subject = group_subject(export.messages) or f"group {bag.group_ref[:12]}"
        return (HeaderCustodian(kind="group", label=subject, ref=bag.group_ref), *numbers)
    ref = bag.subject_ref or (export.subject_refs[0] if export.subject_refs else "")
    label = export.correspondent.label or f"person {ref[:12]}"
    if bag.kind == "phone_number" and bag.phone_number_id and not numbers:
        numbers = (HeaderCustodian(kind="business", label=bag.phone_number_id, ref=bag.phone_number_id),)
    return (HeaderCustodian(kind="person", label=label, ref=ref), *numbers)
