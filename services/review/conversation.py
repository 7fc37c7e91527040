"""Retrieval: a person's conversation with its original content, statuses, edits and deletions.

:func:`load_conversation` is what the crisis user came for: "message X: content …; edited at …; deleted by the
sender at …". It refuses without a reason, writes the audit row *before* anything is decrypted, and returns the
messages in time order. Records whose key was shredded (erasure) are left out and counted.

:func:`load_group_timeline` is a Cloud API group's history: the messages of every participant, the participants
joining and leaving, and the group's own updates, found by the group's pseudonym (``group_ref``) and audited per
person before anything is decrypted. Each record is still sealed under its own person's key, so an erased
participant's records are gone from it (or, while the erasure is under way, counted as shredded) and the others'
stay readable.

:func:`assemble` is the pure part: envelopes in, :class:`ConversationMessage` out.

Every opened record is decoded by :func:`services.core.plaintext.read_envelope`: whatever JSON the archive accepted
reads (lone surrogates show as U+FFFD), and a record that still cannot be read takes its place in the timeline as a
message marked ``unreadable`` (with the reason, and the time, kind and type the index holds), never hiding the
records around it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from services.core.audit import require_reason, write_audit
from services.core.identity import expand_subject_refs, is_pseudonym, resolve_subject_refs
from services.core.index import binary_keys
from services.core.keywords import keyword_key, query_tokens, searchable_text, words
from services.core.plaintext import UndecodableRecord, read_envelope
from services.core.pseudonym import group_ref, message_ref
from services.core.reader import ArchiveReader, RecordLocation
from services.core.refusals import InvalidRequest, PersonRequired

MESSAGE_KINDS = frozenset({"message", "echo", "history", "outbound"})
GROUP_KINDS = frozenset({"group", "group_participant"})
STATUS_ORDER = {"sent": 1, "delivered": 2, "read": 3, "played": 4, "failed": 5, "deleted": 6}


@dataclass
class Change:
    """An edit or a deletion of a message, as archived when it arrived."""

    event_id: str
    kind: str  # edit | revoke | deleted-status
    by: str  # customer | business
    at: int | None
    payload: Any


@dataclass
class ConversationMessage:
    """One item of a timeline: a message with its statuses, edits and deletion, a change whose message is not
    archived, or a record that could not be read (``unreadable``: why, in fixed words; its ``payload`` is None and
    its time, kind and type are the index's)."""

    event_id: str
    message_id: str | None
    kind: str
    type: str | None
    direction: str  # inbound | outbound
    timestamp: int | None
    received_at: str
    payload: Any
    statuses: list[tuple[str, int | None]] = field(default_factory=list)
    edits: list[Change] = field(default_factory=list)
    deletion: Change | None = None
    media: dict[str, Any] | None = None
    unreadable: str | None = None

    @property
    def latest_status(self) -> str | None:
        if not self.statuses:
            return None
        return max(self.statuses, key=lambda s: (STATUS_ORDER.get(s[0], 0), s[1] or 0))[0]

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "message_id": self.message_id,
            "kind": self.kind,
            "type": self.type,
            "direction": self.direction,
            "timestamp": self.timestamp,
            "received_at": self.received_at,
            "latest_status": self.latest_status,
            "statuses": [{"status": s, "timestamp": t} for s, t in self.statuses],
            "edits": [
                {"event_id": e.event_id, "by": e.by, "timestamp": e.at, "payload": e.payload} for e in self.edits
            ],
            "deleted": None
            if self.deletion is None
            else {
                "event_id": self.deletion.event_id,
                "by": self.deletion.by,
                "timestamp": self.deletion.at,
                "how": self.deletion.kind,
            },
            "media": self.media,
            "payload": self.payload,
            "unreadable": self.unreadable,
        }


def _direction(envelope: dict[str, Any]) -> str:
    kind = envelope.get("kind")
    if kind in ("echo", "outbound"):
        return "outbound"
    if kind == "history":
        subject = envelope.get("subject") or {}
        payload = envelope.get("payload")
        sender = payload.get("from") if isinstance(payload, dict) else None
        return "inbound" if sender and sender in (subject.get("wa_id"), subject.get("user_id")) else "outbound"
    return "inbound"


def _change_kind(envelope: dict[str, Any]) -> str | None:
    if envelope.get("kind") == "status":
        return "deleted-status" if envelope.get("type") == "deleted" else None
    if envelope.get("kind") in MESSAGE_KINDS and envelope.get("type") in ("edit", "revoke"):
        return str(envelope["type"])
    return None


