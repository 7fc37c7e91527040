"""Every operator action, once. The admin API, the ``wa-archive`` CLI and the scheduler are adapters over these.

An action of :class:`Actions` takes the :class:`Operator` who asks (a name for the audit log and a role) and typed
arguments, and is the one place that
1. checks the role (:class:`Forbidden`) and, where a person's records are decrypted, the reason
   (:class:`ReasonRequired`, before anything is read);
2. writes the audit row with the operator's name for every action that changes the archive or discloses what it
   holds: retrievals and exports (one row per pseudonym, before decrypting), searches, holds, erasures, retention
   runs (dry or real, failed ones too), index rebuilds and key rewraps. Listings of the system's own records (holds,
   erasure requests, the audit log itself, the keys per KEK) are not audited: they hold pseudonyms and references
   only;
3. counts the metrics (:class:`RetentionMetrics`: the process's registry in the service, a registry of its own
   in the CLI);
4. returns a typed result.

Refusals derive from :class:`services.core.refusals.ActionRefused` and carry their HTTP status and exit code
(:class:`Forbidden` 403/2, :class:`NotFound` 404/1, the others 400/2: :class:`ReasonRequired`, :class:`PersonRequired`,
:class:`GroupRequired`, :class:`HoldError`, :class:`ErasureError`, :class:`RewrapRefused`); each adapter registers
one handler for the base. Anything else is a failure of the system.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from services.actions.access import ArchiveAccess
from services.archiver.rebuild import RebuildReport, RecordKeys, rebuild_index
from services.core.audit import (
    AuditEntry,
    AuditFilter,
    Disclosure,
    audited_decrypt,
    recent_audit,
    require_reason,
    write_audit,
)
from services.core.container import media_record_id
from services.core.identity import is_pseudonym
from services.core.key_copies import KeyCopies
from services.core.keyring import KekUse, RewrapRefused, RewrapReport, kek_uses, rewrap_keys
from services.core.keywords import words
from services.core.refusals import Forbidden, NotFound, PersonRequired, ReasonRequired
from services.governance.erasure import (
    OPEN_STATUSES,
    ErasureError,
    ErasureOutcome,
    ErasureRequest,
    ErasureStatus,
    UnknownErasure,
    erase_subject,
    erasure_requests,
    extend_erasure,
    process_open_requests,
    refuse_erasure,
)
from services.governance.erasure_log import ErasureLog
from services.governance.holds import Hold, HoldError, HoldScope, create_hold, list_holds, release_hold
from services.governance.metrics import RetentionMetrics
from services.governance.recovery import RecoveryReport, reapply_erasures, restore_keys
from services.governance.retention_run import RetentionReport, retention_run
from services.retention.settings import Role
from services.review.assembly import ConversationMessage
from services.review.conversation import (
    Conversation,
    ConversationPage,
    GroupRequired,
    GroupTimeline,
    load_conversation,
    load_conversation_page,
    load_group_timeline,
)
from services.review.export import export_document
from services.review.queries import archived_media
from services.review.search import IndexHit, SearchFilter, search_index

__all__ = [
    "ROLE_RANK",
    "SCHEDULER",
    "Actions",
    "ErasureError",
    "Forbidden",
    "GroupRequired",
    "HoldError",
    "MediaFile",
    "NotFound",
    "Operator",
    "PersonRequired",
    "ReasonRequired",
    "RewrapRefused",
    "SubjectExport",
    "authorize",
]

log = logging.getLogger("wa_archive.retention")

ActionName = Literal[
    "messages",
    "group.messages",
    "media",
    "search",
    "export",
    "erase",
    "erasures",
    "erasure.refuse",
    "erasure.extend",
    "hold.create",
    "hold.list",
    "hold.release",
    "retention.run",
    "audit",
    "rebuild-index",
    "keys.status",
    "keys.rewrap",
    "recover",
]

ROLE_RANK: Final[dict[Role, int]] = {"reader": 1, "dpo": 2}
# ``reader`` may search and retrieve (with a reason, audited); everything else is the data protection officer's.
REQUIRED_ROLE: Final[dict[ActionName, Role]] = {
    "messages": "reader",
    "group.messages": "reader",
    "media": "reader",
    "search": "reader",
    "export": "dpo",
    "erase": "dpo",
    "erasures": "dpo",
    "erasure.refuse": "dpo",
    "erasure.extend": "dpo",
    "hold.create": "dpo",
    "hold.list": "dpo",
    "hold.release": "dpo",
    "retention.run": "dpo",
    "audit": "dpo",
    "rebuild-index": "dpo",
    "keys.status": "dpo",
    "keys.rewrap": "dpo",
    "recover": "dpo",
}

ProgressCallback = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Operator:
    """Who acts: ``name`` is what the audit log records as the actor."""

    name: str
    role: Role


# The retention service's own schedule: it runs retention, nothing else.
SCHEDULER: Final = Operator("scheduler", "dpo")

# The erasures counter's outcome label for a request's status after an action (the others are their own label).
ERASURE_OUTCOME_LABELS: Final[Mapping[str, str]] = {"blocked": "blocked_by_hold"}


def is_event_id(value: str) -> bool:
    """32 lowercase hex digits: how an event id looks (services/core/events.py)."""
    return len(value) == 32 and all(c in "0123456789abcdef" for c in value)


def authorize(operator: Operator, action: ActionName) -> None:
    """Raise :class:`Forbidden` unless the operator's role allows ``action``."""
    needed = REQUIRED_ROLE[action]
    if ROLE_RANK[operator.role] < ROLE_RANK[needed]:
        raise Forbidden(f"the {needed!r} role is required")


