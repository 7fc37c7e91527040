"""The conversation timeline as the viewer's phone shows it: pure, from decrypted messages to what a template draws.

:func:`bubbles` turns :class:`~services.review.conversation.ConversationMessage` into :class:`Bubble`: direction,
time, the current content (after the last edit) and its history, the deletion ("deleted for everyone by the
customer at 14:02, 3 minutes after it was sent"), delivery ticks from statuses, the quoted message of a reply,
the reactions attached to their message, locations, contact cards, interactive replies, orders, templates, calls
and media. A record that could not be read is a bubble of its own (content type ``unreadable``: why, its kind and
type, its event id), in its place among the others. Nothing here escapes text: the templates do, all of it (Jinja2
autoescape); the text is valid Unicode (services/core/plaintext.py shows lone surrogates as U+FFFD).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from services.review.conversation import Change, ConversationMessage

TICKS = {"sent": "✓", "delivered": "✓✓", "read": "✓✓", "played": "✓✓", "failed": "!", "deleted": "✓"}


@dataclass(frozen=True, slots=True)
class Content:
    """One rendering of a message's content: ``text`` (its body or caption), ``label`` (what it is, e.g. a
    location's name), and ``lines`` (further facts: an address, an order's items), all plain strings."""

    type: str
    text: str = ""
    label: str = ""
    lines: tuple[str, ...] = ()
    values: tuple[tuple[str, str], ...] = ()  # (placeholder, value) pairs of a translatable label


@dataclass(frozen=True, slots=True, kw_only=True)
class Media:
    event_id: str
    kind: str  # image | audio | video | document | sticker
    mime_type: str
    status: str  # archived | pending | failed
    failure: str | None
    filename: str

    @property
    def archived(self) -> bool:
        return self.status == "archived"


@dataclass(frozen=True, slots=True)
class Revision:
    at: int | None
    content: Content


@dataclass(kw_only=True)
class Bubble:
    event_id: str
    direction: str  # inbound | outbound
    kind: str
    sent_at: int | None
    content: Content
    history: list[Revision] = field(default_factory=list)  # the original, then every edit (when edited)
    deleted_by: str | None = None  # customer | business
    deleted_at: int | None = None
    status: str | None = None
    reply_to: str | None = None  # the quoted message's event id, when archived
    reply_excerpt: str | None = None
    reply_missing: bool = False
    reactions: list[str] = field(default_factory=list)
    media: Media | None = None
    matched: bool = False
    in_group: bool = False  # written in a Cloud API group, not to the business alone

    @property
    def edited(self) -> bool:
        return len(self.history) > 1

    @property
    def ticks(self) -> str:
        return TICKS.get(self.status or "", "")

    @property
    def minutes_to_deletion(self) -> int | None:
        if self.deleted_at is None or self.sent_at is None:
            return None
        return max(0, round((self.deleted_at - self.sent_at) / 60))


def _message_object(kind: str, payload: Any) -> dict[str, Any]:
    """The Cloud API message object of an event: the payload, or the request an outbound event sent."""
    if not isinstance(payload, dict):
        return {}
    if kind == "outbound" and isinstance(payload.get("request"), dict):
        request: dict[str, Any] = payload["request"]
        return request
    return payload


def _s(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else str(value)


def content_of(message: dict[str, Any], fallback_type: str | None = None) -> Content:
    """What a message object says, by its type."""
    kind = _s(message.get("type") or fallback_type) or "unknown"
    body = message.get(kind)
    if kind == "text" and isinstance(body, dict):
        return Content(kind, text=_s(body.get("body")))
    if kind in ("image", "video", "audio", "document", "sticker") and isinstance(body, dict):
        return Content(kind, text=_s(body.get("caption")), label=_s(body.get("filename")))
    if kind == "location" and isinstance(body, dict):
        where = f"{body.get('latitude')}, {body.get('longitude')}"
        lines = tuple(x for x in (_s(body.get("address")), where) if x)
        return Content(kind, label=_s(body.get("name")), lines=lines)
    if kind == "contacts" and isinstance(body, list):
        cards: list[str] = []
        for card in body:
            if not isinstance(card, dict):
                continue
            name = card.get("name")
            formatted = _s(name.get("formatted_name")) if isinstance(name, dict) else ""
            phones = [_s(p.get("phone") or p.get("wa_id")) for p in card.get("phones") or [] if isinstance(p, dict)]
            cards.append(" · ".join(x for x in (formatted, *phones) if x))
        return Content(kind, lines=tuple(cards))
    if kind == "interactive" and isinstance(body, dict):
        for reply in ("button_reply", "list_reply"):
            if isinstance(body.get(reply), dict):
                picked = body[reply]
                return Content(
                    kind,
                    label=_s(picked.get("title")),
                    lines=(_s(picked.get("description")),) if picked.get("description") else (),
                )
        text = body.get("body")
        return Content(kind, text=_s(text.get("text")) if isinstance(text, dict) else "", label=_s(body.get("type")))
    if kind == "button" and isinstance(body, dict):
        return Content(kind, label=_s(body.get("text")))
    if kind == "order" and isinstance(body, dict):
        items = []
        for item in body.get("product_items") or []:
            if isinstance(item, dict):
                items.append(
                    f"{_s(item.get('quantity'))} × {_s(item.get('product_retailer_id'))}"
                    f" — {_s(item.get('item_price'))} {_s(item.get('currency'))}"
                )
        return Content(kind, text=_s(body.get("text")), lines=tuple(items))
    if kind == "template" and isinstance(body, dict):
        parameters = []
        for component in body.get("components") or []:
            if isinstance(component, dict):
                for parameter in component.get("parameters") or []:
                    if isinstance(parameter, dict) and parameter.get("text"):
                        parameters.append(_s(parameter["text"]))
        return Content(kind, label=_s(body.get("name")), lines=tuple(parameters))
    if kind == "reaction" and isinstance(body, dict):
        return Content(kind, text=_s(body.get("emoji")))
    if kind == "edit" and isinstance(body, dict) and isinstance(body.get("message"), dict):
        # An edit is drawn on its own only when its message is not archived (it predates the archive, or its id
        # was garbled): show what the message became.
        new = content_of(body["message"])
        return Content(kind, text=new.text, label=new.label, lines=new.lines, values=new.values)
    return Content(kind)


def _edit_content(change: Change) -> Content:
    edit = change.payload.get("edit") if isinstance(change.payload, dict) else None
    message = edit.get("message") if isinstance(edit, dict) else None
    return content_of(message if isinstance(message, dict) else {}, "edit")


def _media(message: ConversationMessage, content: Content) -> Media | None:
    if content.type not in ("image", "video", "audio", "document", "sticker"):
        return None
    found = message.media or {}
    mime = _s(found.get("mime_type")) or "application/octet-stream"
    extension = mime.split("/")[-1].split(";")[0]
    return Media(
        event_id=message.event_id,
        kind=content.type,
        mime_type=mime,
        status=_s(found.get("status")) or "pending",
        failure=found.get("failure"),
        filename=content.label or f"{message.event_id[:12]}.{extension}",
    )


def bubbles(
    messages: list[ConversationMessage],
    matched: frozenset[str] = frozenset(),
    quoted: Iterable[ConversationMessage] = (),
) -> list[Bubble]:
    """The timeline of (a page of) a conversation, oldest first; reactions are attached to the message they react
    to when it is there; ``quoted`` are messages off the page that its replies quote (for their excerpt)."""
    by_message_id = {m.message_id: m for m in [*quoted, *messages] if m.message_id}
    on_page = {m.message_id for m in messages if m.message_id}  # a reaction to a message off the page stands alone
    result: list[Bubble] = []
    index: dict[str, Bubble] = {}
    reactions: list[tuple[str, str]] = []
    for message in messages:
        if message.unreadable is not None:
            result.append(_unreadable(message))
            continue
        payload = _message_object(message.kind, message.payload)
        content = content_of(payload, message.type)
        if content.type == "reaction":
            target = (payload.get("reaction") or {}).get("message_id") if isinstance(payload, dict) else None
            if isinstance(target, str) and target in on_page:
                reactions.append((target, content.text))
                continue
        bubble = Bubble(
            event_id=message.event_id,
            direction=message.direction,
            kind=message.kind,
            sent_at=message.timestamp,
            content=content,
            status=message.latest_status,
            media=_media(message, content),
            matched=message.event_id in matched,
            in_group=isinstance(payload, dict)
            and bool(payload.get("group_id") or payload.get("recipient_type") == "group"),
        )
        if message.edits:
            bubble.history = [Revision(message.timestamp, content)] + [
                Revision(edit.at, _edit_content(edit)) for edit in message.edits
            ]
            bubble.content = bubble.history[-1].content
        if message.deletion is not None:
            bubble.deleted_by = message.deletion.by
            bubble.deleted_at = message.deletion.at
        context = payload.get("context") if isinstance(payload, dict) else None
        quoted_id = context.get("id") if isinstance(context, dict) else None
        if isinstance(quoted_id, str) and quoted_id:
            original = by_message_id.get(quoted_id)
            if original is not None and original is not message:
                bubble.reply_to = original.event_id if quoted_id in on_page else None  # a link within the page
                quoted_content = content_of(_message_object(original.kind, original.payload), original.type)
                bubble.reply_excerpt = (quoted_content.text or quoted_content.label)[:120]
            else:
                bubble.reply_missing = True
        result.append(bubble)
        index[message.event_id] = bubble
    for target, emoji in reactions:
        owner = index.get(by_message_id[target].event_id)
        if owner is not None and emoji:
            owner.reactions.append(emoji)
    return result


def _unreadable(message: ConversationMessage) -> Bubble:
    """A record that could not be read: why (``label``), and what the index knows of it (``lines``: its kind and
    type, its event id)."""
    what = " · ".join(part for part in (message.kind, message.type) if part)
    return Bubble(
        event_id=message.event_id,
        direction=message.direction,
        kind=message.kind,
        sent_at=message.timestamp,
        content=Content("unreadable", label=message.unreadable or "", lines=(what, message.event_id)),
    )


@dataclass(frozen=True, slots=True, kw_only=True)
class Page:
    """A page of the timeline and its place in the conversation (``first``: 1-based position of its first
    bubble; ``anchor``: the message to bring into view)."""

    bubbles: list[Bubble]
    number: int  # 0-based
    count: int
    first: int
    total: int
    anchor: str | None