def assemble(
    envelopes: Iterable[dict[str, Any]],
    media: dict[str, dict[str, Any]] | None = None,
    unreadable: Iterable[ConversationMessage] = (),
) -> list[ConversationMessage]:
    """Group a person's events into messages with their statuses, edits and deletion (pure); the ``unreadable``
    records (:func:`unreadable_record`) take their place in time among them, each on its own."""
    ordered = sorted(envelopes, key=lambda e: (e.get("timestamp") or 0, e.get("received_at") or ""))
    messages: dict[str, ConversationMessage] = {}
    result: list[ConversationMessage] = []
    pending: list[dict[str, Any]] = []
    for envelope in ordered:
        if envelope.get("kind") == "status" or _change_kind(envelope):
            pending.append(envelope)
            continue
        message = ConversationMessage(
            event_id=envelope["event_id"],
            message_id=envelope.get("message_id"),
            kind=envelope["kind"],
            type=envelope.get("type"),
            direction=_direction(envelope),
            timestamp=envelope.get("timestamp"),
            received_at=envelope.get("received_at", ""),
            payload=envelope.get("payload"),
            media=(media or {}).get(envelope["event_id"]),
        )
        result.append(message)
        if message.message_id and message.message_id not in messages:
            messages[message.message_id] = message
    for envelope in pending:
        change = _change_kind(envelope)
        target_id = envelope.get("original_message_id") or envelope.get("message_id")
        target = messages.get(target_id) if target_id else None
        if envelope.get("kind") == "status" and change is None:
            if target is not None:
                target.statuses.append((str(envelope.get("type")), envelope.get("timestamp")))
            continue
        by = "business" if envelope.get("kind") in ("echo", "outbound", "status") else "customer"
        record = Change(envelope["event_id"], change or "", by, envelope.get("timestamp"), envelope.get("payload"))
        if target is None:
            # The original was not archived (it predates the archive): keep the change visible on its own.
            orphan = ConversationMessage(
                event_id=envelope["event_id"],
                message_id=target_id,
                kind=envelope["kind"],
                type=envelope.get("type"),
                direction=_direction(envelope),
                timestamp=envelope.get("timestamp"),
                received_at=envelope.get("received_at", ""),
                payload=envelope.get("payload"),
            )
            result.append(orphan)
            continue
        if change == "edit":
            target.edits.append(record)
        elif target.deletion is None:
            target.deletion = record
    result.extend(unreadable)
    return sorted(result, key=lambda m: (m.timestamp or 0, m.received_at))


@dataclass(frozen=True, slots=True)
class IndexedRecord:
    """Where an archived record is and what the index says of it: enough to show it when it cannot be read."""

    location: RecordLocation
    kind: str
    type: str | None
    event_time: datetime | None
    received_at: datetime

    @classmethod
    def of(cls, row: asyncpg.Record) -> IndexedRecord:
        """From an ``archived_events`` row selected with ``event_id`` (bytes or hex), ``object_key``,
        ``record_index``, ``kind``, ``type``, ``event_time`` and ``received_at``."""
        event_id = row["event_id"]
        return cls(
            RecordLocation(
                event_id.hex() if isinstance(event_id, bytes) else event_id, row["object_key"], row["record_index"]
            ),
            row["kind"],
            row["type"],
            row["event_time"],
            row["received_at"],
        )


def unreadable_record(record: IndexedRecord, reason: str) -> ConversationMessage:
    """The timeline item of a record whose plaintext could not be read: its index metadata and why, no content."""
    when = record.event_time or record.received_at
    return ConversationMessage(
        event_id=record.location.event_id,
        message_id=None,
        kind=record.kind,
        type=record.type,
        direction=_direction({"kind": record.kind}),
        timestamp=int(when.timestamp()),
        received_at=record.received_at.isoformat(),
        payload=None,
        unreadable=reason,
    )