@dataclass(frozen=True, slots=True)
class HoldRelease:
    """A released hold and the erasure requests it had blocked, as processed just after the release."""

    hold: Hold
    erasures: list[ErasureOutcome]

    def to_json(self) -> dict[str, object]:
        return {
            **self.hold.to_json(),
            "erasures": [{"request_ref": e.request_ref, "status": e.status} for e in self.erasures],
        }


@dataclass(frozen=True, slots=True)
class MediaFile:
    """A media file of a retrieved conversation, decrypted as it is read: ``size`` bytes in ``chunks``, each
    authenticated before it is yielded (services/core/reader.py OpenedMedia: iterating may raise RecordTampered
    or ContainerError where the object is found corrupt). Consume or ``aclose()`` ``chunks``."""

    event_id: str
    mime_type: str
    size: int
    chunks: AsyncGenerator[bytes, None]

    @property
    def filename(self) -> str:
        return f"{self.event_id}.{self.mime_type.split('/')[-1].split(';')[0]}"


@dataclass(frozen=True, slots=True)
class SubjectExport:
    """A subject-access export (Art. 15/20): the person's messages, decrypted."""

    messages: list[ConversationMessage]
    request_ref: str | None
    generated_at: datetime

    def document(self) -> dict[str, Any]:
        return export_document(self.messages, request_ref=self.request_ref, generated_at=self.generated_at)


def search_audit_details(query: SearchFilter, hits: Sequence[IndexHit]) -> dict[str, Any]:
    """What the audit log says about a search: its filters, without the contact's identifier (the pseudonyms
    found stand for it)."""
    details: dict[str, Any] = {
        name: value.isoformat() if isinstance(value, datetime) else value
        for name, value in asdict(query).items()
        if name not in ("contact", "keywords") and value not in (None, False)
    }
    if query.keywords is not None:
        details["keywords"] = len(words(query.keywords))  # how many words, never which
    if query.contact:
        details["subject_refs"] = sorted({hit.subject_ref for hit in hits if hit.subject_ref})
    return details


