"""The conversation timeline as the viewer's phone shows it: pure, from decrypted messages to what a template draws.

:func:`bubbles` turns :class:`~services.review.assembly.ConversationMessage` into :class:`Bubble`: direction,
time, the current content (after the last edit) and its history, the deletion ("deleted for everyone by the
customer at 14:02, 3 minutes, 20 seconds after it was sent": the template humanises
:attr:`Bubble.seconds_to_deletion`), delivery ticks from statuses, the quoted message of a reply, the reactions
attached to their message, locations, contact cards, interactive replies, orders, templates, calls and media. A
record that could not be read is a bubble of its own (content type ``unreadable``: why, its kind and type, its event
id), in its place among the others. Nothing here escapes text: the templates do, all of it (Jinja2
autoescape); the text is valid Unicode (services/core/plaintext.py shows lone surrogates as U+FFFD).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from services.review.assembly import ConversationMessage
from services.review.display import MEDIA_TYPES, Content, Display, Revision, display, message_content

TICKS = {"sent": "✓", "delivered": "✓✓", "read": "✓✓", "played": "✓✓", "failed": "!", "deleted": "✓"}


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
    send_outcome: str | None = None  # a send through the gateway: sent | refused | unknown | not_sent | pending

    @property
    def edited(self) -> bool:
        return len(self.history) > 1

    @property
    def ticks(self) -> str:
        return TICKS.get(self.status or "", "")

    @property
    def seconds_to_deletion(self) -> int | None:
        """How long after it was sent the message was deleted (shown humanised: ``fmt.duration``); None when
        either time is unknown. A deletion timed before its message (clocks differ) is 0."""
        if self.deleted_at is None or self.sent_at is None:
            return None
        return max(0, self.deleted_at - self.sent_at)


def _media(message: ConversationMessage, content: Content) -> Media | None:
    if content.type not in MEDIA_TYPES:
        return None
    found = message.media or {}
    mime = str(found.get("mime_type") or "application/octet-stream")
    extension = mime.rsplit("/", maxsplit=1)[-1].split(";", maxsplit=1)[0]
    return Media(
        event_id=message.event_id,
        kind=content.type,
        mime_type=mime,
        status=str(found.get("status") or "pending"),
        failure=found.get("failure"),
        filename=content.label or f"{message.event_id[:12]}.{extension}",
    )


def bubbles(
    messages: list[ConversationMessage],
    matched: frozenset[str] = frozenset(),
    quoted: Iterable[ConversationMessage] = (),
) -> list[Bubble]:
    """The timeline of (a page of) a conversation, oldest first, drawn from what each message shows
    (:func:`services.review.display.display`); reactions are attached to the message they react to when it is
    there; ``quoted`` are messages off the page that its replies quote (for their excerpt)."""
    by_message_id = {m.message_id: m for m in [*quoted, *messages] if m.message_id}
    on_page = {m.message_id for m in messages if m.message_id}  # a reaction to a message off the page stands alone
    result: list[Bubble] = []
    index: dict[str, Bubble] = {}
    reactions: list[tuple[str, str]] = []
    for message in messages:
        shown = display(message)
        if shown.content.type == "unreadable":
            result.append(_bubble(shown))
            continue
        if shown.reacts_to is not None and shown.reacts_to in on_page:
            reactions.append((shown.reacts_to, shown.content.text))
            continue
        bubble = _bubble(shown)
        bubble.media = _media(message, shown.original)
        bubble.matched = message.event_id in matched
        if shown.quotes is not None:
            original = by_message_id.get(shown.quotes)
            if original is not None and original is not message:
                bubble.reply_to = original.event_id if shown.quotes in on_page else None  # a link within the page
                excerpt = message_content(original)
                bubble.reply_excerpt = (excerpt.text or excerpt.label)[:120]
            else:
                bubble.reply_missing = True
        result.append(bubble)
        index[message.event_id] = bubble
    for target, emoji in reactions:
        owner = index.get(by_message_id[target].event_id)
        if owner is not None and emoji:
            owner.reactions.append(emoji)
    return result


def _bubble(shown: Display) -> Bubble:
    return Bubble(
        event_id=shown.event_id,
        direction=shown.direction,
        kind=shown.kind,
        sent_at=shown.sent_at,
        content=shown.content,
        history=list(shown.history),
        deleted_by=shown.deletion.by if shown.deletion else None,
        deleted_at=shown.deletion.at if shown.deletion else None,
        status=shown.status,
        in_group=shown.in_group,
        send_outcome=shown.send_outcome,
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