_paused_reads = 0  # reads in progress that paused the cyclic garbage collector (one event loop: no lock)


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """Pause automatic cyclic garbage collection while a conversation is read and assembled.

    Reading 10,000 messages creates a few hundred thousand objects (decoded envelopes, record metadata, messages)
    that all stay alive until the read returns: the collector rescanned them, and the whole heap with them, over
    and over, and freed nothing (they hold no cycles; reference counting frees them). That was 0.2-0.3 s of a
    0.8 s read in bench/retrieval.py. Overlapping reads keep it paused until the last one ends; a collector
    that was already off (tests, a service that manages it) stays as it was.
    """
    global _paused_reads  # noqa: PLW0603 — a process-wide switch deserves a process-wide count
    if _paused_reads == 0 and not gc.isenabled():
        yield
        return
    _paused_reads += 1
    gc.disable()
    try:
        yield
    finally:
        _paused_reads -= 1
        if _paused_reads == 0:
            gc.enable()


@dataclass
class Conversation:
    subject_refs: list[str]
    messages: list[ConversationMessage]
    shredded_records: int


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
) -> Conversation:
    """The conversation of the person named by ``contact`` (a wa_id or user id) or by ``subject_ref`` (a
    pseudonym, as a search hit gives it), with every pseudonym linked to them."""
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
        rows = await conn.fetch(
            "SELECT event_id, object_key, record_index, kind, type, event_time, received_at,"
            " encode(subject_ref, 'hex') AS subject_ref FROM archived_events "
            "WHERE subject_ref = ANY($1::bytea[]) ORDER BY event_time, kafka_offset",
            binary_keys(refs),
        )
        media_rows = await conn.fetch(
            "SELECT encode(event_id, 'hex') AS event_id, status, object_key, mime_type, size_bytes, failure"
            " FROM archived_media WHERE subject_ref = ANY($1::bytea[])",
            binary_keys(refs),
        )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["subject_ref"]] = counts.get(row["subject_ref"], 0) + 1
        # The audit row comes first: no disclosure without a trace, even if the read then fails.
        async with conn.transaction():
            for ref, count in sorted(counts.items()):
                await write_audit(conn, actor=actor, action=purpose, reason=reason, subject_ref=ref, record_count=count)
    opened = await _open(reader, [IndexedRecord.of(r) for r in rows])
    with collector_paused():
        media = {row["event_id"]: dict(row) for row in media_rows}
        messages = assemble(opened.envelopes, media, opened.unreadable)
    if since is not None or until is not None:
        low = since.timestamp() if since else float("-inf")
        high = until.timestamp() if until else float("inf")
        messages = [m for m in messages if m.timestamp is None or low <= m.timestamp <= high]
    return Conversation(refs, messages, opened.shredded)


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
) -> GroupTimeline:
    """The timeline of the group ``group_id`` of the business number ``phone_number_id``.

    Refuses without a reason (:class:`ReasonRequired`) or without a group and a number (:class:`GroupRequired`)
    before reading anything; writes one audit row per pseudonym (purpose ``retrieval``, details ``group``: true
    and the group's pseudonym) before decrypting. Records whose key was shredded are left out and counted."""
    reason = require_reason(reason)
    if not group_id or not phone_number_id:
        raise GroupRequired("name the group by its group id and its business phone number id")
    ref = group_ref(pepper, group_id)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT event_id, encode(event_id, 'hex') AS event_hex, object_key, record_index, kind, type, event_time,"
            " received_at, encode(subject_ref, 'hex') AS subject_ref FROM archived_events"
            " WHERE group_ref = $1 AND phone_number_id = $2 ORDER BY event_time, kafka_offset",
            bytes.fromhex(ref),
            phone_number_id,
        )
        media_rows = await conn.fetch(
            "SELECT encode(event_id, 'hex') AS event_id, status, object_key, mime_type, size_bytes, failure"
            " FROM archived_media WHERE event_id = ANY($1::bytea[])",
            [row["event_id"] for row in rows],
        )
        counts: dict[str, int] = {}
        for row in rows:
            counts[row["subject_ref"]] = counts.get(row["subject_ref"], 0) + 1
        # The audit rows come first: no disclosure without a trace, even if the read then fails.
        async with conn.transaction():
            for subject, count in sorted(counts.items()):
                await write_audit(
                    conn,
                    actor=actor,
                    action="retrieval",
                    reason=reason,
                    subject_ref=subject,
                    record_count=count,
                    details={"group": True, "group_ref": ref},
                )
    opened = await _open(reader, [IndexedRecord.of(r) for r in rows])
    with collector_paused():
        messages = assemble(opened.envelopes, {row["event_id"]: dict(row) for row in media_rows}, opened.unreadable)
    # In the index's order (event time, else receipt time): a message the business reported sending (outbound,
    # which has no Meta time) takes its place among the participants' messages instead of heading the timeline.
    place = {row["event_hex"]: position for position, row in enumerate(rows)}
    messages.sort(key=lambda message: place.get(message.event_id, -1))
    return GroupTimeline(ref, sorted(counts), messages, opened.shredded)