class Actions:
    """The operator actions over one :class:`ArchiveAccess`, counting into ``metrics``."""

    def __init__(self, access: ArchiveAccess, metrics: RetentionMetrics) -> None:
        self.access = access
        self.metrics = metrics

    async def _audit(self, operator: Operator, action: str, details: Mapping[str, Any]) -> None:
        await write_audit(self.access.pool, actor=operator.name, action=action, reason=None, details=details)

    # ---------------------------------------------------------------- reading
    async def _decrypt(
        self,
        operator: Operator,
        action: ActionName,
        *,
        contact: str | None,
        phone_number_id: str | None,
        reason: str | None,
        purpose: Literal["retrieval", "export"],
        since: datetime | None = None,
        until: datetime | None = None,
        subject_ref: str | None = None,
    ) -> Conversation:
        """A person's conversation, decrypted; audited (one row per pseudonym) before anything is decrypted."""
        authorize(operator, action)
        conversation = await load_conversation(
            self.access.pool,
            self.access.reader,
            self.access.pepper,
            contact=contact,
            phone_number_id=phone_number_id,
            actor=operator.name,
            reason=require_reason(reason),
            since=since,
            until=until,
            purpose=purpose,
            subject_ref=subject_ref,
        )
        self.metrics.decryptions.labels(purpose).inc()
        return conversation

    async def messages(
        self,
        operator: Operator,
        *,
        contact: str | None = None,
        phone_number_id: str | None = None,
        reason: str | None,
        since: datetime | None = None,
        until: datetime | None = None,
        subject_ref: str | None = None,
    ) -> Conversation:
        """A person's conversation (retrieval), named by contact id or by pseudonym (a search hit's
        ``subject_ref``), between ``since`` and ``until`` when given. :class:`PersonRequired` unless exactly one."""
        return await self._decrypt(
            operator,
            "messages",
            contact=contact,
            phone_number_id=phone_number_id,
            reason=reason,
            purpose="retrieval",
            since=since,
            until=until,
            subject_ref=subject_ref,
        )

    async def conversation_page(
        self,
        operator: Operator,
        *,
        subject_ref: str,
        reason: str | None,
        page_size: int,
        page: int | None = None,
        anchor: str | None = None,
        keywords: str | None = None,
    ) -> ConversationPage:
        """One page of a person's conversation (retrieval, audited), decrypting only what it shows: the page
        holding ``anchor``, else the first message with ``keywords``, else ``page``, else the newest."""
        authorize(operator, "messages")
        found = await load_conversation_page(
            self.access.pool,
            self.access.reader,
            self.access.pepper,
            subject_ref=subject_ref,
            actor=operator.name,
            reason=require_reason(reason),
            page_size=page_size,
            page=page,
            anchor=anchor,
            keywords=keywords,
        )
        self.metrics.decryptions.labels("retrieval").inc()
        return found

    async def group_messages(
        self, operator: Operator, *, group_id: str, phone_number_id: str, reason: str | None
    ) -> GroupTimeline:
        """A Cloud API group's timeline (retrieval): every participant's messages, the participants joining and
        leaving, the group's updates. Audited like a retrieval, one row per pseudonym read, before decrypting;
        :class:`GroupRequired` without a group id and its business number."""
        authorize(operator, "group.messages")
        timeline = await load_group_timeline(
            self.access.pool,
            self.access.reader,
            self.access.pepper,
            group_id=group_id,
            phone_number_id=phone_number_id,
            actor=operator.name,
            reason=require_reason(reason),
        )
        self.metrics.decryptions.labels("retrieval").inc()
        return timeline

    async def media(
        self, operator: Operator, conversation: Conversation, *, reason: str | None
    ) -> AsyncIterator[MediaFile]:
        """The archived media files of a retrieved conversation, one at a time, each audited as its own view before
        it is decrypted (:meth:`media_file`: action ``media``, with the reason). Media whose key was shredded, or
        that were never fetched, are left out."""
        reason = require_reason(reason)
        for message in conversation.messages:
            media = message.media
            if not media or media.get("status") != "archived" or not media.get("object_key"):
                continue
            try:
                yield await self.media_file(
                    operator, event_id=message.event_id, subject_refs=conversation.subject_refs, reason=reason
                )
            except NotFound:
                continue  # its key was shredded (an erasure) since the conversation was read

    async def media_file(
        self, operator: Operator, *, event_id: str, subject_refs: Sequence[str], reason: str | None
    ) -> MediaFile:
        """One archived media file of a person whose conversation the operator opened (``subject_refs``: its
        pseudonyms), audited as its own view (action ``media``, with the reason) before it is decrypted.
        :class:`NotFound` when the file is not one of theirs, was never fetched, or its key was shredded."""
        authorize(operator, "media")
        reason = require_reason(reason)
        if not is_event_id(event_id):
            raise NotFound("no such media file")
        theirs = [ref for ref in subject_refs if is_pseudonym(ref)]
        async with self.access.pool.acquire() as conn:
            found = (await archived_media(conn, subject_refs=theirs, event_ids=[event_id])).get(event_id)
            if found is None or found.status != "archived" or not found.object_key:
                raise NotFound("no such media file")
            object_key = found.object_key
            disclosure = Disclosure(
                actor=operator.name,
                action="media",
                reason=reason,
                records={found.subject_ref: 1},
                details={"event_id": event_id},
            )
            opened = await audited_decrypt(
                conn, disclosure, lambda: self.access.reader.open_media(media_record_id(event_id), object_key)
            )
        if opened is None:
            raise NotFound("no such media file")  # its key was shredded (erasure) after the index was read
        self.metrics.decryptions.labels("media").inc()
        return MediaFile(event_id, found.mime_type or "application/octet-stream", opened.size, opened.chunks)

    async def search(self, operator: Operator, query: SearchFilter) -> list[IndexHit]:
        """Index metadata (nothing decrypted, so no reason); audited with the filters and the pseudonyms found."""
        authorize(operator, "search")
        hits = await search_index(self.access.pool, self.access.pepper, query)
        await write_audit(
            self.access.pool,
            actor=operator.name,
            action="search",
            reason=None,
            record_count=len(hits),
            details=search_audit_details(query, hits),
        )
        return hits

    async def export(
        self,
        operator: Operator,
        *,
        contact: str,
        phone_number_id: str | None = None,
        reason: str | None,
        request_ref: str | None = None,
    ) -> SubjectExport:
        """A subject-access export (audit purpose ``export``)."""
        conversation = await self._decrypt(
            operator, "export", contact=contact, phone_number_id=phone_number_id, reason=reason, purpose="export"
        )
        self.metrics.exports.inc()
        return SubjectExport(conversation.messages, request_ref, datetime.now(UTC))

    async def audit_log(self, operator: Operator, *, limit: int, where: AuditFilter | None = None) -> list[AuditEntry]:
        authorize(operator, "audit")
        return await recent_audit(self.access.pool, limit, where)

    # ---------------------------------------------------------------- erasure and holds
    async def erase(
        self, operator: Operator, *, contact: str, phone_number_id: str | None = None, request_ref: str
    ) -> ErasureOutcome:
        """Erasure by crypto-shredding (erasure.py); ``status`` is ``blocked`` when a legal hold covers the person."""
        authorize(operator, "erase")
        outcome = await erase_subject(
            self.access.pool,
            self.access.keyring,
            self.access.bucket,
            self.access.pepper,
            contact=contact,
            phone_number_id=phone_number_id,
            request_ref=request_ref,
            actor=operator.name,
        )
        self._count_erasures([outcome])
        return outcome

    def _count_erasures(self, outcomes: Sequence[ErasureOutcome]) -> None:
        for outcome in outcomes:
            # A request another process is carrying out (it holds the request's lock) is in progress, not blocked.
            label = ERASURE_OUTCOME_LABELS.get(outcome.status, outcome.status)
            self.metrics.erasures.labels(label).inc()
            self.metrics.keys_shredded.inc(len(outcome.keys_destroyed))

    async def _process_erasures(
        self,
        operator: Operator,
        blocked_by: Sequence[str] | None = None,
        statuses: Sequence[ErasureStatus] = OPEN_STATUSES,
    ) -> list[ErasureOutcome]:
        outcomes = await process_open_requests(
            self.access.pool,
            self.access.keyring,
            self.access.bucket,
            actor=operator.name,
            blocked_by=blocked_by,
            statuses=statuses,
        )
        self._count_erasures(outcomes)
        return outcomes

    async def erasures(self, operator: Operator) -> list[ErasureRequest]:
        authorize(operator, "erasures")
        return await erasure_requests(self.access.pool)

    async def refuse_erasure(self, operator: Operator, request_ref: str, *, ground: str) -> ErasureRequest:
        """Refuse an open request on a legal ground (audited; final). :class:`NotFound` for an unknown request,
        :class:`ErasureError` when it is no longer open, in progress, or the ground is not one of the law's."""
        authorize(operator, "erasure.refuse")
        return await self._decide_erasure(
            "refused", lambda conn: refuse_erasure(conn, request_ref, ground=ground, actor=operator.name)
        )

    async def extend_erasure(self, operator: Operator, request_ref: str, *, reason: str) -> ErasureRequest:
        """Extend an open request's deadline by two months, once, within the first month (audited)."""
        authorize(operator, "erasure.extend")
        return await self._decide_erasure(
            "extended", lambda conn: extend_erasure(conn, request_ref, reason=reason, actor=operator.name)
        )

    async def _decide_erasure(self, outcome: str, decide: Callable[[Any], Awaitable[ErasureRequest]]) -> ErasureRequest:
        """A DPO's decision on a request, on one connection; an unknown request is :class:`NotFound`."""
        try:
            async with self.access.pool.acquire() as conn:
                request = await decide(conn)
        except UnknownErasure as exc:
            raise NotFound(str(exc)) from None
        self.metrics.erasures.labels(outcome).inc()
        return request

    async def create_hold(
        self,
        operator: Operator,
        *,
        scope: HoldScope,
        case_ref: str,
        waba_id: str | None = None,
        phone_number_id: str | None = None,
        contact: str | None = None,
        group_id: str | None = None,
    ) -> Hold:
        """Create a legal hold (audited); :class:`HoldError` when the scope's identifiers are missing."""
        authorize(operator, "hold.create")
        async with self.access.pool.acquire() as conn:
            return await create_hold(
                conn,
                self.access.pepper,
                scope=scope,
                case_ref=case_ref,
                actor=operator.name,
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                contact=contact,
                group_id=group_id,
            )

    async def holds(self, operator: Operator, *, include_released: bool = False) -> list[Hold]:
        authorize(operator, "hold.list")
        async with self.access.pool.acquire() as conn:
            return await list_holds(conn, include_released=include_released)

    async def release_hold(self, operator: Operator, hold_id: str) -> HoldRelease:
        """Release an active hold (audited); :class:`NotFound` when there is no active hold with this id. The
        erasure requests it blocked resume at once: those no other hold covers are carried out."""
        authorize(operator, "hold.release")
        try:
            uuid.UUID(hold_id)
        except ValueError:
            raise NotFound("no active hold with this id") from None
        async with self.access.pool.acquire() as conn:
            hold = await release_hold(conn, hold_id, actor=operator.name)
        if hold is None:
            raise NotFound("no active hold with this id")
        return HoldRelease(hold, await self._process_erasures(operator, blocked_by=[hold.hold_id]))

    async def finish_erasures(self, operator: Operator) -> list[ErasureOutcome]:
        """Finish the erasures left in progress: keys destroyed, but the erasure log or the key copies not written
        or deleted yet (the store was down, or the console's identity, which may not write the bucket, carried
        them out). The retention service calls it every few seconds."""
        authorize(operator, "erase")
        return await self._process_erasures(operator, statuses=("in_progress",))

    # ---------------------------------------------------------------- maintenance
    async def run_retention(
        self, operator: Operator, *, dry_run: bool, progress: ProgressCallback | None = None
    ) -> RetentionReport:
        """A retention run (run.py), counted by outcome and audited with its report, or with its failure."""
        authorize(operator, "retention.run")
        action = "retention.dry_run" if dry_run else "retention.run"
        try:
            # A real run first carries out the open erasure requests (a crash may have interrupted one; a hold
            # that blocked one may have expired meanwhile): the deadline is the law's, not the next request's.
            erasures = [] if dry_run else await self._process_erasures(operator)
            report = await retention_run(self.access.pool, self.access.bucket, dry_run=dry_run, progress=progress)
            for outcome in erasures:
                report.erasures[outcome.status] = report.erasures.get(outcome.status, 0) + 1
        except Exception as exc:
            self.metrics.runs.labels("failure").inc()
            await self._audit_failure(operator, action, exc, {"dry_run": dry_run})
            raise
        if dry_run:
            self.metrics.runs.labels("dry_run").inc()
        else:
            self.metrics.runs.labels("success").inc()
            self.metrics.objects_deleted.inc(report.objects_deleted)
            self.metrics.objects_locked.inc(report.objects_locked)
            for name, count in report.events_by_class.items():
                self.metrics.events_expired.labels(name).inc(count)
            self.metrics.last_run_success.set(datetime.now(UTC).timestamp())
        await self._audit(operator, action, report.to_json())
        return report

    async def rebuild_index(
        self, operator: Operator, *, prefix: str | None = None, progress: ProgressCallback | None = None
    ) -> RebuildReport:
        """Rebuild the index from the bucket (archiver/rebuild.py) under ``prefix`` (default: the configured one),
        opening the live records to restore group pseudonyms, keyword tokens and number changes too."""
        authorize(operator, "rebuild-index")
        prefix = prefix or self.access.bucket.settings.prefix
        try:
            report = await rebuild_index(
                self.access.pool,
                self.access.bucket,
                self.access.policy,
                prefix=prefix,
                progress=progress,
                keys=RecordKeys(self.access.keyring, self.access.pepper),
            )
        except Exception as exc:
            await self._audit_failure(operator, "index.rebuild", exc, {"prefix": prefix})
            raise
        await self._audit(operator, "index.rebuild", {"prefix": prefix, **asdict(report)})
        return report

    async def recover(self, operator: Operator, *, progress: ProgressCallback | None = None) -> RecoveryReport:
        """After PostgreSQL was lost or restored to an earlier point (services/governance/recovery.py): re-apply
        the erasures the database does not know, restore the keys it lacks from their copies, rebuild the index
        from the bucket, and copy any key that has no copy yet. Each step's seconds are in the report, which is
        audited. Restoring keys needs the schema owner's login (the CLI opens the archive with it)."""
        authorize(operator, "recover")
        report = RecoveryReport()
        copies = KeyCopies(self.access.bucket)
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            (
                "erasures",
                lambda: reapply_erasures(
                    self.access.pool, ErasureLog(self.access.bucket), actor=operator.name, copies=copies, report=report
                ),
            ),
            ("keys", lambda: restore_keys(self.access.pool, copies, report=report)),
            ("index", lambda: self._rebuild_for(report, operator, progress)),
            ("copies", lambda: self._copy_every_key(report)),
        ]
        try:
            for name, step in steps:
                started = time.monotonic()
                await step()
                report.seconds[name] = round(time.monotonic() - started, 3)
        except Exception as exc:
            await self._audit_failure(operator, "recover", exc, report.to_json())
            raise
        await self._audit(operator, "recover", report.to_json())
        return report

    async def _rebuild_for(self, report: RecoveryReport, operator: Operator, progress: ProgressCallback | None) -> None:
        report.index = asdict(await self.rebuild_index(operator, progress=progress))

    async def _copy_every_key(self, report: RecoveryReport) -> None:
        while found := await self.access.keyring.copy_pending():
            report.keys_copied += found

    async def key_status(self, operator: Operator) -> list[KekUse]:
        """Keys per KEK id, and which KEK can be removed from the settings (``retirable``)."""
        authorize(operator, "keys.status")
        kek = self.access.keyring.kek
        return kek_uses(await self.access.keyring.keys_by_kek(), kek.kek_ids, kek.current_kek_id)

    async def rewrap_keys(
        self, operator: Operator, *, to_kek_id: str, batch_size: int = 1000, progress: ProgressCallback | None = None
    ) -> RewrapReport:
        """Rewrap every subject key under ``to_kek_id`` (keyring.rewrap_keys: batched, resumable, safe beside
        running archivers and erasures). Audited with its report (KEK ids and counts), or with how far it got when
        it failed or was interrupted. :class:`RewrapRefused` when the target, or a KEK still wrapping keys, is not
        configured; nothing is changed then."""
        authorize(operator, "keys.rewrap")
        report = RewrapReport(to_kek_id=to_kek_id)
        try:
            await rewrap_keys(self.access.keyring, report, batch_size=batch_size, progress=progress)
        except RewrapRefused:
            raise
        except (Exception, asyncio.CancelledError) as exc:
            # Ctrl-C reaches here as a cancellation: what was committed stays, and the next run continues from it.
            await self._audit_failure(operator, "keys.rewrap", exc, report.to_json())
            raise
        await self._audit(operator, "keys.rewrap", report.to_json())
        return report

    async def _audit_failure(
        self, operator: Operator, action: str, exc: BaseException, details: Mapping[str, Any]
    ) -> None:
        """Best effort: when the database is what failed, the audit row cannot be written either."""
        try:
            await self._audit(operator, action, {**details, "outcome": "failed", "error": type(exc).__name__})
        except Exception as audit_exc:
            log.warning("could not audit the failed %s: %s", action, type(audit_exc).__name__)
