"""The reading actions: a person's conversation or a page of it, a group's timeline, a media file, search, the
subject-access export and the audit log. Every decrypting read states its reason and is audited before anything is
decrypted (services/core/audit.py).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from services.actions.base import ActionsBase
from services.actions.operators import (
    ROLE_RANK,
    ActionName,
    Operator,
    authorize,
)
from services.core.audit import (
    AuditEntry,
    AuditFilter,
    Disclosure,
    audited_decrypt,
    recent_audit,
    require_reason,
    under_break_glass,
    write_audit,
)
from services.core.container import media_record_id
from services.core.keywords import words
from services.core.pseudonym import group_ref
from services.core.refusals import NotFound
from services.core.vocabulary import is_event_id, is_pseudonym
from services.governance.scope import EVERYTHING, OutsideScope, ReadingScope, load_reader_scope
from services.review.assembly import ConversationMessage
from services.review.conversation import (
    Conversation,
    ConversationPage,
    GroupTimeline,
    Visible,
    load_conversation,
    load_conversation_page,
    load_correspondent,
    load_group_timeline,
    load_selected,
)
from services.review.correspondent import Correspondent
from services.review.export import export_document
from services.review.queries import archived_media, record_place
from services.review.search import IndexHit, SearchFilter, search_index

log = logging.getLogger("wa_archive.retention")


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


@dataclass(frozen=True, slots=True, kw_only=True)
class SubjectExport:
    """A subject-access export (Art. 15/20): the person's messages, decrypted, and their pseudonyms (what
    :meth:`ReadingActions.media` needs to decrypt the media files of the export); ``archived``, when asked for,
    every record read as the archive sealed it (event id, plaintext), for the JSON Lines of an evidence export."""

    messages: list[ConversationMessage]
    request_ref: str | None
    generated_at: datetime
    subject_refs: tuple[str, ...] = ()
    archived: list[tuple[str, bytes]] = field(default_factory=list)
    correspondent: Correspondent = field(default_factory=Correspondent)  # who it is with, as the records say

    def conversation(self) -> Conversation:
        """The export as a retrieved conversation (what :meth:`ReadingActions.media` reads the files of)."""
        return Conversation(list(self.subject_refs), self.messages, 0, archived=self.archived)

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


class ReadingActions(ActionsBase):
    """Search and retrieval (``reader`` and above), exports and the audit log (``dpo``).

    A reader searches and reads within their scope (services/governance/scope.py): the custodians of the open
    cases assigned to them, within each case's period, unless the deployment reads ``all``. A search returns only
    what the scope covers; a conversation, a group or a media file it does not cover at all is refused
    (:class:`OutsideScope`) before anything is read, and one it covers in part shows that part. The DPO reads
    everything."""

    async def reading_scope(self, operator: Operator) -> ReadingScope:
        """What ``operator`` may read: everything for the DPO (and for every reader when the deployment says
        ``all``), else the grants of the open cases assigned to them."""
        if ROLE_RANK[operator.role] >= ROLE_RANK["dpo"] or self.access.reader_scope == "all":
            return EVERYTHING
        return await load_reader_scope(self.access.pool, operator.name, datetime.now(UTC))

    async def _scope_for(
        self, operator: Operator, *, subject_refs: Sequence[str] = (), group_ref: str | None = None
    ) -> tuple[Visible | None, AbstractContextManager[None]]:
        """The predicate a read filters its records with (None: everything), and the context it runs in: under
        :func:`under_break_glass` when an approved break-glass access opens this person or group to the reader, so
        that every audit row of the read is flagged with it."""
        scope = await self.reading_scope(operator)
        return scope.visible(), under_break_glass(scope.break_glass_for(subject_refs=subject_refs, group_ref=group_ref))

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
        keep_archived: bool = False,
    ) -> Conversation:
        """A person's conversation, decrypted; audited (one row per pseudonym) before anything is decrypted."""
        authorize(operator, action)
        visible, flagged = await self._scope_for(operator, subject_refs=[subject_ref] if subject_ref else [])
        with flagged:
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
                keep_archived=keep_archived,
                visible=visible,
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
        visible, flagged = await self._scope_for(operator, subject_refs=[subject_ref])
        with flagged:
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
                visible=visible,
            )
        self.metrics.decryptions.labels("retrieval").inc()
        return found

    async def correspondent(self, operator: Operator, *, subject_ref: str, reason: str | None) -> Correspondent:
        """Who a person's conversation is with (retrieval, audited): only the records that name them are decrypted
        (services/review/conversation.py load_correspondent). For the label of a conversation the operator already
        opened with ``reason``."""
        authorize(operator, "messages")
        visible, flagged = await self._scope_for(operator, subject_refs=[subject_ref])
        with flagged:
            found = await load_correspondent(
                self.access.pool,
                self.access.reader,
                subject_ref=subject_ref,
                actor=operator.name,
                reason=reason,
                visible=visible,
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
        # Without a group id there is no pseudonym: load_group_timeline refuses it (GroupRequired) before reading.
        group = group_ref(self.access.pepper, group_id) if group_id else None
        visible, flagged = await self._scope_for(operator, group_ref=group)
        with flagged:
            timeline = await load_group_timeline(
                self.access.pool,
                self.access.reader,
                self.access.pepper,
                group_id=group_id,
                phone_number_id=phone_number_id,
                actor=operator.name,
                reason=require_reason(reason),
                visible=visible,
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
        :class:`NotFound` when the file is not one of theirs, was never fetched, or its key was shredded;
        :class:`OutsideScope` when its message is outside the reader's scope."""
        authorize(operator, "media")
        reason = require_reason(reason)
        if not is_event_id(event_id):
            raise NotFound("no such media file")
        theirs = [ref for ref in subject_refs if is_pseudonym(ref)]
        visible, flagged = await self._scope_for(operator, subject_refs=theirs)
        with flagged:
            return await self._media_file(operator, event_id, theirs, reason, visible)

    async def _media_file(
        self, operator: Operator, event_id: str, theirs: list[str], reason: str, visible: Visible | None
    ) -> MediaFile:
        async with self.access.pool.acquire() as conn:
            found = (await archived_media(conn, subject_refs=theirs, event_ids=[event_id])).get(event_id)
            if found is None or found.status != "archived" or not found.object_key:
                raise NotFound("no such media file")
            if visible is not None and not ((place := await record_place(conn, event_id)) and visible(place)):
                raise OutsideScope("this media file is outside the cases assigned to you: ask for break-glass access")
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
        """Index metadata (nothing decrypted, so no reason), within the operator's scope (:meth:`reading_scope`:
        what it leaves out is neither returned nor counted); audited with the filters, the pseudonyms found and,
        for a reader, the cases the scope came from."""
        authorize(operator, "search")
        scope = await self.reading_scope(operator)
        hits = await search_index(self.access.pool, self.access.pepper, query, scope)
        details = search_audit_details(query, hits)
        if not scope.everything:
            details["scope"] = scope.sources
        await write_audit(
            self.access.pool,
            actor=operator.name,
            action="search",
            reason=None,
            record_count=len(hits),
            details=details,
        )
        return hits

    async def export(
        self,
        operator: Operator,
        *,
        contact: str | None = None,
        phone_number_id: str | None = None,
        reason: str | None,
        request_ref: str | None = None,
        keep_archived: bool = False,
        subject_ref: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> SubjectExport:
        """A person's messages for an export (audit purpose ``export``), named by contact id or by pseudonym
        (``subject_ref``, as an export job names them), between ``since`` and ``until`` when given;
        ``keep_archived``: with the records as archived. :class:`PersonRequired` unless exactly one of ``contact``
        and ``subject_ref``."""
        conversation = await self._decrypt(
            operator,
            "export",
            contact=contact,
            phone_number_id=phone_number_id,
            reason=reason,
            purpose="export",
            keep_archived=keep_archived,
            since=since,
            until=until,
            subject_ref=subject_ref,
        )
        self.metrics.exports.inc()
        return SubjectExport(
            messages=conversation.messages,
            request_ref=request_ref,
            generated_at=datetime.now(UTC),
            subject_refs=tuple(conversation.subject_refs),
            archived=conversation.archived,
            correspondent=conversation.correspondent,
        )

    async def export_selected(
        self,
        operator: Operator,
        *,
        event_ids: Sequence[str],
        reason: str | None,
        request_ref: str | None = None,
        keep_archived: bool = False,
        details: dict[str, Any] | None = None,
    ) -> SubjectExport:
        """The records a search showed (``event_ids``), with what changes them, for an export (audit purpose
        ``export``, one row per pseudonym, before decrypting; ``details`` in each): only those within the
        operator's scope are read (:meth:`reading_scope`, as it stands now), :class:`OutsideScope` when none is.
        The export's ``subject_refs`` are the pseudonyms read."""
        authorize(operator, "export.search")
        scope = await self.reading_scope(operator)
        # The audit rows are written before it is known whose records a search's ids are: every break-glass access
        # the reader holds flags them (a search within the scope may have found records through any of them).
        with under_break_glass(sorted(grant.source for grant in scope.grants if grant.break_glass)):
            conversation = await load_selected(
                self.access.pool,
                self.access.reader,
                event_ids=event_ids,
                actor=operator.name,
                reason=require_reason(reason),
                keep_archived=keep_archived,
                visible=scope.visible(),
                details=details,
            )
        self.metrics.decryptions.labels("export").inc()
        self.metrics.exports.inc()
        return SubjectExport(
            messages=conversation.messages,
            request_ref=request_ref,
            generated_at=datetime.now(UTC),
            subject_refs=tuple(conversation.subject_refs),
            archived=conversation.archived,
            correspondent=conversation.correspondent,
        )

    async def audit_log(self, operator: Operator, *, limit: int, where: AuditFilter | None = None) -> list[AuditEntry]:
        authorize(operator, "audit")
        return await recent_audit(self.access.pool, limit, where)