def group_change(message: ConversationMessage) -> tuple[str, str]:
    """Who and what, for a group timeline's table: the sender of a message (its ``from``), the participant a
    ``group_participant`` record is about and what happened to them, or the business for the group's own records
    and what it sent."""
    payload = message.payload if isinstance(message.payload, dict) else {}
    if message.unreadable is not None:
        return "?", summary(message)
    if message.kind == "group_participant":
        return _participant_of(payload), _participant_change(message.type, payload)
    if message.kind == "group":
        return "business", _group_update(message.type, payload)
    if message.direction == "outbound":
        return "business", summary(message)
    sender = payload.get("from") or payload.get("from_user_id")
    return (str(sender) if sender else "?"), summary(message)


def _participant_of(payload: dict[str, Any]) -> str:
    for key in ("added_participants", "removed_participants", "failed_participants"):
        people = payload.get(key)
        if isinstance(people, list) and people and isinstance(people[0], dict):
            person = people[0]
            return str(person.get("wa_id") or person.get("user_id") or person.get("input") or "?")
    return str(payload.get("wa_id") or payload.get("user_id") or "?")


def _participant_change(kind_type: str | None, payload: dict[str, Any]) -> str:
    if "failed_participants" in payload:
        return "[not removed: the removal failed]"
    if kind_type == "group_participants_add":
        reason = payload.get("reason")
        return f"[joined{' by ' + str(reason).replace('_', ' ') if reason else ''}]"
    if kind_type == "group_participants_remove":
        return "[left]" if payload.get("initiated_by") == "participant" else "[removed]"
    if kind_type == "group_join_request_created":
        return "[asked to join]"
    if kind_type == "group_join_request_revoked":
        return "[withdrew the request to join]"
    return f"[{kind_type}]"


def _group_update(kind_type: str | None, payload: dict[str, Any]) -> str:
    if kind_type == "group_create":
        return f"[group created] {payload.get('subject') or ''}".rstrip()
    if kind_type == "group_settings_update":
        changed = []
        for key, label in (("group_subject", "subject"), ("group_description", "description")):
            setting = payload.get(key)
            if isinstance(setting, dict) and setting.get("update_successful"):
                changed.append(f"{label}: {setting.get('text', '')}")
        picture = payload.get("profile_picture")
        if isinstance(picture, dict) and picture.get("update_successful"):
            changed.append("new picture")
        return f"[settings] {'; '.join(changed)}".rstrip()
    return f"[{kind_type}]"


def summary(message: ConversationMessage) -> str:
    """A one-line rendering of a message's content for the table view."""
    if message.unreadable is not None:
        what = " ".join(part for part in (message.kind, message.type) if part)
        return f"[record {message.event_id} ({what}) could not be read: {message.unreadable}]"
    payload = message.payload if isinstance(message.payload, dict) else {}
    request = payload.get("request") if message.kind == "outbound" else None
    body = request if isinstance(request, dict) else payload
    kind = body.get("type") or message.type
    content = body.get(kind) if isinstance(kind, str) else None
    if kind == "text" and isinstance(content, dict):
        return str(content.get("body", ""))
    if isinstance(content, dict):
        for key in ("caption", "body", "title", "emoji", "filename", "name"):
            if content.get(key):
                return f"[{kind}] {content[key]}"
    return f"[{kind}]"


def edit_summary(change: Change) -> str:
    """The new content of an edit (Coexistence edits carry it under ``edit.message``)."""
    edit = change.payload.get("edit") if isinstance(change.payload, dict) else None
    message = edit.get("message") if isinstance(edit, dict) else None
    if not isinstance(message, dict):
        return "[edit]"
    kind = message.get("type")
    content = message.get(kind) if isinstance(kind, str) else None
    if isinstance(content, dict):
        for key in ("body", "caption", "title", "emoji", "filename"):
            if content.get(key):
                return str(content[key]) if kind == "text" else f"[{kind}] {content[key]}"
    return f"[{kind}]"


def utc(timestamp: int) -> str:
    """A Unix time as ``YYYY-MM-DD HH:MM:SS`` in UTC (the CLI's table view)."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S")


def message_words(message: ConversationMessage) -> set[str]:
    """The searchable words of a message, its edits' new texts included (what the keyword index holds for it)."""
    texts = searchable_text(message.kind, message.payload)
    for edit in message.edits:
        texts.extend(searchable_text("echo" if edit.by == "business" else "message", edit.payload))
    return words(" ".join(texts))


