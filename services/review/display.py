"""What a message shows (pure): one answer for every view of the archive.

:func:`display` says what a :class:`~services.review.assembly.ConversationMessage` shows: its content by type
(:func:`content_of`: a text, a caption, a location, contact cards, an interactive reply, an order, a template, a
reaction, a system notice…), the content it had first and every edit (``history``), its deletion, its latest
status, the message its reply quotes, the message a reaction reacts to, and — for a record that could not be read —
why, in place of its content. The console's timeline (services/console/timeline.py) draws it as HTML, the CLI
(services/cli/render.py) and the subject export (services/review/export.py) as text, so they cannot disagree on
what a message says.

Every string shown comes from the message itself (or is its type); nothing here escapes, translates or formats a
time. It never raises on a payload of any JSON shape: a field that is missing or of another type shows as empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from services.core.vocabulary import SEND_ATTEMPT_KINDS
from services.review.assembly import Change, ConversationMessage

MEDIA_TYPES = frozenset({"image", "video", "audio", "document", "sticker"})


@dataclass(frozen=True, slots=True)
class Content:
    """One rendering of a message's content: ``type`` (the message type, ``unknown`` when it has none, or
    ``unreadable``), ``text`` (its words: a body, a caption, an emoji, a notice), ``label`` (what it names: a file,
    a place, a template, a reply's title; for ``unreadable``, why) and ``lines`` (further facts: an address, an
    order's items, contact cards), all plain strings."""

    type: str
    text: str = ""
    label: str = ""
    lines: tuple[str, ...] = ()
    values: tuple[tuple[str, str], ...] = ()  # (placeholder, value) pairs of a translatable label

    def plain(self) -> str:
        """The content on one line of plain text (the CLI's table, the subject export): a text message's body,
        else ``[type]`` and its text or label."""
        if self.type == "text" and self.text:
            return self.text
        shown = self.text or self.label
        return f"[{self.type}] {shown}" if shown else f"[{self.type}]"


@dataclass(frozen=True, slots=True)
class Revision:
    """A message's content as it was from ``at`` on (its original, or an edit)."""

    at: int | None
    content: Content


@dataclass(frozen=True, slots=True, kw_only=True)
class Display:
    """What one timeline item shows. ``content`` is what it says now (after its last edit; type ``unreadable``
    for a record that could not be read); ``history`` the original and every edit, when it was edited;
    ``deletion`` who deleted it and when; ``quotes`` the message id its reply quotes; ``reacts_to`` the message id
    a reaction is about; ``in_group`` whether it was written in a Cloud API group; ``send_outcome`` what became of
    a send through the gateway (services/review/assembly.py: ``unknown`` may have reached the customer)."""

    event_id: str
    kind: str
    type: str | None
    direction: str  # inbound | outbound
    sent_at: int | None
    content: Content
    history: tuple[Revision, ...] = ()
    deletion: Change | None = None
    status: str | None = None
    quotes: str | None = None
    reacts_to: str | None = None
    in_group: bool = False
    send_outcome: str | None = None

    @property
    def original(self) -> Content:
        """The content as first sent (``content`` when it was never edited)."""
        return self.history[0].content if self.history else self.content

    @property
    def edits(self) -> tuple[Revision, ...]:
        return self.history[1:]

    def plain(self) -> str:
        """The original content on one line of plain text; a record that could not be read says which and why."""
        if self.content.type == "unreadable":
            what = " ".join(part for part in (self.kind, self.type) if part)
            return f"[record {self.event_id} ({what}) could not be read: {self.content.label}]"
        return self.original.plain()


def message_object(kind: str, payload: Any) -> dict[str, Any]:
    """The Cloud API message object of an event: the payload, or the request an outbound event (or a send attempt
    through the gateway) sent."""
    if not isinstance(payload, dict):
        return {}
    if (kind == "outbound" or kind in SEND_ATTEMPT_KINDS) and isinstance(payload.get("request"), dict):
        request: dict[str, Any] = payload["request"]
        return request
    return payload


def _s(value: Any) -> str:
    """A field as text: a string as is, a number as its digits, and a list or object (a webhook that put one where
    text belongs) as the texts it holds, joined by commas, never as Python's repr of it. Walked without recursion:
    the archive keeps arbitrarily deep JSON."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if not isinstance(value, dict | list):
        return str(value)
    texts: list[str] = []
    pending: list[Any] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, dict | list):
            pending.extend(reversed(list(item.values()) if isinstance(item, dict) else item))
        elif item is not None and item != "":
            texts.append(item if isinstance(item, str) else str(item))
    return ", ".join(texts)


def content_of(message: Mapping[str, Any], fallback_type: str | None = None) -> Content:
    """What a Cloud API message object says, by its type (``fallback_type`` when it names none)."""
    raw = message.get("type")
    # A type that is a list or an object names no type: the fallback's, or unknown (never the texts it holds).
    named = "" if isinstance(raw, dict | list) else _s(raw)
    kind = named or _s(fallback_type) or "unknown"
    body = message.get(kind)
    if kind == "text" and isinstance(body, dict):
        return Content(kind, text=_s(body.get("body")))
    if kind in MEDIA_TYPES and isinstance(body, dict):
        return Content(kind, text=_s(body.get("caption")), label=_s(body.get("filename")))
    if kind == "location" and isinstance(body, dict):
        latitude, longitude = body.get("latitude"), body.get("longitude")
        # Both or nothing: a location without coordinates must not read "None, None".
        where = f"{latitude}, {longitude}" if latitude is not None and longitude is not None else ""
        lines = tuple(x for x in (_s(body.get("address")), where) if x)
        return Content(kind, label=_s(body.get("name")), lines=lines)
    if kind == "contacts" and isinstance(body, list):
        return Content(kind, lines=tuple(_contact_card(card) for card in body if isinstance(card, dict)))
    if kind == "interactive" and isinstance(body, dict):
        return _interactive(body)
    if kind == "button" and isinstance(body, dict):
        return Content(kind, label=_s(body.get("text")))
    if kind == "order" and isinstance(body, dict):
        items = tuple(
            f"{_s(item.get('quantity'))} × {_s(item.get('product_retailer_id'))}"
            f" — {_s(item.get('item_price'))} {_s(item.get('currency'))}"
            for item in _list(body.get("product_items"))
            if isinstance(item, dict)
        )
        return Content(kind, text=_s(body.get("text")), lines=items)
    if kind == "template" and isinstance(body, dict):
        parameters = tuple(
            _s(parameter["text"])
            for component in _list(body.get("components"))
            if isinstance(component, dict)
            for parameter in _list(component.get("parameters"))
            if isinstance(parameter, dict) and parameter.get("text")
        )
        return Content(kind, label=_s(body.get("name")), lines=parameters)
    if kind == "reaction" and isinstance(body, dict):
        return Content(kind, text=_s(body.get("emoji")))
    if kind == "system" and isinstance(body, dict):
        return Content(kind, text=_s(body.get("body")))
    if kind == "edit" and isinstance(body, dict) and isinstance(body.get("message"), dict):
        # An edit is drawn on its own only when its message is not archived (it predates the archive, or its id
        # was garbled): show what the message became.
        new = content_of(body["message"])
        return Content(kind, text=new.text, label=new.label, lines=new.lines, values=new.values)
    return Content(kind)


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _contact_card(card: Mapping[str, Any]) -> str:
    name = card.get("name")
    formatted = _s(name.get("formatted_name")) if isinstance(name, dict) else ""
    phones = [_s(p.get("phone") or p.get("wa_id")) for p in _list(card.get("phones")) if isinstance(p, dict)]
    return " · ".join(x for x in (formatted, *phones) if x)


def _interactive(body: Mapping[str, Any]) -> Content:
    for reply in ("button_reply", "list_reply"):
        picked = body.get(reply)
        if isinstance(picked, dict):
            description = (_s(picked.get("description")),) if picked.get("description") else ()
            return Content("interactive", label=_s(picked.get("title")), lines=description)
    text = body.get("body")
    return Content(
        "interactive", text=_s(text.get("text")) if isinstance(text, dict) else "", label=_s(body.get("type"))
    )


def message_content(message: ConversationMessage) -> Content:
    """What a message says as first sent (its payload, or the request of an outbound event)."""
    return content_of(message_object(message.kind, message.payload), message.type)


def edit_content(change: Change) -> Content:
    """What an edit made of its message (Coexistence edits carry it under ``edit.message``)."""
    edit = change.payload.get("edit") if isinstance(change.payload, dict) else None
    new = edit.get("message") if isinstance(edit, dict) else None
    return content_of(new if isinstance(new, dict) else {}, "edit")


def display(message: ConversationMessage) -> Display:
    """What ``message`` shows (see :class:`Display`)."""
    if message.unreadable is not None:
        what = " · ".join(part for part in (message.kind, message.type) if part)
        return Display(
            event_id=message.event_id,
            kind=message.kind,
            type=message.type,
            direction=message.direction,
            sent_at=message.timestamp,
            content=Content("unreadable", label=message.unreadable, lines=(what, message.event_id)),
        )
    payload = message_object(message.kind, message.payload)
    content = content_of(payload, message.type)
    history: tuple[Revision, ...] = ()
    if message.edits:
        history = (Revision(message.timestamp, content), *(Revision(e.at, edit_content(e)) for e in message.edits))
    context = payload.get("context")
    quoted = context.get("id") if isinstance(context, dict) else None
    reaction = payload.get("reaction") if content.type == "reaction" else None
    target = reaction.get("message_id") if isinstance(reaction, dict) else None
    return Display(
        event_id=message.event_id,
        kind=message.kind,
        type=message.type,
        direction=message.direction,
        sent_at=message.timestamp,
        content=history[-1].content if history else content,
        history=history,
        deletion=message.deletion,
        status=message.latest_status,
        quotes=quoted if isinstance(quoted, str) and quoted else None,
        reacts_to=target if isinstance(target, str) else None,
        in_group=bool(payload.get("group_id") or payload.get("recipient_type") == "group"),
        send_outcome=message.send_outcome,
    )
