"""The export-job actions: queue an export, follow it, download its files, and the worker's run and expiry.

Queueing a person's export needs the ``export`` role (DPO) and a reason, and is audited (``export.requested``: who
asked, why, the person's pseudonym, the job's id); a search result's (:meth:`ExportingActions.queue_search_export`)
needs ``export.search`` (a reader too, within their cases' scope), its hits frozen into the job and the search
described without its words or contact (services/evidence/selection.py). The decrypting read of the run is audited
as every export is (purpose ``export``, with the requester as actor); every download is audited
(``export.downloaded``), and so is an expiry (``export.expired``, by the scheduler). A job is seen only by whoever
asked for it and by a DPO.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from services.actions.approvals import (
    ApprovalActions,
    ApprovalRequest,
    ApprovalRequired,
    is_approved,
    require_approval,
)
from services.actions.cases import CaseActions
from services.actions.operators import SCHEDULER, Operator, authorize
from services.actions.reading import MediaFile, SubjectExport
from services.core.audit import on_behalf_of, require_reason, write_audit
from services.core.bucket import ArchiveBucket
from services.core.identity import resolve_subject_refs
from services.core.refusals import InvalidRequest, NotFound, PersonRequired
from services.core.vocabulary import is_pseudonym
from services.evidence import jobs, selection
from services.evidence.jobs import ExportJob, ExportNotSigned, JobFile, JobRequest, JobScope, Producer, Progress
from services.evidence.pdf import VolumeLimits
from services.governance import approvals as approval_store
from services.governance.cases import CaseRefused
from services.review.search import SearchFilter

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.actions.layer import Actions

# The zip a case's job hands over: the case export's folder (case.json, its signature and the bags) as one file.
CASE_ARCHIVE: Final = "case-{case_ref}.zip"

log = logging.getLogger("wa_archive.exports")


@dataclass(frozen=True, slots=True)
class CaseExportRequest:
    """A request to export a case, as its case page shows it: the request (its state, who asked, the size it
    announced) and, once approved for the work bucket, its export job (None before, or for a folder the CLI
    wrote)."""

    request: ApprovalRequest
    job: ExportJob | None

    @property
    def in_folder(self) -> bool:
        """Written by ``wa-archive approvals approve`` into a folder of the approver's machine, not handed over by
        the console."""
        return "out" in self.request.target


def check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    """The formats asked for, each once, in the order given; :class:`InvalidRequest` for none, or one the jobs
    lack (:data:`services.evidence.jobs.FORMATS`)."""
    unknown = sorted(set(formats) - set(jobs.FORMATS))
    if not formats or unknown:
        raise InvalidRequest(f"formats must be among {', '.join(jobs.FORMATS)}")
    return tuple(dict.fromkeys(formats))


def may_see(operator: Operator, job: ExportJob) -> bool:
    """Whether the operator may follow the job and download its files: the requester, or a DPO."""
    return operator.name == job.requested_by or operator.role == "dpo"


class ExportingActions(CaseActions, ApprovalActions):
    """Export jobs (``dpo``: the role that exports), over the database and the work bucket."""

    async def export_or_request(
        self,
        operator: Operator,
        *,
        contact: str,
        phone_number_id: str | None = None,
        reason: str | None,
        request_ref: str | None = None,
        formats: Sequence[str] = ("json",),
        keep_archived: bool = False,
    ) -> SubjectExport | ApprovalRequest:
        """A person's export (:meth:`ReadingActions.export`, read now) when it holds at most
        ``WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES`` messages, else a request for it: once approved, an export job
        per pseudonym holding their messages (``formats`` among the jobs'), downloaded as any job's. For the admin
        API and ``wa-archive export``."""
        authorize(operator, "export")
        require_reason(reason)
        async with self.access.pool.acquire() as conn:
            refs = await resolve_subject_refs(conn, self.access.pepper, contact, phone_number_id)
        counts = {ref: await self.count_messages([ref]) for ref in refs}
        messages = sum(counts.values())
        if messages <= self.export_threshold():
            return await self.export(
                operator,
                contact=contact,
                phone_number_id=phone_number_id,
                reason=reason,
                request_ref=request_ref,
                keep_archived=keep_archived,
            )
        return await self.request_export(
            operator,
            subject_refs=[ref for ref, count in counts.items() if count],
            reason=reason,
            formats=[f for f in formats if f in jobs.FORMATS] or ["json"],
            request_ref=request_ref,
            messages=messages,
        )

    async def queue_export_or_request(
        self,
        operator: Operator,
        *,
        subject_ref: str,
        reason: str | None,
        formats: Sequence[str] = jobs.FORMATS,
        scope: JobScope = "conversation",
        since: datetime | None = None,
        until: datetime | None = None,
        language: str = "en",
        request_ref: str | None = None,
    ) -> ExportJob | ApprovalRequest:
        """:meth:`queue_export` when the export holds at most ``WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES``
        messages, else a request for it (:meth:`ApprovalActions.request_export`: once approved, the job is queued).
        The same refusals as :meth:`queue_export`, checked before either."""
        authorize(operator, "export")
        require_reason(reason)
        if not is_pseudonym(subject_ref):
            raise InvalidRequest("name the person by pseudonym (64 lowercase hex digits)")
        messages = await self.count_messages([subject_ref], since=since, until=until)
        if messages <= self.export_threshold():
            return await self.queue_export(
                operator,
                subject_ref=subject_ref,
                reason=reason,
                formats=formats,
                scope=scope,
                since=since,
                until=until,
                language=language,
                request_ref=request_ref,
            )
        unknown = sorted(set(formats) - set(jobs.FORMATS))
        if not formats or unknown:
            raise InvalidRequest(f"formats must be among {', '.join(jobs.FORMATS)}")
        return await self.request_export(
            operator,
            subject_refs=[subject_ref],
            reason=reason,
            formats=formats,
            scope=scope,
            since=since,
            until=until,
            language=language,
            request_ref=request_ref,
            messages=messages,
        )

    async def queue_person_export(
        self,
        operator: Operator,
        *,
        contact: str | None = None,
        subject_ref: str | None = None,
        phone_number_id: str | None = None,
        reason: str | None,
        formats: Sequence[str] = ("all",),
        since: datetime | None = None,
        until: datetime | None = None,
        language: str = "en",
        request_ref: str | None = None,
    ) -> list[ExportJob] | ApprovalRequest:
        """A person's export (Art. 15/20) as export jobs, one per pseudonym holding their records (a person has
        one per business number they wrote to), named by ``contact`` (resolved now: the jobs keep pseudonyms only)
        or ``subject_ref``; when they hold more than ``WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES`` records in all, a
        request for them instead. For the admin API. Refused before anything is queued: without the role, a
        reason, exactly one way of naming the person, or with a format the jobs lack; :class:`NotFound` when the
        archive holds nothing of them."""
        authorize(operator, "export")
        reason = require_reason(reason)
        wanted = check_formats(formats)
        if (contact is None) == (subject_ref is None):
            raise PersonRequired("name the person by contact id or by subject_ref, one of them")
        if subject_ref is not None and not is_pseudonym(subject_ref):
            raise PersonRequired("a subject_ref is 64 lowercase hex digits")
        async with self.access.pool.acquire() as conn:
            refs = (
                await resolve_subject_refs(conn, self.access.pepper, contact, phone_number_id)
                if contact is not None
                else [str(subject_ref)]
            )
        counts = {ref: await self.count_messages([ref], since=since, until=until) for ref in refs}
        holding = [ref for ref, count in counts.items() if count]
        if not holding:
            raise NotFound("the archive holds no records of this person (in this period)")
        if sum(counts.values()) > self.export_threshold():
            return await self.request_export(
                operator,
                subject_refs=holding,
                reason=reason,
                formats=wanted,
                scope="subject_access",
                since=since,
                until=until,
                language=language,
                request_ref=request_ref,
                messages=sum(counts.values()),
            )
        return [
            await self.queue_export(
                operator,
                subject_ref=ref,
                reason=reason,
                formats=wanted,
                scope="subject_access",
                since=since,
                until=until,
                language=language,
                request_ref=request_ref,
            )
            for ref in holding
        ]

    async def queue_search_export(
        self,
        operator: Operator,
        *,
        reason: str | None,
        formats: Sequence[str],
        query: SearchFilter | None = None,
        saved_search: tuple[str, str] | None = None,
        language: str = "en",
    ) -> ExportJob | ApprovalRequest:
        """Export what a search shows to ``operator``: ``query`` run now (:meth:`search`, audited, within their
        scope), or a case's saved search (``saved_search``: case reference and search id,
        :meth:`run_saved_search`). The hits are frozen into the job (services/evidence/selection.py): the worker
        exports exactly them, read again within the requester's scope. Audited ``export.requested`` with the
        search's description (never its words or contact). Above ``WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES`` hits,
        a request for a DPO to approve instead (kind ``export.search``).

        Refused before anything is searched: without the role (``export.search``: a reader may export within the
        cases assigned to them), a reason, or with a format the jobs lack; :class:`InvalidRequest` when the
        search finds nothing, or when neither or both of ``query`` and ``saved_search`` are given."""
        authorize(operator, "export.search")
        reason = require_reason(reason)
        wanted = check_formats(formats)
        event_ids, description, people = await self._search_selection(operator, query, saved_search)
        if len(event_ids) > self.export_threshold():
            return await self._request_search_export(
                operator, event_ids, description, people, reason=reason, formats=wanted, language=language
            )
        return await self.queue_selected(
            operator,
            event_ids=event_ids,
            description=description,
            reason=reason,
            formats=wanted,
            language=language,
        )

    async def export_search(
        self, operator: Operator, *, query: SearchFilter, reason: str | None, formats: Sequence[str] = ("all",)
    ) -> tuple[SubjectExport, dict[str, Any]] | ApprovalRequest:
        """What a search shows to ``operator``, read now for an export written by the caller (``wa-archive export
        --search``), with the search's description; the read is audited as an export (one row per pseudonym, the
        description in each). Above the four-eyes threshold, a request instead (as :meth:`queue_search_export`,
        whose refusals it shares; once approved, an export job)."""
        authorize(operator, "export.search")
        reason = require_reason(reason)
        wanted = check_formats(formats)
        event_ids, description, people = await self._search_selection(operator, query, None)
        if len(event_ids) > self.export_threshold():
            return await self._request_search_export(
                operator, event_ids, description, people, reason=reason, formats=wanted, language="en"
            )
        export = await self.export_selected(
            operator,
            event_ids=event_ids,
            reason=reason,
            keep_archived=bool(jobs.ARCHIVED_FORMATS & set(wanted)),
            details={"search": description},
        )
        return export, description

    async def _search_selection(
        self, operator: Operator, query: SearchFilter | None, saved_search: tuple[str, str] | None
    ) -> tuple[tuple[str, ...], dict[str, Any], list[str]]:
        """The hits of the search (or the case's saved search) within the operator's scope, frozen; its
        description; the pseudonyms found. :class:`InvalidRequest` when it finds nothing."""
        if (query is None) == (saved_search is None):
            raise InvalidRequest("export a search or a case's saved search, one of them")
        scope = await self.reading_scope(operator)
        cases = None if scope.everything else scope.sources
        key = selection.query_key(self.access.pepper)
        if query is not None:
            hits = await self.search(operator, query)
            description = selection.describe_search(query, hits, key=key, cases=cases)
        else:
            assert saved_search is not None
            case_ref, search_id = saved_search
            hits, saved = await self.saved_search_hits(operator, case_ref, search_id)
            description = selection.describe_search(
                saved, hits, key=key, cases=cases, saved_search=(case_ref.strip(), search_id)
            )
        event_ids = selection.selected_events(hits)
        if not event_ids:
            raise InvalidRequest("the search found nothing to export")
        return event_ids, description, sorted({hit.subject_ref for hit in hits if hit.subject_ref})

    async def _request_search_export(
        self,
        operator: Operator,
        event_ids: Sequence[str],
        description: Mapping[str, Any],
        people: Sequence[str],
        *,
        reason: str,
        formats: Sequence[str],
        language: str,
    ) -> ApprovalRequest:
        """The four-eyes request of a search result above the threshold (kind ``export.search``): its hits frozen
        in the target (references only), queued as a job once a DPO approves it."""
        return await self.request_approval(
            operator,
            "export.search",
            target={
                "event_ids": list(event_ids),
                "search": dict(description),
                "formats": list(formats),
                "language": language,
            },
            reason=reason,
            # The reason is sealed under the first person's key (an erasure of them destroys it with their data).
            subject_refs=list(people[:1]),
        )

    async def queue_selected(
        self,
        operator: Operator,
        *,
        event_ids: Sequence[str],
        description: Mapping[str, Any],
        reason: str | None,
        formats: Sequence[str],
        language: str = "en",
        requester_role: str | None = None,
    ) -> ExportJob:
        """Queue the export job of a search's hits (``event_ids``, frozen) described by ``description``; audited
        ``export.requested`` with it. Above the four-eyes threshold only as the approver of an ``export.search``
        request (:class:`ApprovalRequired` otherwise), who queues it in their name; ``requester_role``: the role
        the records are read under (the operator's by default; an approved reader's request keeps the reader's
        scope, already applied to ``event_ids``)."""
        authorize(operator, "export.search")
        reason = require_reason(reason)
        wanted = check_formats(formats)
        if len(event_ids) > self.export_threshold() and not is_approved(operator, "export.search"):
            raise ApprovalRequired(
                f"this export holds {len(event_ids)} records, more than {self.export_threshold()}: exporting "
                "more than the four-eyes threshold needs a second person's approval: request it"
            )
        request = JobRequest(
            scope="search",
            subject_ref=None,
            formats=wanted,
            requested_by=operator.name,
            reason=reason,
            language="fr" if language == "fr" else "en",
            request_ref=description.get("case_ref"),
            event_ids=tuple(event_ids),
            selection=description,
            requester_role=requester_role or operator.role,
        )
        return await self._queue_job(operator, request, search=dict(description))

    async def _queue_job(
        self, operator: Operator, request: JobRequest, *, job_id: str | None = None, **details: Any
    ) -> ExportJob:
        """Queue ``request`` (with ``job_id``: that id) and audit it, in one transaction: ``export.requested`` by
        ``operator``, with the reason, the person's pseudonym if it names one, the job's id, scope and formats, and
        ``details`` (references only); returns the job as stored."""
        async with self.access.pool.acquire() as conn, conn.transaction():
            job_id = await jobs.queue_job(conn, request, job_id=job_id)
            await write_audit(
                conn,
                actor=operator.name,
                action="export.requested",
                reason=request.reason,
                subject_ref=request.subject_ref,
                details={"job_id": job_id, "scope": request.scope, "formats": list(request.formats), **details},
            )
        found = await jobs.get_job(self.access.pool, job_id)
        assert found is not None
        return found

    def _work(self) -> ArchiveBucket:
        if self.access.work is None:
            raise RuntimeError("the archive was opened without its work bucket")
        return self.access.work

    async def queue_export(
        self,
        operator: Operator,
        *,
        subject_ref: str,
        reason: str | None,
        formats: Sequence[str] = jobs.FORMATS,
        scope: JobScope = "conversation",
        since: datetime | None = None,
        until: datetime | None = None,
        language: str = "en",
        request_ref: str | None = None,
    ) -> ExportJob:
        """Queue an export of the person ``subject_ref`` names; audited (``export.requested``) with the reason.
        Refused (nothing queued) without the role, a reason, a pseudonym, or with a format the renderer lacks; and
        (:class:`ApprovalRequired`) when it holds more messages than the four-eyes threshold, outside an approved
        request (:meth:`queue_export_or_request` asks for one instead)."""
        authorize(operator, "export")
        reason = require_reason(reason)
        if not is_pseudonym(subject_ref):
            raise InvalidRequest("name the person by pseudonym (64 lowercase hex digits)")
        unknown = sorted(set(formats) - set(jobs.FORMATS))
        if not formats or unknown:
            raise InvalidRequest(f"formats must be among {', '.join(jobs.FORMATS)}")
        if scope not in jobs.JOB_SCOPES:
            raise InvalidRequest(f"scope must be one of {', '.join(jobs.JOB_SCOPES)}")
        if not is_approved(operator, "export"):
            messages = await self.count_messages([subject_ref], since=since, until=until)
            if messages > self.export_threshold():
                raise ApprovalRequired(
                    f"this export holds {messages} messages, more than {self.export_threshold()}: exporting "
                    "more messages than the four-eyes threshold needs a second person's approval: request it"
                )
        request = JobRequest(
            scope=scope,
            subject_ref=subject_ref,
            formats=tuple(dict.fromkeys(formats)),
            requested_by=operator.name,
            reason=reason,
            since=since,
            until=until,
            language="fr" if language == "fr" else "en",
            request_ref=request_ref,
        )
        return await self._queue_job(operator, request)

    async def queue_case_export(
        self,
        operator: Operator,
        *,
        request_id: str,
        case_ref: str,
        requested_by: str,
        reason: str | None,
        formats: Sequence[str] | None,
        language: Literal["en", "fr"] = "en",
    ) -> ExportJob:
        """Queue the export job of a case (scope ``case``): only on the approved ``case.export`` request
        ``request_id`` (its approver carries this out; :class:`ApprovalRequired` otherwise), whose id the job
        takes, so one approval makes one job. The export worker writes it (:meth:`run_next_export`), signed with
        its export signing key; the requester and any DPO follow it and download it as any job. Audited
        ``export.requested`` (the case's reference, the job's id)."""
        authorize(operator, "export")
        require_approval(operator, "case.export")
        reason = require_reason(reason)
        request = JobRequest(
            scope="case",
            subject_ref=None,
            formats=tuple(dict.fromkeys(formats or ("all",))),
            requested_by=requested_by,
            reason=reason,
            language=language,
            request_ref=case_ref,
        )
        return await self._queue_job(operator, request, job_id=request_id, case_ref=case_ref)

    async def case_export_requests(self, operator: Operator, case_ref: str) -> list[CaseExportRequest]:
        """The requests to export the case, newest first, each with its job once one was queued (``dpo``: who
        exports; not audited, references of the system's own records as the request list)."""
        authorize(operator, "approval.list")
        found = await approval_store.requests_about_case(
            self.access.pool, self.access.keyring, kind="case.export", case_ref=case_ref.strip()
        )
        result = []
        for request in found:
            # A console request's job, once approved, bears the request's id (:meth:`queue_case_export`).
            job = None if "out" in request.target else await jobs.get_job(self.access.pool, request.request_id)
            result.append(CaseExportRequest(request, job))
        return result

    def _case_producer(
        self, job: ExportJob, signing_key: Ed25519PrivateKey | None, pdf_limits: VolumeLimits | None
    ) -> Producer:
        """What a case's job writes: the case export (:meth:`CaseExporting.export_case`) carried out as the
        approver of the request the job was made from, on its behalf (the audit rows name both), then zipped.
        Refused (the job fails ``refused``) unless that request is an approved ``case.export`` of this case."""

        async def produce(folder: Path, progress: Progress) -> list[Path]:
            try:
                approval = await approval_store.get_request(self.access.pool, self.access.keyring, job.job_id)
            except approval_store.UnknownRequest:
                raise CaseRefused("no approved case export request made this job") from None
            target = approval.target
            if (
                approval.kind != "case.export"
                or approval.status != "approved"
                or approval.decided_by is None
                or target.get("case_ref") != job.request_ref
                or "out" in target
            ):
                raise CaseRefused("no approved case export request made this job")
            if signing_key is None:
                raise ExportNotSigned("no export signing key is configured")
            assert job.request_ref is not None
            approver = Operator(approval.decided_by, "dpo")
            out = folder / f"case-{job.job_id}"
            with on_behalf_of(
                request_id=approval.request_id,
                kind=approval.kind,
                requester=approval.requested_by,
                approver=approver.name,
            ):
                await cast("Actions", self).export_case(
                    approver,
                    job.request_ref,
                    out,
                    reason=approval.reason,
                    signing_key=signing_key,
                    language="fr" if job.language == "fr" else "en",
                    time_zone=str(target.get("time_zone") or "UTC"),
                    pdf_limits=pdf_limits,
                    progress=progress.callback("exporting"),
                    formats=list(target["formats"]) if target.get("formats") else None,
                )
            progress.set("packing", 0, 1)
            archive = folder / CASE_ARCHIVE.format(case_ref=job.request_ref)
            await asyncio.to_thread(jobs.zip_folder, out, archive, root_name=f"case-{job.request_ref}")
            await asyncio.to_thread(shutil.rmtree, out, ignore_errors=True)
            return [archive]

        return produce

    async def export_job(self, operator: Operator, job_id: str) -> ExportJob:
        """The job; :class:`NotFound` when there is none or the operator may not see it (:func:`may_see`)."""
        authorize(operator, "export.search")
        found = await jobs.get_job(self.access.pool, job_id)
        if found is None or not may_see(operator, found):
            raise NotFound("no such export job")
        return found

    async def export_jobs(self, operator: Operator, *, everyone: bool = False, limit: int = 50) -> list[ExportJob]:
        """The operator's recent jobs, newest first (everyone's with ``everyone``, for a DPO)."""
        authorize(operator, "export.search")
        mine = None if everyone and operator.role == "dpo" else operator.name
        return await jobs.recent_jobs(self.access.pool, requested_by=mine, limit=limit)

    async def export_file(self, operator: Operator, job_id: str, name: str) -> tuple[JobFile, AsyncIterator[bytes]]:
        """A finished job's file, streamed from the work bucket (never held whole); audited
        (``export.downloaded``) before the first byte. :class:`NotFound` unless the job is ``done`` and lists
        the file, and the operator may see it."""
        job = await self.export_job(operator, job_id)
        file = job.file(name)
        if job.status != "done" or file is None:
            raise NotFound("no such export file")
        size, pieces = await self._work().stream(jobs.object_key(job.job_id, file.name))
        await write_audit(
            self.access.pool,
            actor=operator.name,
            action="export.downloaded",
            reason=None,
            subject_ref=job.subject_ref,
            details={"job_id": job.job_id, "file": file.name, "size": size},
        )
        return file, pieces

    async def run_next_export(
        self,
        *,
        ttl_s: float,
        stale_s: float,
        heartbeat_s: float = 1.0,
        signing_key: Ed25519PrivateKey | None = None,
        pdf_limits: VolumeLimits | None = None,
        job_id: str | None = None,
    ) -> ExportJob | None:
        """Claim the oldest claimable job (``job_id``: that one only) and run it (services/evidence/jobs.py); None
        when there is none. A job asking for the signed package (``all``) fails without ``signing_key``."""
        job = await jobs.claim_job(self.access.pool, stale_s=stale_s, job_id=job_id)
        if job is None:
            return None
        # The role was checked when the job was queued; every read below is audited under the requester's name and
        # made under their role: a reader's search result is read within their scope as it stands now.
        requester = Operator(job.requested_by, "reader" if job.requester_role == "reader" else "dpo")

        async def read(job: ExportJob) -> SubjectExport:
            if job.scope == "search":
                return await self.export_selected(
                    requester,
                    event_ids=job.event_ids,
                    reason=job.reason,
                    request_ref=job.request_ref,
                    keep_archived=bool(jobs.ARCHIVED_FORMATS & set(job.formats)),
                    details={"job_id": job.job_id},
                )
            assert job.subject_ref is not None
            return await self.export(
                requester,
                subject_ref=job.subject_ref,
                reason=job.reason,
                request_ref=job.request_ref,
                since=job.since,
                until=job.until,
                keep_archived=bool(jobs.ARCHIVED_FORMATS & set(job.formats)),
            )

        async def checkpoint() -> str | None:
            pinned = await self.write_checkpoint(SCHEDULER)
            return pinned[0] if pinned else None

        def media(export: SubjectExport) -> AsyncIterator[MediaFile]:
            return self.media(requester, export.conversation(), reason=job.reason)

        finished = await jobs.run_job(
            self.access.pool,
            job,
            self._work(),
            read=read,
            ttl_s=ttl_s,
            heartbeat_s=heartbeat_s,
            renderer=jobs.package_renderer(media, signing_key, pdf_limits=pdf_limits, checkpoint=checkpoint),
            produce=self._case_producer(job, signing_key, pdf_limits) if job.scope == "case" else None,
        )
        outcome = "done" if finished.status == "done" else "failed"
        await write_audit(
            self.access.pool,
            actor=SCHEDULER.name,
            action=f"export.{outcome}",
            reason=None,
            subject_ref=finished.subject_ref,
            record_count=len(finished.files),
            details={"job_id": finished.job_id, "requested_by": finished.requested_by},
        )
        self.metrics.export_jobs.labels(outcome).inc()
        return finished

    async def expire_exports(self) -> list[str]:
        """Delete the files of the jobs past their expiry and mark them ``expired`` (audited by the scheduler)."""
        expired = await jobs.expire_jobs(self.access.pool, self._work())
        for job_id in expired:
            await write_audit(
                self.access.pool, actor=SCHEDULER.name, action="export.expired", reason=None, details={"job_id": job_id}
            )
        return expired