def keyword_matches(messages: Iterable[ConversationMessage], keywords: str) -> list[str]:
    """The event ids of the messages that contain every word of ``keywords``, in order: what a keyword search's
    candidates (whole objects of the person) come down to once decrypted. Empty when the query has no word."""
    wanted = words(keywords)
    if not wanted:
        return []
    return [m.event_id for m in messages if wanted <= message_words(m)]


# How many keyword candidates a conversation page decrypts at a time to find the first message with the words.
KEYWORD_CHECK_CHUNK = 200


@dataclass
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


def _is_unit(row: asyncpg.Record, message_refs: set[bytes]) -> bool:
    """Whether an index row is one item of the timeline: a message, or a change whose message is not archived."""
    kind, kind_type = row["kind"], row["type"]
    if kind in MESSAGE_KINDS and kind_type not in ("edit", "revoke"):
        return True
    is_change = (kind in MESSAGE_KINDS and kind_type in ("edit", "revoke")) or (
        kind == "status" and kind_type == "deleted"
    )
    return is_change and row["original_message_ref"] not in message_refs


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
) -> ConversationPage:
    """One page of the conversation of the person ``subject_ref`` names (and every pseudonym linked to it),
    decrypting only what the page shows: its messages, their statuses and changes, the messages its replies quote,
    and, with ``keywords``, the candidates of the keyword index (to say which messages hold the words).

    The page is the one holding ``anchor`` (an event id), else the one holding the first message with the words,
    else ``page``, else the newest. The index says where each message is, so a 10,000-message conversation costs a
    page, not the whole history. Audited like :func:`load_conversation`, before anything is decrypted.
    """
    reason = require_reason(reason)
    if not is_pseudonym(subject_ref):
        raise PersonRequired("a subject_ref is 64 lowercase hex digits")
    async with pool.acquire() as conn:
        refs = await expand_subject_refs(conn, [subject_ref])
        keys = binary_keys(refs)
        rows = await conn.fetch(
            "SELECT event_id, object_key, record_index, subject_ref, kind, type, event_time, received_at, message_ref,"
            " original_message_ref FROM archived_events WHERE subject_ref = ANY($1::bytea[])"
            " ORDER BY event_time, kafka_offset",
            keys,
        )
        candidates: set[bytes] = set()
        if keywords:
            tokens = query_tokens(keyword_key(pepper), keywords)
            if tokens:
                objects = await conn.fetch(
                    "SELECT object_key, subject_ref FROM keyword_index"
                    " WHERE subject_ref = ANY($1::bytea[]) AND tokens @> $2::bigint[]",
                    keys,
                    tokens,
                )
                holding = {(o["object_key"], o["subject_ref"]) for o in objects}
                candidates = {
                    r["event_id"]
                    for r in rows
                    if r["kind"] in MESSAGE_KINDS and (r["object_key"], r["subject_ref"]) in holding
                }
        message_refs = {
            r["message_ref"] for r in rows if r["kind"] in MESSAGE_KINDS and r["type"] not in ("edit", "revoke")
        }
        units = [r for r in rows if _is_unit(r, message_refs)]
        # Keyword candidates and their edits (an edit's new text may hold the words).
        candidate_rows = [r for r in rows if r["event_id"] in candidates]
        edits_of: dict[bytes, list[asyncpg.Record]] = {}
        for r in rows:
            if r["type"] == "edit" and r["original_message_ref"] is not None:
                edits_of.setdefault(r["original_message_ref"], []).append(r)
        media_rows = await conn.fetch(
            "SELECT encode(event_id, 'hex') AS event_id, status, object_key, mime_type, size_bytes, failure"
            " FROM archived_media WHERE subject_ref = ANY($1::bytea[])",
            keys,
        )
        media = {row["event_id"]: dict(row) for row in media_rows}

        audited: set[bytes] = set()

        async def audit_then_open(selected: list[asyncpg.Record]) -> _Opened:
            """The audit rows of the records not yet counted in this read, then the records, decrypted: no
            disclosure without a trace, even if the read then fails (the keyword check's records count too)."""
            counts: dict[str, int] = {}
            for row in selected:
                if row["event_id"] not in audited:
                    audited.add(row["event_id"])
                    counts[row["subject_ref"].hex()] = counts.get(row["subject_ref"].hex(), 0) + 1
            async with conn.transaction():
                for ref, record_count in sorted(counts.items()):
                    await write_audit(
                        conn, actor=actor, action="retrieval", reason=reason, subject_ref=ref, record_count=record_count
                    )
            return await _open(reader, [IndexedRecord.of(r) for r in selected])

        # The candidates are checked oldest first, a chunk at a time, until one holds the words: a frequent word
        # makes nearly every message a candidate, and the page to open needs only the first match.
        matched: list[str] = []
        for start in range(0, len(candidate_rows), KEYWORD_CHECK_CHUNK):
            chunk = candidate_rows[start : start + KEYWORD_CHECK_CHUNK]
            chunk += [e for r in chunk if r["message_ref"] for e in edits_of.get(r["message_ref"], [])]
            matched = keyword_matches((await audit_then_open(chunk)).messages(), keywords or "")
            if matched:
                break
        positions = {r["event_id"].hex(): i for i, r in enumerate(units)}
        if anchor is not None and anchor not in positions:
            # A status, an edit or a deletion: the page of the message it concerns.
            row = next((r for r in rows if r["event_id"].hex() == anchor), None)
            target = (row["original_message_ref"] or row["message_ref"]) if row is not None else None
            unit = next((u for u in units if target is not None and u["message_ref"] == target), None)
            anchor = unit["event_id"].hex() if unit is not None else None
        if matched and anchor not in matched:
            anchor = next((m for m in matched if m in positions), anchor)
        total = len(units)
        count = max(1, -(-total // page_size))
        if anchor is not None:
            page = positions[anchor] // page_size
        number = count - 1 if page is None else min(max(page, 0), count - 1)
        shown = units[number * page_size : (number + 1) * page_size]
        shown_refs = {r["message_ref"] for r in shown if r["message_ref"]}
        shown_ids = {r["event_id"] for r in shown}
        needed = [
            r
            for r in rows
            if r["event_id"] in shown_ids
            or (r["kind"] == "status" and r["message_ref"] in shown_refs)
            or (r["original_message_ref"] is not None and r["original_message_ref"] in shown_refs)
        ]
        opened = await audit_then_open(needed)
        messages = opened.messages(media)
        if keywords:  # the page's own matches, beyond the chunk that chose it
            matched = list(dict.fromkeys([*matched, *keyword_matches(messages, keywords)]))
        # The messages the page's replies quote, for their excerpt (often on the page already, else one more read).
        by_ref = {r["message_ref"]: r for r in units if r["message_ref"]}
        present = {m.message_id for m in messages}
        wanted = []
        for message in messages:
            context = message.payload.get("context") if isinstance(message.payload, dict) else None
            quoted_id = context.get("id") if isinstance(context, dict) else None
            if isinstance(quoted_id, str) and quoted_id and quoted_id not in present:
                quoted_row = by_ref.get(bytes.fromhex(message_ref(pepper, quoted_id)))
                if quoted_row is not None:
                    wanted.append(quoted_row)
        quoted = (await audit_then_open(wanted)).messages() if wanted else []
    return ConversationPage(
        refs,
        messages,
        quoted,
        number,
        count,
        number * page_size + 1,
        total,
        anchor,
        matched,
        opened.shredded,
    )


@dataclass
class _Opened:
    """Records opened for a view: the decoded envelopes, the records that could not be read (as timeline items),
    and how many were shredded."""

    envelopes: list[dict[str, Any]]
    unreadable: list[ConversationMessage]
    shredded: int

    def messages(self, media: dict[str, dict[str, Any]] | None = None) -> list[ConversationMessage]:
        return assemble(self.envelopes, media, self.unreadable)


async def _open(reader: ArchiveReader, records: list[IndexedRecord]) -> _Opened:
    """Open and decode ``records``; a plaintext that is not a readable envelope becomes its timeline item."""
    opened = _Opened([], [], 0)
    with collector_paused():
        plaintexts = await reader.open([record.location for record in records])
        for record in records:
            plaintext = plaintexts[record.location.event_id]
            if plaintext is None:
                opened.shredded += 1
                continue
            decoded = read_envelope(plaintext)
            if isinstance(decoded, UndecodableRecord):
                opened.unreadable.append(unreadable_record(record, decoded.reason))
            else:
                opened.envelopes.append(decoded.value)
    return opened
