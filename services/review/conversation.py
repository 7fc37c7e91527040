"""Retrieval: a person's conversation with its original content, statuses, edits and deletions, and a group's.

Each read here is the same three steps: refuse what names nothing or states no reason (before reading anything),
find the records in the index (services/review/queries.py), then decrypt them only after their audit rows are
written (:func:`services.core.audit.audited_decrypt`) and assemble them (services/review/assembly.py, pure).

:func:`load_conversation` is what the crisis user came for: "message X: content …; edited at …; deleted by the
sender at …", in time order. :func:`load_conversation_page` is one page of it, decrypting only what the page shows
(services/review/paging.py chooses it). :func:`load_group_timeline` is a Cloud API group's history: the messages
of every participant, the participants joining and leaving, and the group's own updates, found by the group's
pseudonym (``group_ref``) and audited per person. Each record is sealed under its own person's key, so records
whose key was shredded (erasure) are left out and counted, and the others stay readable.

Every opened record is decoded by :func:`services.core.plaintext.read_envelope`: whatever JSON the archive accepted
reads (lone surrogates show as U+FFFD), and a record that still cannot be read takes its place in the timeline as a
message marked ``unreadable`` (with the reason, and the time, kind and type the index holds), never hiding the
records around it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.core.audit import Disclosure, LiveConnection, audited_decrypt, require_reason
from services.core.identity import expand_subject_refs, resolve_subject_refs
from services.core.keywords import keyword_key, query_tokens
from services.core.pseudonym import group_ref
from services.core.reader import ArchiveReader
from services.core.refusals import InvalidRequest, PersonRequired
from services.core.vocabulary import EventKind, is_pseudonym
from services.governance.scope import OutsideScope
from services.review.assembly import ConversationMessage, decode_records, keyword_matches
from services.review.collector import collector_paused
from services.review.correspondent import Correspondent, Sighting, correspondent, group_subject, sightings
from services.review.paging import keyword_candidates, keyword_chunks, plan_page, quoted_records
from services.review.queries import (
    IndexedRecord,
    archived_media,
    group_records,
    keyword_objects,
    person_records,
    selected_records,
)


@dataclass
class Conversation:
    """A person's conversation as read: its pseudonyms, its messages, how many records were shredded, who it is
    with as the records read say (:mod:`services.review.correspondent`) and, when asked for, every record read (its
    event id and its plaintext exactly as the archive sealed it), in the index's order, for an export that carries
    them."""

    subject_refs: list[str]
    messages: list[ConversationMessage]
    shredded_records: int
    correspondent: Correspondent = field(default_factory=Correspondent)
    archived: list[tuple[str, bytes]] = field(default_factory=list)


@dataclass
class _Read:
    messages: list[ConversationMessage]
    shredded: int
    seen: list[Sighting]
    archived: list[tuple[str, bytes]] = field(default_factory=list)


async def _audited_read(
    conn: LiveConnection,
    reader: ArchiveReader,
    records: Sequence[IndexedRecord],
    disclosure: Disclosure,
    media: Mapping[str, dict[str, Any]] | None = None,
    *,
    keep_archived: bool = False,
) -> _Read:
    """The audit rows of ``disclosure``, then ``records`` opened, decoded and assembled (with ``media`` by event
    id), the garbage collector paused meanwhile (services/review/collector.py); with ``keep_archived``, the
    plaintexts as archived too (shredded records left out)."""

    async def decrypt() -> _Read:
        with collector_paused():
            plaintexts = await reader.open([record.location for record in records])
            opened = decode_records(records, plaintexts)
            archived = (
                [(r.event_id, p) for r in records if (p := plaintexts[r.event_id]) is not None] if keep_archived else []
            )
            # The clock decides only whether a send whose outcome is not archived is still pending (assembly.py).
            messages = opened.messages(media, now=datetime.now(UTC))
            return _Read(messages, opened.shredded, sightings(opened.envelopes), archived)

    return await audited_decrypt(conn, disclosure, decrypt)


Visible = Callable[[IndexedRecord], bool]


def within_scope(records: list[IndexedRecord], visible: Visible | None) -> list[IndexedRecord]:
    """The records the reader may see (all of them without ``visible``); :class:`OutsideScope` when none is, before
    anything is read or audited: a reader learns nothing of a person outside their cases, not even whether the
    archive holds them."""
    if visible is None:
        return records
    kept = [record for record in records if visible(record)]
    if not kept:
        raise OutsideScope("this conversation is outside the cases assigned to you: ask for break-glass access")
    return kept


def _per_person(records: Sequence[IndexedRecord]) -> dict[str, int]:
    return dict(Counter(record.subject_ref for record in records))


async def load_conversation(
    pool: asyncpg.Pool,
    reader: ArchiveReader,
    pepper: bytes,
    *,
    contact: str | None,
    phone_number_id: str | None,
    actor: str,
    reason: str | None,
    since: datetime | None = None,
    until: datetime | None = None,
    purpose: str = "retrieval",
    subject_ref: str | None = None,
    keep_archived: bool = False,
    visible: Visible | None = None,
) -> Conversation:
    """The conversation of the person named by ``contact`` (a wa_id or user id) or by ``subject_ref`` (a
    pseudonym, as a search hit gives it), with every pseudonym linked to them; between ``since`` and ``until``
    when given. ``keep_archived``: with the plaintexts of every record read, as archived
    (:attr:`Conversation.archived`, not narrowed by ``since`` and ``until``). ``visible``: only the records it
    accepts are read (the reader's scope), :class:`OutsideScope` when it accepts none. Refuses without a reason
    (:class:`ReasonRequired`) or without exactly one way of naming the person (:class:`PersonRequired`) before
    reading anything; one audit row per pseudonym (action ``purpose``)."""
    reason = require_reason(reason)
    if (contact is None) == (subject_ref is None):
        raise PersonRequired("name the person by contact id or by subject_ref, one of them")
    if subject_ref is not None and not is_pseudonym(subject_ref):
        raise PersonRequired("a subject_ref is 64 lowercase hex digits")
    async with pool.acquire() as conn:
        if contact is not None:
            refs = await resolve_subject_refs(conn, pepper, contact, phone_number_id)
        else:
            assert subject_ref is not None
            refs = await expand_subject_refs(conn, [subject_ref])
        records = within_scope(await person_records(conn, refs), visible)
        media = await archived_media(conn, subject_refs=refs)
        disclosure = Disclosure(actor=actor, action=purpose, reason=reason, records=_per_person(records))
        read = await _audited_read(
            conn,
            reader,
            records,
            disclosure,
            {e: m.to_json() for e, m in media.items()},
            keep_archived=keep_archived,
        )
    messages = read.messages
    if since is not None or until is not None:
        low = since.timestamp() if since else float("-inf")
        high = until.timestamp() if until else float("inf")
        messages = [m for m in messages if m.timestamp is None or low <= m.timestamp <= high]
    return Conversation(refs, messages, read.shredded, correspondent(read.seen), read.archived)


async def load_selected(
    pool: asyncpg.Pool,
    reader: ArchiveReader,
    *,
    event_ids: Sequence[str],
    actor: str,
    reason: str | None,
    purpose: str = "export",
    keep_archived: bool = False,
    visible: Visible | None = None,
    details: Mapping[str, Any] | None = None,
) -> Conversation:
    """The records ``event_ids`` name (a search's hits), whoever's they are, with the records that change them
    (:func:`~services.review.queries.selected_records`: a hit message shows its statuses, edits and deletion as
    in its conversation), decrypted and assembled in the index's order. ``visible``: only the records it accepts
    are read (the reader's scope), :class:`OutsideScope` when it accepts none. Refuses without a reason before
    reading anything; one audit row per pseudonym (action ``purpose``) before anything is decrypted;
    ``keep_archived``: with every record read as archived. The conversation's ``subject_refs`` are the
    pseudonyms read, sorted. ``details`` go into every audit row (references only: the export job's id)."""
    reason = require_reason(reason)
    if not event_ids:
        raise InvalidRequest("no records are selected")
    async with pool.acquire() as conn:
        records = within_scope(await selected_records(conn, event_ids), visible)
        media = await archived_media(conn, event_ids=[record.event_id for record in records])
        per_person = _per_person(records)
        disclosure = Disclosure(
            actor=actor, action=purpose, reason=reason, records=per_person, details=dict(details or {})
        )
        read = await _audited_read(
            conn,
            reader,
            records,
            disclosure,
            {e: m.to_json() for e, m in media.items()},
            keep_archived=keep_archived,
        )
    return Conversation(sorted(per_person), read.messages, read.shredded, correspondent(read.seen), read.archived)


class GroupRequired(InvalidRequest):
    """A group read names no group or no business number; nothing was read."""


@dataclass
class GroupTimeline:
    """A group's records of every participant, as one timeline: ``messages`` holds the messages (with their
    statuses, edits and deletion), the participants' changes (``group_participant``) and the group's updates
    (``group``), in time order. ``subject_refs`` are the pseudonyms whose records were read (and audited)."""

    group_ref: str
    subject_refs: list[str]
    messages: list[ConversationMessage]
    shredded_records: int

    @property
    def subject(self) -> str | None:
        """The group's name, as its latest record that sets one says (:func:`group_subject`)."""
        return group_subject(self.messages)

    def to_json(self) -> dict[str, Any]:
        return {
            "group_ref": self.group_ref,
            "messages": [m.to_json() for m in self.messages],
            "shredded_records": self.shredded_records,
        }


async def load_group_timeline(
    pool: asyncpg.Pool,
    reader: ArchiveReader,
    pepper: bytes,
    *,
    group_id: str,
    phone_number_id: str,
    actor: str,
    reason: str | None,
    visible: Visible | None = None,
) -> GroupTimeline:
    """The timeline of the group ``group_id`` of the business number ``phone_number_id``.

    Refuses without a reason (:class:`ReasonRequired`) or without a group and a number (:class:`GroupRequired`)
    before reading anything; writes one audit row per pseudonym (purpose ``retrieval``, details ``group``: true
    and the group's pseudonym) before decrypting. Records whose key was shredded are left out and counted.
    ``visible``: only the records it accepts are read, :class:`OutsideScope` when it accepts none."""
    reason = require_reason(reason)
    if not group_id or not phone_number_id:
        raise GroupRequired("name the group by its group id and its business phone number id")
    ref = group_ref(pepper, group_id)
    async with pool.acquire() as conn:
        records = within_scope(await group_records(conn, ref, phone_number_id), visible)
        media = await archived_media(conn, event_ids=[record.event_id for record in records])
        per_person = _per_person(records)
        disclosure = Disclosure(
            actor=actor,
            action="retrieval",
            reason=reason,
            records=per_person,
            details={"group": True, "group_ref": ref},
        )
        read = await _audited_read(conn, reader, records, disclosure, {e: m.to_json() for e, m in media.items()})
    # In the index's order (event time, else receipt time): a message the business reported sending (outbound,
    # which has no Meta time) takes its place among the participants' messages instead of heading the timeline.
    place = {record.event_id: position for position, record in enumerate(records)}
    messages = sorted(read.messages, key=lambda message: place.get(message.event_id, -1))
    return GroupTimeline(ref, sorted(per_person), messages, read.shredded)


async def load_records(
    pool: asyncpg.Pool,
    reader: ArchiveReader,
    records: Sequence[IndexedRecord],
    *,
    actor: str,
    reason: str | None,
    purpose: str,
    details: Mapping[str, Any] | None = None,
    keep_archived: bool = False,
) -> Conversation:
    """``records`` (chosen by the caller from the index: a case's group or one conversation of its business
    number, services/review/queries.py ``custodian_records``) decrypted and assembled into one timeline, in the
    index's order, with their media; ``keep_archived``: with their plaintexts as archived. Audited before anything
    is decrypted: one row per pseudonym (action ``purpose``, with ``details``); refuses without a reason
    (:class:`ReasonRequired`) before reading. ``subject_refs`` are the pseudonyms read, for the media's reads."""
    reason = require_reason(reason)
    per_person = _per_person(records)
    async with pool.acquire() as conn:
        media = await archived_media(conn, event_ids=[record.event_id for record in records]) if records else {}
        disclosure = Disclosure(
            actor=actor, action=purpose, reason=reason, records=per_person, details=dict(details or {})
        )
        read = await _audited_read(
            conn,
            reader,
            records,
            disclosure,
            {e: m.to_json() for e, m in media.items()},
            keep_archived=keep_archived,
        )
    # In the index's order, as the group timeline (a business's outbound message has no Meta time).
    place = {record.event_id: position for position, record in enumerate(records)}
    messages = sorted(read.messages, key=lambda message: place.get(message.event_id, -1))
    return Conversation(sorted(per_person), messages, read.shredded, correspondent(read.seen), read.archived)


@dataclass(kw_only=True)
class ConversationPage:
    """One page of a person's conversation, as the review console shows it: ``messages`` (with their statuses,
    edits and deletion), ``quoted`` (the messages the page's replies quote, for their excerpt), the page's place in
    the conversation, and the messages found to hold the query's words (``matched``, event ids: those of the page,
    and those of the candidates checked to find the first one)."""

    subject_refs: list[str]
    messages: list[ConversationMessage]
    quoted: list[ConversationMessage]
    number: int  # 0-based
    count: int
    first: int  # 1-based position of the page's first message in the conversation
    total: int
    anchor: str | None
    matched: list[str]
    shredded_records: int
    correspondent: Correspondent


def naming_records(records: Sequence[IndexedRecord], decrypted: Iterable[str]) -> list[IndexedRecord]:
    """The records a page also decrypts to name who the conversation is with (pure): the person's newest message
    (its ``contacts`` entry has their latest profile name) and the business's newest echo (it shows the number it
    was sent from), each unless ``decrypted`` (event ids) has it already. ``records`` are in the index's order."""
    done = set(decrypted)
    newest = [_newest(records, "message"), _newest(records, "echo")]
    return [record for record in newest if record is not None and record.event_id not in done]


async def load_correspondent(
    pool: asyncpg.Pool,
    reader: ArchiveReader,
    *,
    subject_ref: str,
    actor: str,
    reason: str | None,
    visible: Visible | None = None,
) -> Correspondent:
    """Who the conversation of ``subject_ref`` (and its linked pseudonyms) is with, reading only what names them:
    the person's newest message and the business's newest echo (:func:`naming_records`), audited (``retrieval``,
    with ``reason``) before they are decrypted. For a label of a conversation already opened with that reason
    (the console's search results). Refuses like :func:`load_conversation_page`."""
    reason = require_reason(reason)
    if not is_pseudonym(subject_ref):
        raise PersonRequired("a subject_ref is 64 lowercase hex digits")
    async with pool.acquire() as conn:
        records = within_scope(await person_records(conn, await expand_subject_refs(conn, [subject_ref])), visible)
        naming = naming_records(records, ())
        if not naming:
            return Correspondent()
        disclosure = Disclosure(actor=actor, action="retrieval", reason=reason, records=_per_person(naming))
        return correspondent((await _audited_read(conn, reader, naming, disclosure)).seen)


def _newest(records: Sequence[IndexedRecord], kind: EventKind) -> IndexedRecord | None:
    """The newest message of ``kind`` (an edit or a deletion names nobody new)."""
    return next((r for r in reversed(records) if r.kind == kind and r.type not in ("edit", "revoke")), None)


async def load_conversation_page(
    pool: asyncpg.Pool,
    reader: ArchiveReader,
    pepper: bytes,
    *,
    subject_ref: str,
    actor: str,
    reason: str | None,
    page_size: int,
    page: int | None = None,
    anchor: str | None = None,
    keywords: str | None = None,
    visible: Visible | None = None,
) -> ConversationPage:
    """One page of the conversation of the person ``subject_ref`` names (and every pseudonym linked to it),
    decrypting only what the page shows: its messages, their statuses and changes, the messages its replies quote,
    and, with ``keywords``, the candidates of the keyword index (to say which messages hold the words).

    The page is the one holding ``anchor`` (an event id), else the one holding the first message with the words,
    else ``page``, else the newest (:func:`services.review.paging.plan_page`). Audited like
    :func:`load_conversation`, before anything is decrypted: each record counts once, whichever step opened it.

    ``correspondent`` names the person and the business number from what was decrypted, with the person's newest
    message and the business's newest echo read with the page when it does not hold them (:func:`naming_records`;
    counted in the page's audit row, not shown): the latest profile name wins wherever the page is.

    ``visible``: the conversation is the records it accepts (the reader's scope), :class:`OutsideScope` when it
    accepts none.
    """
    reason = require_reason(reason)
    if not is_pseudonym(subject_ref):
        raise PersonRequired("a subject_ref is 64 lowercase hex digits")
    async with pool.acquire() as conn:
        refs = await expand_subject_refs(conn, [subject_ref])
        records = within_scope(await person_records(conn, refs), visible)
        candidates: list[IndexedRecord] = []
        tokens = query_tokens(keyword_key(pepper), keywords) if keywords else []
        if tokens:
            candidates = keyword_candidates(records, await keyword_objects(conn, refs, tokens))
        media = {e: m.to_json() for e, m in (await archived_media(conn, subject_refs=refs)).items()}
        audited: set[str] = set()
        seen: list[Sighting] = []

        async def read(selected: list[IndexedRecord], with_media: bool = False) -> _Read:
            """``selected`` decrypted, after the audit rows of those not yet counted in this read; what they say
            of who the conversation is with is kept in ``seen``."""
            counted = _per_person([r for r in selected if r.event_id not in audited])
            audited.update(r.event_id for r in selected)
            disclosure = Disclosure(actor=actor, action="retrieval", reason=reason, records=counted)
            found = await _audited_read(conn, reader, selected, disclosure, media if with_media else None)
            seen.extend(found.seen)
            return found

        matched: list[str] = []
        for chunk in keyword_chunks(candidates, records):
            matched = keyword_matches((await read(chunk)).messages, keywords or "")
            if matched:
                break
        plan = plan_page(records, page_size=page_size, page=page, anchor=anchor, matched=matched)
        # Read with the page (one audit row, one decryption), then left out of its timeline.
        naming = naming_records(records, [*audited, *(r.event_id for r in plan.needed)])
        shown = await read([*plan.needed, *naming], with_media=True)
        if naming:
            extra = {r.event_id for r in naming}
            shown.messages = [m for m in shown.messages if m.event_id not in extra]
        if keywords:  # the page's own matches, beyond the chunk that chose it
            matched = list(dict.fromkeys([*matched, *keyword_matches(shown.messages, keywords)]))
        # The messages the page's replies quote, for their excerpt (often on the page already, else one more read).
        wanted = quoted_records(shown.messages, records, pepper)
        quoted = (await read(wanted)).messages if wanted else []
    return ConversationPage(
        subject_refs=refs,
        messages=shown.messages,
        quoted=quoted,
        number=plan.number,
        count=plan.count,
        first=plan.first,
        total=plan.total,
        anchor=plan.anchor,
        matched=matched,
        shredded_records=shown.shredded,
        correspondent=correspondent(seen),
    )
