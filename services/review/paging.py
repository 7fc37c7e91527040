"""Which records a page of a conversation decrypts (pure): the index says where each message is, so a page of a
10,000-message conversation opens a page, not the history.

A *unit* is one item of the timeline as the index sees it: a message, or a change (edit, deletion) whose message
is not archived. :func:`plan_page` chooses the page (the one holding an anchor, else the first keyword match, else
a page number, else the newest) and the records it needs: its units, their statuses and their changes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass

from services.core.pseudonym import message_ref
from services.core.vocabulary import MESSAGE_KINDS
from services.review.assembly import ConversationMessage
from services.review.queries import IndexedRecord

# How many keyword candidates a conversation page decrypts at a time to find the first message with the words.
KEYWORD_CHECK_CHUNK = 200


def _is_message(record: IndexedRecord) -> bool:
    return record.kind in MESSAGE_KINDS and record.type not in ("edit", "revoke")


def timeline_units(records: Sequence[IndexedRecord]) -> list[IndexedRecord]:
    """The records that are items of the timeline: messages, and changes whose message is not archived."""
    archived = {r.message_ref for r in records if _is_message(r)}
    return [r for r in records if _is_message(r) or (_is_change(r) and r.original_message_ref not in archived)]


def _is_change(record: IndexedRecord) -> bool:
    return (record.kind in MESSAGE_KINDS and record.type in ("edit", "revoke")) or (
        record.kind == "status" and record.type == "deleted"
    )


def keyword_candidates(records: Iterable[IndexedRecord], holding: Collection[tuple[str, str]]) -> list[IndexedRecord]:
    """The messages stored in an object the keyword index says may hold the words (``holding``: object key and
    pseudonym pairs), in order."""
    return [r for r in records if r.kind in MESSAGE_KINDS and (r.location.object_key, r.subject_ref) in holding]


def keyword_chunks(candidates: Sequence[IndexedRecord], records: Sequence[IndexedRecord]) -> list[list[IndexedRecord]]:
    """The candidates a chunk at a time, oldest first, each with the edits of its messages (an edit's new text may
    hold the words): a frequent word makes nearly every message a candidate, and the page to open needs only the
    first match."""
    edits_of: dict[bytes, list[IndexedRecord]] = {}
    for record in records:
        if record.type == "edit" and record.original_message_ref is not None:
            edits_of.setdefault(record.original_message_ref, []).append(record)
    chunks = []
    for start in range(0, len(candidates), KEYWORD_CHECK_CHUNK):
        chunk = list(candidates[start : start + KEYWORD_CHECK_CHUNK])
        chunk += [e for r in chunk if r.message_ref for e in edits_of.get(r.message_ref, [])]
        chunks.append(chunk)
    return chunks


@dataclass(frozen=True, slots=True, kw_only=True)
class PagePlan:
    """The page to show: its number (0-based) of ``count``, the 1-based position of its first unit among
    ``total``, the message to bring into view (``anchor``), and the records to decrypt for it (``needed``)."""

    number: int
    count: int
    first: int
    total: int
    anchor: str | None
    needed: list[IndexedRecord]


def plan_page(
    records: Sequence[IndexedRecord],
    *,
    page_size: int,
    page: int | None,
    anchor: str | None,
    matched: Sequence[str],
) -> PagePlan:
    """The page holding ``anchor`` (an event id; a status or a change anchors the page of its message), else the
    one holding the first of ``matched`` (event ids of messages with the query's words), else ``page`` (clamped),
    else the newest; with the records it needs: its units, their statuses and their changes."""
    units = timeline_units(records)
    positions = {r.event_id: i for i, r in enumerate(units)}
    if anchor is not None and anchor not in positions:
        # A status, an edit or a deletion: the page of the message it concerns.
        row = next((r for r in records if r.event_id == anchor), None)
        target = (row.original_message_ref or row.message_ref) if row is not None else None
        unit = next((u for u in units if target is not None and u.message_ref == target), None)
        anchor = unit.event_id if unit is not None else None
    if matched and anchor not in matched:
        anchor = next((m for m in matched if m in positions), anchor)
    total = len(units)
    count = max(1, -(-total // page_size))
    if anchor is not None:
        page = positions[anchor] // page_size
    number = count - 1 if page is None else min(max(page, 0), count - 1)
    shown = units[number * page_size : (number + 1) * page_size]
    shown_refs = {r.message_ref for r in shown if r.message_ref}
    shown_ids = {r.event_id for r in shown}
    needed = [
        r
        for r in records
        if r.event_id in shown_ids
        or (r.kind == "status" and r.message_ref in shown_refs)
        or (r.original_message_ref is not None and r.original_message_ref in shown_refs)
    ]
    return PagePlan(number=number, count=count, first=number * page_size + 1, total=total, anchor=anchor, needed=needed)


def quoted_records(
    messages: Iterable[ConversationMessage], records: Sequence[IndexedRecord], pepper: bytes
) -> list[IndexedRecord]:
    """The records of the messages that ``messages``' replies quote and that are not among them (for the quote's
    excerpt); a quoted message the archive does not hold is left out."""
    by_ref = {r.message_ref: r for r in timeline_units(records) if r.message_ref}
    messages = list(messages)
    present = {m.message_id for m in messages}
    wanted = []
    for message in messages:
        context = message.payload.get("context") if isinstance(message.payload, dict) else None
        quoted_id = context.get("id") if isinstance(context, dict) else None
        if isinstance(quoted_id, str) and quoted_id and quoted_id not in present:
            quoted = by_ref.get(bytes.fromhex(message_ref(pepper, quoted_id)))
            if quoted is not None:
                wanted.append(quoted)
    return wanted
