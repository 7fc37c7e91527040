"""Who a conversation is with, from the decrypted records themselves (pure): the person's profile name, number and
username, and the business number they wrote to.

The archive keeps no clear-text name anywhere but in the sealed records: a conversation's header is drawn from the
envelopes a view decrypted (and audited), never from PostgreSQL. :func:`sightings` reads what each envelope says of
the person (``contact.profile.name`` and ``username``, ``subject.wa_id`` / ``user_id``) and of the business
(``phone_number_id``; the display number an echo was sent from); :func:`correspondent` combines them: the latest
name seen wins (by Meta's time, else the receipt time), and earlier different names are kept, newest first.

Names are hostile input (anyone chooses their WhatsApp profile name): :func:`shown_text` drops control and
bidirectional formatting characters (an RTL override would make a name read as another), squashes whitespace and
bounds the length. It does not escape: the templates do (Jinja2 autoescape), and isolate the name (``<bdi>``).
:func:`group_subject` is a group's name, from its own records (created with a subject, renamed).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import phonenumbers

if TYPE_CHECKING:
    from services.review.assembly import ConversationMessage

# A name longer than this is cut (with an ellipsis): profile names are short, and a header is not the record.
NAME_MAX: Final = 80
# How many earlier names a header lists.
EARLIER_NAMES_MAX: Final = 5
# Explicit bidirectional formatting (embeddings, overrides, isolates, marks): they reorder what follows them.
_BIDI_CONTROLS: Final = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def shown_text(value: Any, limit: int = NAME_MAX) -> str | None:
    """``value`` as a header may show it: a string without control characters (C0, C1) and explicit bidirectional
    formatting, whitespace runs (line breaks included) as one space, at most ``limit`` characters (then cut, with
    "…"); None for anything that is not a string or leaves nothing. Emoji (and the zero-width joiners of their
    sequences) and right-to-left scripts are kept: only the characters that *reorder* text are dropped."""
    if not isinstance(value, str):
        return None
    kept = "".join(
        " " if char.isspace() else char
        for char in value
        if char not in _BIDI_CONTROLS and (char.isspace() or unicodedata.category(char) != "Cc")
    )
    squashed = " ".join(kept.split())
    if not squashed:
        return None
    return squashed if len(squashed) <= limit else squashed[: limit - 1].rstrip() + "…"


def readable_number(number: str | None) -> str | None:
    """A phone number in international format (``16505551234`` → ``+1 650-555-1234``) when it is one a numbering
    plan knows, else the digits after a ``+``; anything that is not digits (a ``+`` and separators allowed) is
    shown as :func:`shown_text` shows it."""
    text = shown_text(number, limit=40)
    if text is None:
        return None
    digits = "".join(char for char in text if char in "0123456789")
    if not digits or any(char not in "0123456789+ -()." for char in text):
        return text
    try:
        parsed = phonenumbers.parse("+" + digits)
    except phonenumbers.NumberParseException:
        return "+" + digits
    if not phonenumbers.is_possible_number(parsed):
        return "+" + digits
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)


@dataclass(frozen=True, slots=True, kw_only=True)
class Sighting:
    """What one decrypted envelope says of the person and the business, and when (``at``: Meta's unix time, else
    None; ``received_at``: the archive's receipt time, ISO 8601, which breaks ties)."""

    at: int | None
    received_at: str
    name: str | None = None
    username: str | None = None
    wa_id: str | None = None
    user_id: str | None = None
    phone_number_id: str | None = None
    display_number: str | None = None

    @property
    def order(self) -> tuple[int, str]:
        return (self.at if self.at is not None else -1, self.received_at)


def _text(mapping: Any, key: str) -> str | None:
    value = mapping.get(key) if isinstance(mapping, Mapping) else None
    return value if isinstance(value, str) and value else None


def sighting(envelope: Mapping[str, Any]) -> Sighting:
    """What ``envelope`` (a decoded schema-1 envelope) names: the ``contact`` entry's profile name and username,
    the subject's ids (the contact's when the subject has none), the business's ``phone_number_id``, and for an
    echo (the business writing from the WhatsApp Business app) the number it was sent from. Never raises: a field
    of the wrong type names nothing."""
    contact = envelope.get("contact")
    profile = contact.get("profile") if isinstance(contact, Mapping) else None
    subject = envelope.get("subject")
    timestamp = envelope.get("timestamp")
    received = envelope.get("received_at")
    display = None
    if envelope.get("kind") == "echo":
        sender = _text(envelope.get("payload"), "from")
        display = sender if sender is not None and sender != _text(subject, "wa_id") else None
    return Sighting(
        at=timestamp if type(timestamp) is int else None,
        received_at=received if isinstance(received, str) else "",
        name=shown_text(_text(profile, "name")),
        username=shown_text(_text(profile, "username"), limit=60),
        wa_id=_text(subject, "wa_id") or _text(contact, "wa_id"),
        user_id=_text(subject, "user_id") or _text(contact, "user_id"),
        phone_number_id=_text(envelope, "phone_number_id"),
        display_number=display,
    )


def sightings(envelopes: Iterable[Mapping[str, Any]]) -> list[Sighting]:
    return [sighting(envelope) for envelope in envelopes]


@dataclass(frozen=True, slots=True, kw_only=True)
class BusinessNumber:
    """A business number as the records name it: Meta's ``phone_number_id`` and, when a record showed it, the
    number itself (readable)."""

    phone_number_id: str
    display_number: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Correspondent:
    """Who a conversation is with, as far as the records read say: the latest profile name (``name``) and the
    earlier different ones (``earlier_names``, newest first), the phone number (readable), the username, the
    business-scoped user id, and the business numbers. Every text is already :func:`shown_text`-clean."""

    name: str | None = None
    earlier_names: tuple[str, ...] = ()
    number: str | None = None
    username: str | None = None
    user_id: str | None = None
    business_numbers: tuple[BusinessNumber, ...] = ()

    @property
    def label(self) -> str | None:
        """What names the person in a heading: the profile name, else the number, else the username; None when
        the records named them by none of these."""
        return self.name or self.number or self.username

    @property
    def known(self) -> bool:
        return bool(self.label or self.user_id or self.business_numbers)


def correspondent(seen: Iterable[Sighting]) -> Correspondent:
    """The person and business numbers of ``seen`` (in any order): for each field the latest value wins; names
    differing from the latest are kept, newest first, at most :data:`EARLIER_NAMES_MAX`."""
    ordered = sorted(seen, key=lambda s: s.order, reverse=True)
    names = list(dict.fromkeys(s.name for s in ordered if s.name))

    def latest(field: str) -> str | None:
        return next((value for s in ordered if (value := getattr(s, field))), None)

    numbers: dict[str, str | None] = {}
    for s in ordered:
        if s.phone_number_id is not None:
            numbers.setdefault(s.phone_number_id, None)
            if numbers[s.phone_number_id] is None and s.display_number is not None:
                numbers[s.phone_number_id] = readable_number(s.display_number)
    return Correspondent(
        name=names[0] if names else None,
        earlier_names=tuple(names[1 : 1 + EARLIER_NAMES_MAX]),
        number=readable_number(latest("wa_id")),
        username=latest("username"),
        user_id=shown_text(latest("user_id"), limit=100),
        business_numbers=tuple(
            BusinessNumber(phone_number_id=pid, display_number=display) for pid, display in sorted(numbers.items())
        ),
    )


def group_subject(messages: Iterable[ConversationMessage]) -> str | None:
    """A group's subject (its name) as its latest record that sets one says: a ``group_create`` (``subject``) or a
    successful ``group_settings_update`` (``group_subject.text``); :func:`shown_text`-clean; None when no record read
    names it."""
    found: list[tuple[int, str]] = []
    for message in messages:
        payload = message.payload if isinstance(message.payload, Mapping) else {}
        if message.kind != "group":
            continue
        subject: Any = None
        if message.type == "group_create":
            subject = payload.get("subject")
        elif message.type == "group_settings_update":
            setting = payload.get("group_subject")
            if isinstance(setting, Mapping) and setting.get("update_successful"):
                subject = setting.get("text")
        shown = shown_text(subject)
        if shown is not None:
            found.append((message.timestamp if message.timestamp is not None else -1, shown))
    return max(found, key=lambda item: item[0])[1] if found else None
