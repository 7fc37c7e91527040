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
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from services.actions.approvals import empty_or_new, require_approval
from services.actions.governing import GoverningActions
from services.actions.operators import ROLE_RANK, Operator, ProgressCallback, authorize
from services.actions.reading import ReadingActions
from services.core.audit import require_reason, write_audit
from services.core.refusals import NotFound
from services.core.vocabulary import CaseStatus
from services.evidence.case_export import write_case_manifest
from services.evidence.header import Custodian as HeaderCustodian
from services.evidence.header import ExportHeader
from services.evidence.package import WrittenPackage, write_package
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
from services.review.search import IndexHit, SearchFilter

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["CaseActions", "CaseClosing", "CaseExport", "CaseExporting", "CaseRefused", "UnknownCase"]


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
    """What ``wa-archive case export`` wrote: one signed bag per person custodian, and the custodians it could not
    export (kind and why), all listed in the signed ``case.json`` at the top of the folder."""

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


class CaseExporting(CaseActions):
    """A case exported as evidence: every person custodian's messages of the case's period, with their media, in a
    signed BagIt bag of its own (services/evidence/package.py), and a signed ``case.json`` that lists the bags with
    the digest of each one's tag manifest (what its signature covers), so that a bag left out or swapped is seen."""

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
    ) -> CaseExport:
        """Export the case (the DPO, with a reason: every person's read is audited as an export, every medium as
        its own view). Business-number and group custodians are listed as skipped: export their people one by one
        (a number's conversations can be many). Only on an approved request
        (:meth:`ApprovalActions.request_case_export`; :class:`ApprovalRequired` otherwise)."""
        authorize(operator, "export")
        require_approval(operator, "case.export")
        reason = require_reason(reason)
        if not await asyncio.to_thread(empty_or_new, out):  # before anything is read
            raise CaseRefused(f"{out} is not empty: a case is exported into an empty folder")
        found = await self.case(operator, case_ref)
        await asyncio.to_thread(out.mkdir, parents=True, exist_ok=True)
        bags: list[WrittenPackage] = []
        skipped: list[dict[str, str]] = []
        people = [c for c in found.custodians if c.kind == "person" and c.subject_refs]
        for custodian in found.custodians:
            if custodian not in people:
                skipped.append({"custodian_id": custodian.custodian_id, "kind": custodian.kind, "why": SKIPPED_WHY})
        summary = found.summary
        # The archive's hash chain, signed as it stands now: every bag names the checkpoint that pins it.
        pinned = await self.write_checkpoint(operator)
        for n, custodian in enumerate(people, start=1):
            if progress:
                progress(n - 1, len(people))
            export = await self.export(
                operator,
                subject_ref=custodian.subject_refs[0],
                reason=reason,
                request_ref=case_ref,
                since=summary.period_start,
                until=summary.period_end,
                keep_archived=True,
            )
            label = export.correspondent.label or custodian.label
            header = ExportHeader(
                scope="case",
                title=summary.title,
                export_id=f"{case_ref}-{n:02d}",
                custodians=(
                    HeaderCustodian(kind="person", label=label, ref=custodian.subject_refs[0]),
                    *(
                        HeaderCustodian(
                            kind="business", label=b.display_number or b.phone_number_id, ref=b.phone_number_id
                        )
                        for b in export.correspondent.business_numbers
                    ),
                ),
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
                    out / f"{n:02d}-{custodian.custodian_id}",
                    "all",
                    header=header,
                    messages=export.messages,
                    archived=export.archived,
                    media=self.media(operator, export.conversation(), reason=reason),
                    request_ref=case_ref,
                    signing_key=signing_key,
                    pdf_limits=pdf_limits,
                )
            )
        if progress:
            progress(len(people), len(people))
        manifest = await asyncio.to_thread(write_case_manifest, out, case_ref, bags, skipped, signing_key)
        return CaseExport(case_ref, bags, skipped, manifest)


SKIPPED_WHY = "business-number and group custodians are not exported whole: export their people one by one"
