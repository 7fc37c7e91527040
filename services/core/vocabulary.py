"""The archive's closed sets and the shapes of its ids and times, each defined once; everything else imports them.

Event kinds
    :data:`EventKind` is every ``kind`` an envelope may carry (the splitter in :mod:`services.core.events` and
    outbound capture in :mod:`services.ingest.outbound` make them). Its named groups partition it — every kind
    is in exactly one (``tests/unit/test_vocabulary.py``):

    - :data:`MESSAGE_KINDS`: a conversation's messages, either side — the person's (``message``), the business's
      from the WhatsApp Business app (``echo``) or through the API (``outbound``), and synced history;
    - :data:`STATUS_KINDS`: Meta's statuses of a message the business sent, or of a call;
    - :data:`CALL_KINDS`: Calling API events;
    - :data:`CHANGE_KINDS`: changes of a person's marketing choice, of the business's contacts, of a group and of
      its participants;
    - :data:`BUSINESS_RECORD_KINDS`: records of the business account itself, about no person (account and template
      updates, value-level errors, whatever Meta sends that the splitter does not know): never a subject;
    - :data:`SEND_ATTEMPT_KINDS`: what the send gateway journaled before forwarding a send (``send_attempt``,
      services/gateway/records.py) or instead of forwarding it, held for approval (``send_held``): evidence of the
      request, about the person it is addressed to; the message itself is the ``outbound`` event of its outcome.

    Narrower sets that code decides on are named here too (:data:`WEBHOOK_MESSAGE_KINDS`,
    :data:`BUSINESS_SENT_KINDS`, :data:`CONTACT_KINDS`, :data:`GROUP_KINDS`), so that a new kind is placed once.
    A container record is of an event kind or :data:`MEDIA_RECORD_KIND` (a medium sealed beside its message).

Hold scopes, case statuses and custodians, roles, directions
    :data:`HoldScope`, :data:`CaseStatus`, :data:`CustodianKind`, :data:`Role`, :data:`ReaderScope` and
    :data:`Direction`, with their members in a fixed order (``typing.get_args``) for the adapters' choices: the
    CLI's argparse ``choices``, the console's selects and the admin API's request bodies (pydantic validates the
    ``Literal``).

Ids and times
    :func:`is_event_id` and :func:`is_pseudonym` say whether a text has the shape of an event id (32 lowercase hex
    digits) or a pseudonym (64); :func:`rfc3339_millis` writes a moment as the archive writes every time it stamps
    (``received_at``, object headers, log lines): UTC, milliseconds truncated, ``Z``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal, TypeAlias, get_args

EventKind: TypeAlias = Literal[
    "message",
    "echo",
    "history",
    "outbound",
    "status",
    "call",
    "preference",
    "contact_sync",
    "group",
    "group_participant",
    "error",
    "account",
    "template",
    "unknown",
    "send_attempt",
    "send_held",
]
# In the order of the Literal: the order choices are shown in.
EVENT_KINDS: Final[tuple[EventKind, ...]] = get_args(EventKind)
EVENT_KIND_SET: Final[frozenset[EventKind]] = frozenset(EVENT_KINDS)

MESSAGE_KINDS: Final[frozenset[EventKind]] = frozenset({"message", "echo", "history", "outbound"})
STATUS_KINDS: Final[frozenset[EventKind]] = frozenset({"status"})
CALL_KINDS: Final[frozenset[EventKind]] = frozenset({"call"})
CHANGE_KINDS: Final[frozenset[EventKind]] = frozenset({"preference", "contact_sync", "group", "group_participant"})
BUSINESS_RECORD_KINDS: Final[frozenset[EventKind]] = frozenset({"account", "template", "error", "unknown"})
SEND_ATTEMPT_KINDS: Final[frozenset[EventKind]] = frozenset({"send_attempt", "send_held"})
# The partition, by name (the tests check that it is one).
KIND_GROUPS: Final[dict[str, frozenset[EventKind]]] = {
    "messages": MESSAGE_KINDS,
    "statuses": STATUS_KINDS,
    "calls": CALL_KINDS,
    "changes": CHANGE_KINDS,
    "business records": BUSINESS_RECORD_KINDS,
    "send attempts": SEND_ATTEMPT_KINDS,
}

# Messages whose payload is Meta's message object (media ids, text); an outbound record's payload is the
# business's API request instead (its message object is ``payload["request"]``).
WEBHOOK_MESSAGE_KINDS: Final[frozenset[EventKind]] = MESSAGE_KINDS - {"outbound"}
# Messages the business sent: from the WhatsApp Business app (echo) or through the API (outbound).
BUSINESS_SENT_KINDS: Final[frozenset[EventKind]] = frozenset({"echo", "outbound"})
# An exchange with the person, either way (what "last contact" counts): messages, calls, a marketing choice; not a
# delivery status, nor the business's own records.
CONTACT_KINDS: Final[frozenset[EventKind]] = MESSAGE_KINDS | CALL_KINDS | {"preference"}
# A group's own records: its updates and its participants joining and leaving.
GROUP_KINDS: Final[frozenset[EventKind]] = frozenset({"group", "group_participant"})

# The container record of a medium (sealed beside the message that refers to it); not an event kind.
MEDIA_RECORD_KIND: Final = "media"

# What a legal hold covers (services/governance/holds.py), in the order the console and the CLI offer them.
HoldScope: TypeAlias = Literal["contact", "conversation", "group", "phone_number", "waba"]
HOLD_SCOPES: Final[tuple[HoldScope, ...]] = get_args(HoldScope)
# Scopes that name a person: the hold lists the person's pseudonyms.
PERSON_HOLD_SCOPES: Final[frozenset[HoldScope]] = frozenset({"contact", "conversation"})

# A case's status (services/governance/cases.py), and what its custodians are: a business number, a person (all
# their pseudonyms), a Cloud API group. A case that places holds puts each custodian under the hold scope named here.
CaseStatus: TypeAlias = Literal["open", "closed"]
CASE_STATUSES: Final[tuple[CaseStatus, ...]] = get_args(CaseStatus)
CustodianKind: TypeAlias = Literal["phone_number", "person", "group"]
CUSTODIAN_KINDS: Final[tuple[CustodianKind, ...]] = get_args(CustodianKind)
CUSTODIAN_HOLD_SCOPES: Final[dict[CustodianKind, HoldScope]] = {
    "phone_number": "phone_number",
    "person": "contact",
    "group": "group",
}

# An operator's role, in increasing rank: a dpo may do all a reader may.
Role: TypeAlias = Literal["reader", "dpo"]
ROLES: Final[tuple[Role, ...]] = get_args(Role)
# What a reader may read (services/governance/scope.py): the custodians of the open cases assigned to them
# (``cases``), or every conversation (``all``: a support team that must read everything, docs/OPERATIONS.md).
ReaderScope: TypeAlias = Literal["cases", "all"]
READER_SCOPES: Final[tuple[ReaderScope, ...]] = get_args(ReaderScope)
# The steps of a break-glass access (a reader's read outside their cases, approved by a DPO): the metric's label.
BreakGlassStep: TypeAlias = Literal["requested", "approved", "rejected"]
BREAK_GLASS_STEPS: Final[tuple[BreakGlassStep, ...]] = get_args(BreakGlassStep)

# Which side a message came from, seen from the business: the person's (inbound) or the business's (outbound).
Direction: TypeAlias = Literal["inbound", "outbound"]
DIRECTIONS: Final[tuple[Direction, ...]] = get_args(Direction)


def direction_of_kind(kind: str) -> Direction | None:
    """The side a message of ``kind`` came from when the kind alone says it: ``outbound`` for the business's
    (:data:`BUSINESS_SENT_KINDS`), ``inbound`` for ``message``; None otherwise (a history message may be either:
    its sender says; the other kinds are not messages)."""
    if kind in BUSINESS_SENT_KINDS:
        return "outbound"
    if kind == "message":
        return "inbound"
    return None


EVENT_ID_HEX_DIGITS: Final = 32
PSEUDONYM_HEX_DIGITS: Final = 64
LOWER_HEX_DIGITS: Final = frozenset("0123456789abcdef")
# The same shapes for a schema (pydantic ``pattern``, OpenAPI).
EVENT_ID_PATTERN: Final = f"^[0-9a-f]{{{EVENT_ID_HEX_DIGITS}}}$"
PSEUDONYM_PATTERN: Final = f"^[0-9a-f]{{{PSEUDONYM_HEX_DIGITS}}}$"


def is_lower_hex(value: object, digits: int) -> bool:
    """``value`` is a str of exactly ``digits`` lowercase hex digits (never raises, whatever ``value`` is)."""
    return isinstance(value, str) and len(value) == digits and LOWER_HEX_DIGITS.issuperset(value)


def is_event_id(value: object) -> bool:
    """32 lowercase hex digits: how an event id looks (services/core/events.py)."""
    return is_lower_hex(value, EVENT_ID_HEX_DIGITS)


def is_pseudonym(value: object) -> bool:
    """64 lowercase hex digits: how a subject_ref (or any HMAC pseudonym) looks (services/core/pseudonym.py)."""
    return is_lower_hex(value, PSEUDONYM_HEX_DIGITS)


def rfc3339_millis(moment: datetime) -> str:
    """``moment`` in UTC as RFC 3339 with milliseconds (truncated, as ``isoformat`` does) and ``Z``:
    ``2026-01-02T03:04:05.678Z``. ``datetime.fromisoformat`` reads it back (to the millisecond). Raises
    ValueError for a naive datetime: a time without a zone is not a moment."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime is not a moment: give it a time zone")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
