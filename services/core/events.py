"""The event envelope (the Kafka value, ``schema: 1``) and the pure splitter of Meta's webhook bodies.

:func:`parse_webhook` turns one POST body into one :class:`Event` per inbound message, status, value-level
error, business echo, history message, call event, marketing preference, synced contact, group participant change,
group update, and account / template / unknown update. It walks *every* entry, change and item (Meta batches up
to 1,000 updates in one POST) and drops nothing: an item it does not understand becomes an ``unknown`` event
that carries the item as it came. Each event carries Meta's object untouched (the very object the JSON decoder
produced), the subject's ``contacts`` entry, and the delivery evidence (sha256 of the raw body and its signature
header) instead of the rest of the POST, which is other people's data.

What becomes an event
    - ``messages``: one ``message`` per ``value.messages[]`` (subject: ``from`` / ``from_user_id``), one
      ``status`` per ``value.statuses[]`` (subject: ``recipient_id`` / ``recipient_user_id``), one ``error``
      per ``value.errors[]``;
    - ``smb_message_echoes``: one ``echo`` per ``value.message_echoes[]`` (subject: ``to`` / ``to_user_id``);
    - ``history``: one ``history`` per ``value.history[].threads[].messages[]`` (subject: the thread id); a
      history item without threads (sharing declined) is one ``error`` with the whole item; the follow-up media
      asset delivery (a plain ``value.messages[]``) gives ``history`` events too;
    - ``calls`` (Calling API): one ``call`` per ``value.calls[]`` (subject: the user on the call — of ``from`` /
      ``from_user_id`` and ``to`` / ``to_user_id``, the side that is not the business's
      ``metadata.display_phone_number``; when neither or both sides are that number, ``from`` for a
      ``USER_INITIATED`` call and ``to`` for a ``BUSINESS_INITIATED`` one; no subject when that says nothing),
      one ``status`` per ``value.statuses[]`` (the call's ringing / accepted / rejected, subject: the recipient),
      one ``error`` per ``value.errors[]``;
    - ``user_preferences``: one ``preference`` per ``value.user_preferences[]`` (subject: ``wa_id`` /
      ``user_id``);
    - ``smb_app_state_sync``: one ``contact_sync`` per ``value.state_sync[]`` item of ``type`` ``contact``
      (subject: ``contact.phone_number`` / ``contact.user_id``, digits as Meta sends them; none when both are
      absent); an item of another type → ``unknown``;
    - Cloud API groups (Groups API): a message or echo carrying ``group_id`` keeps its person (the sender, the
      recipient) and carries ``group_id`` too; a status of a message sent to a group (``recipient_type``
      ``group``: ``recipient_id`` is the group) is the participant's (``recipient_participant_id`` — also spelt
      ``participant_recipient_id`` on Meta's page — / ``recipient_participant_user_id``), with the group id;
    - ``group_participants_update``: one ``group_participant`` per person of ``value.groups[]``'s
      ``added_participants[]``, ``removed_participants[]`` and ``failed_participants[]`` (subject: the person's
      ``wa_id`` / ``user_id``, else the ``input`` the business gave — digits as a phone number, anything else as
      a user id); its payload is the group item with that one person in its list, so no record holds another
      participant's id. A join request (created / revoked) names its requester in the item itself (``wa_id`` /
      ``user_id``): one ``group_participant`` with the whole item. An item naming nobody → ``group``;
    - ``group_lifecycle_update``, ``group_settings_update``, ``group_status_update``: one ``group`` per
      ``value.groups[]`` item (no subject: the business's record of its group), with the group id;
    - ``account_update`` → ``account``, ``message_template*`` / ``template*`` → ``template``, any other field →
      ``unknown``, each with the whole ``value`` as payload;
    - never dropped: an item that is not an object → ``unknown``; a split field whose value yields no item →
      ``unknown`` with the whole value; keys of such a value that are not split (a future addition, a list that
      is not a list) → one ``unknown`` whose payload holds just those keys, so the items already emitted are
      not copied into a record that belongs to no subject.

    Empty strings from Meta mean absent; numeric ids become strings; ``timestamp`` is Meta's unix seconds as an
    int (they send strings). ``contact`` is the ``value.contacts`` entry whose ``wa_id`` or ``user_id`` equals
    the subject's — never guessed. ``group_id`` is set on the events of a group only, and the envelope then
    carries it as its last key; envelopes of other events are what they were before groups existed.

Event ids
    ``event_id`` is the first 128 bits (32 lowercase hex digits) of
    ``sha256("\\x1f".join(("v1", waba_id, kind, phone_number_id or "", *identity)))`` where ``identity`` is

    - message / echo: ``(message id or "", canonical_hash(item))``;
    - history: ``(thread id or "", message id or "", canonical_hash(message))``;
    - call: ``(call id or "", canonical_hash(call))`` — a call's connect and terminate stay apart;
    - preference / contact_sync: ``(canonical_hash(item),)`` — Meta gives them no id; each carries its own time;
    - group / group_participant: ``(group id or "", canonical_hash(payload))`` — the item carries its own time;
    - status: ``(status id or "", canonical_hash(status))`` — the hash covers ``status``, ``timestamp`` and
      the recipient, so the several statuses of one message stay apart;
    - error / account / template / unknown: ``(canonical_hash(payload),)`` plus ``str(entry.time)`` when the
      entry carries Meta's ``time``, so the same account update sent again on another day is kept.

    ``canonical_hash`` is the sha256 of the payload's canonical JSON (sorted keys, compact, UTF-8), so a
    redelivery of the same update gets the same id however Meta re-serialises it, and deduplicates in the
    archive. The object's hash is part of the identity even where Meta gives an id because Meta's own sample
    payloads reuse one wamid for different messages (and one status id for different statuses): an id-only
    identity would silently collapse them, and a lost message is worse than a duplicate.

    Two identical objects of the same kind in one POST (e.g. the same value-level error twice) have the same
    id: the splitter emits the first only. That is deliberate deduplication, and it loses nothing.

Failure modes
    :func:`parse_webhook` raises nothing but :class:`WebhookRejected` (status 400, a short reason free of
    personal data). :meth:`Event.from_json` raises :class:`EnvelopeError` for anything that is not a valid
    schema-1 envelope. Nothing here logs.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final, NoReturn

import orjson

from services.core.vocabulary import (
    EVENT_ID_HEX_DIGITS,
    EVENT_KIND_SET,
    EventKind,
    is_event_id,
    is_lower_hex,
)

SCHEMA_VERSION: Final = 1
WABA_OBJECT: Final = "whatsapp_business_account"

_EVENT_ID_VERSION: Final = "v1"
_ID_SEPARATOR: Final = "\x1f"
_ASCII_DIGITS: Final = frozenset("0123456789")
_SHA256_HEX_DIGITS: Final = 64
# Unix seconds as Meta sends them (strings of 10 digits today); anything longer than an int64 is not a time.
_MAX_TIMESTAMP_DIGITS: Final = 18
_MAX_TIMESTAMP: Final = 2**63 - 1
# orjson decodes an integer outside int64/uint64 as a float: every such float has at least this magnitude.
_INT64_FLOAT_BOUND: Final = 9.2e18
# Keys of a change's value that describe the change rather than being items of it.
_VALUE_CONTEXT_KEYS: Final = frozenset({"messaging_product", "metadata", "contacts"})
# Per splittable field, the keys of the value that hold lists of items.
_ITEM_KEYS: Final[dict[str, frozenset[str]]] = {
    "messages": frozenset({"messages", "statuses", "errors"}),
    "smb_message_echoes": frozenset({"message_echoes"}),
    "history": frozenset({"history", "messages"}),
    "calls": frozenset({"calls", "statuses", "errors"}),
    "user_preferences": frozenset({"user_preferences"}),
    "smb_app_state_sync": frozenset({"state_sync"}),
    **dict.fromkeys(
        ("group_lifecycle_update", "group_participants_update", "group_settings_update", "group_status_update"),
        frozenset({"groups"}),
    ),
}
# The lists of a group_participants_update item that name people, one of them per group_participant event.
_PARTICIPANT_LISTS: Final = ("added_participants", "removed_participants", "failed_participants")
# Characters of a phone number as a business may write it (the `input` of a removal) around its digits.
_PHONE_PUNCTUATION: Final = frozenset("+ -().")
_ENVELOPE_KEYS: Final = (
    "schema",
    "event_id",
    "kind",
    "field",
    "received_at",
    "waba_id",
    "phone_number_id",
    "subject",
    "message_id",
    "original_message_id",
    "timestamp",
    "type",
    "payload",
    "contact",
    "delivery",
)
_ENVELOPE_KEY_SET: Final = frozenset(_ENVELOPE_KEYS)
# Keys an envelope carries only when they apply (after the schema-1 keys): absent means none, never null.
_OPTIONAL_ENVELOPE_KEYS: Final = frozenset({"group_id"})


def _refuse_constant(name: str) -> NoReturn:
    """NaN and ±Infinity are not JSON (RFC 8259); the standard library accepts them unless told not to."""
    raise ValueError(f"{name} is not a JSON value")


def _finite_float(text: str) -> float:
    """A number beyond the double range (``1e400``) would decode to ±inf, which no envelope can carry as sent:
    orjson writes it as null, the standard library refuses it. Refused like Infinity."""
    value = float(text)
    if math.isinf(value):
        raise ValueError("number beyond the double range")
    return value


# Encoders are built once: json.dumps with options builds a new encoder on every call (the hot path).
_CANONICAL_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
_ENVELOPE_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
_ENVELOPE_ASCII_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=False)
# The standard library's JSON decoder as the archive reads: NaN, ±Infinity and numbers beyond the double range refused.
STRICT_JSON_DECODER: Final = json.JSONDecoder(parse_constant=_refuse_constant, parse_float=_finite_float)


class WebhookRejected(ValueError):
    """The body is not a WhatsApp Business Account webhook: nothing from it may be produced.

    ``status`` is the HTTP status to answer (400); ``reason`` is short, fixed text that never quotes the body,
    so it is safe to return to the caller and to log.
    """

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class EnvelopeError(ValueError):
    """A Kafka value is not a valid schema-1 event envelope (for the archiver, a dead letter).

    The message says what is wrong in fixed words; it never quotes the record's content.
    """


@dataclass(frozen=True, slots=True)
class Subject:
    """The customer an event is about (never the business): a phone-based ``wa_id``, a business-scoped
    ``user_id`` (usernames), or both. Empty strings from Meta are stored as ``None``."""

    wa_id: str | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """Evidence that the record came from Meta: the sha256 (hex) of the raw POST body and its signature header."""

    sha256: str
    signature: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """One archived unit: an item of a webhook (or an outbound report) with its envelope.

    ``payload`` and ``contact`` are Meta's objects as decoded, never modified; treat them as read-only.
    ``group_id`` is the Cloud API group the event belongs to, if any (never empty).
    """

    event_id: str
    kind: EventKind
    field: str
    received_at: str
    waba_id: str
    phone_number_id: str | None
    subject: Subject | None
    message_id: str | None
    original_message_id: str | None
    timestamp: int | None
    type: str | None
    payload: Any
    contact: Any | None
    delivery: Delivery
    group_id: str | None = None

    def key(self) -> bytes:
        """The Kafka key, ``"<phone_number_id>:<wa_id or user_id>"``: one conversation stays on one partition,
        in order. Without a subject (account updates, errors) it is ``"<phone_number_id or waba_id>:"``."""
        scope = self.phone_number_id or self.waba_id
        person = (self.subject.wa_id or self.subject.user_id or "") if self.subject is not None else ""
        # surrogatepass: a lone surrogate from a malformed \\u escape must not crash the producer.
        return f"{scope}:{person}".encode("utf-8", "surrogatepass")

    def as_dict(self) -> dict[str, Any]:
        """The envelope as a JSON-ready dict, keys in the schema-1 order (``schema`` first), ``group_id`` last and
        only on a group's events."""
        subject = self.subject
        envelope: dict[str, Any] = {
            "schema": SCHEMA_VERSION,
            "event_id": self.event_id,
            "kind": self.kind,
            "field": self.field,
            "received_at": self.received_at,
            "waba_id": self.waba_id,
            "phone_number_id": self.phone_number_id,
            "subject": None if subject is None else {"wa_id": subject.wa_id, "user_id": subject.user_id},
            "message_id": self.message_id,
            "original_message_id": self.original_message_id,
            "timestamp": self.timestamp,
            "type": self.type,
            "payload": self.payload,
            "contact": self.contact,
            "delivery": {"sha256": self.delivery.sha256, "signature": self.delivery.signature},
        }
        if self.group_id is not None:
            envelope["group_id"] = self.group_id
        return envelope

    def to_json(self) -> bytes:
        """Compact UTF-8 JSON of :meth:`as_dict` (the Kafka value); :meth:`from_json` reads it back equal.

        Raises ValueError if the payload holds NaN or ±Infinity, which :func:`parse_webhook` never lets in.
        """
        envelope = self.as_dict()
        try:
            # The hot path: orjson is several times faster and exact for what it accepts (decoding: loads_exact).
            # orjson returns its output in the buffer it grew, about ten times the length (16 KiB for a 1 KiB
            # envelope), never shrunk: the archiver holds two writes of 2,000 envelopes, 64 MB of heap for 4 MB of
            # JSON (the 200,000-event backlog of bench/archiver.py peaked ≈25 MB higher). The copy costs ≈0.4 µs.
            return bytes(memoryview(orjson.dumps(envelope)))
        except TypeError:
            pass  # an integer beyond 64 bits, or a lone surrogate: the standard library handles both exactly
        try:
            return _ENVELOPE_ENCODER.encode(envelope).encode()
        except UnicodeEncodeError:
            # A lone surrogate (a malformed \\u escape) cannot be UTF-8: escape everything; still valid JSON
            # that decodes to the same strings.
            return _ENVELOPE_ASCII_ENCODER.encode(envelope).encode("ascii")

    @classmethod
    def from_json(cls, raw: bytes) -> Event:
        """Decode a schema-1 envelope strictly.

        Raises EnvelopeError when the bytes are not JSON, not an object, carry another schema, miss a key or
        carry an unexpected one, or when a key holds the wrong type (see :meth:`as_dict` for the shape). An envelope
        without ``group_id`` (every one written before groups, and every event outside a group) reads as None.
        """
        try:
            data = loads_exact(raw, lambda text: STRICT_JSON_DECODER.decode(text.decode()))
        except RecursionError:
            raise EnvelopeError("envelope is nested too deeply") from None
        except ValueError:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, over-long integers
            raise EnvelopeError("not JSON") from None
        if not isinstance(data, dict):
            raise EnvelopeError("not a JSON object")
        schema = data.get("schema")
        if type(schema) is not int or schema != SCHEMA_VERSION:
            raise EnvelopeError("'schema' must be 1")
        for name in _ENVELOPE_KEYS:
            if name not in data:
                raise EnvelopeError(f"{name!r} missing")
        # Every schema-1 key is there: whatever else is there must be an optional key.
        if len(data) != len(_ENVELOPE_KEYS) and not _OPTIONAL_ENVELOPE_KEYS.issuperset(data.keys() - _ENVELOPE_KEY_SET):
            raise EnvelopeError("unexpected keys beside the schema-1 envelope keys")
        group_id = data.get("group_id")
        if "group_id" in data and (not isinstance(group_id, str) or not group_id):
            raise EnvelopeError("'group_id' must be a non-empty string when present")
        event_id = data["event_id"]
        if not is_event_id(event_id):
            raise EnvelopeError("'event_id' must be 32 lowercase hex digits")
        if not isinstance(data["kind"], str) or data["kind"] not in EVENT_KIND_SET:
            raise EnvelopeError("'kind' is not a known event kind")
        for name in ("field", "received_at", "waba_id"):
            if not isinstance(data[name], str):
                raise EnvelopeError(f"{name!r} must be a string")
        for name in ("phone_number_id", "message_id", "original_message_id", "type"):
            if data[name] is not None and not isinstance(data[name], str):
                raise EnvelopeError(f"{name!r} must be a string or null")
        timestamp = data["timestamp"]
        if timestamp is not None and type(timestamp) is not int:
            raise EnvelopeError("'timestamp' must be an integer or null")
        if timestamp is not None and not 0 <= timestamp <= _MAX_TIMESTAMP:
            # The splitter never makes one; in an object header it would make the whole batch unreadable.
            raise EnvelopeError("'timestamp' must be unix seconds between 0 and 2**63 - 1")
        return cls(
            event_id=event_id,
            kind=data["kind"],
            field=data["field"],
            received_at=data["received_at"],
            waba_id=data["waba_id"],
            phone_number_id=data["phone_number_id"],
            subject=_subject_from_envelope(data["subject"]),
            message_id=data["message_id"],
            original_message_id=data["original_message_id"],
            timestamp=timestamp,
            type=data["type"],
            payload=data["payload"],
            contact=data["contact"],
            delivery=_delivery_from_envelope(data["delivery"]),
            group_id=group_id,
        )


def loads_exact(raw: bytes, slow: Callable[[bytes], Any]) -> Any:
    """Decode JSON with orjson where it gives exactly what ``slow`` (a standard-library decoder) would, else with
    ``slow``, whose errors propagate. orjson is several times faster; it refuses lone surrogates, NaN,
    ±Infinity, text that is not UTF-8 and nesting past 1,024 (``slow`` then decides), and it turns integers
    beyond 64 bits into floats: a float that large in its result (written as one, maybe: that only costs the slow
    path) sends the body to ``slow`` too."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return slow(raw)
    return slow(raw) if _has_huge_float(data) else data


def _has_huge_float(value: Any) -> bool:
    """Is there a float of magnitude >= 9.2e18 anywhere in the decoded value? (Iterative: orjson allows 1,024
    levels of nesting, more than Python's recursion limit.)"""
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is dict:
            stack.extend(item.values())
        elif kind is list:
            stack.extend(item)
        elif kind is float and abs(item) >= _INT64_FLOAT_BOUND:
            return True
    return False


def _subject_from_envelope(value: Any) -> Subject | None:
    if value is None:
        return None
    if not isinstance(value, dict) or value.keys() != {"wa_id", "user_id"}:
        raise EnvelopeError("'subject' must be null or an object with exactly 'wa_id' and 'user_id'")
    wa_id, user_id = value["wa_id"], value["user_id"]
    if (wa_id is not None and not isinstance(wa_id, str)) or (user_id is not None and not isinstance(user_id, str)):
        raise EnvelopeError("'subject' ids must be strings or null")
    return Subject(wa_id=wa_id, user_id=user_id)


def _delivery_from_envelope(value: Any) -> Delivery:
    if not isinstance(value, dict) or value.keys() != {"sha256", "signature"}:
        raise EnvelopeError("'delivery' must be an object with exactly 'sha256' and 'signature'")
    if not is_lower_hex(value["sha256"], _SHA256_HEX_DIGITS):
        raise EnvelopeError("'delivery.sha256' must be 64 lowercase hex digits")
    signature = value["signature"]
    if signature is not None and not isinstance(signature, str):
        raise EnvelopeError("'delivery.signature' must be a string or null")
    return Delivery(sha256=value["sha256"], signature=signature)


def canonical_hash(value: Any) -> str:
    """sha256 (hex) of the canonical JSON of a decoded JSON value: sorted keys, compact, UTF-8.

    The same for every wire form of the value: whitespace, key order, ``\\uXXXX`` escapes or raw UTF-8, ``\\/``
    or ``/``. Raises RecursionError for values nested deeper than the interpreter's recursion limit allows,
    TypeError or ValueError for values that are not JSON (non-string keys of mixed types, sets, ...).
    """
    encoded = _CANONICAL_ENCODER.encode(value).encode("utf-8", "surrogatepass")
    return hashlib.sha256(encoded).hexdigest()


def derive_event_id(waba_id: str, kind: str, phone_number_id: str | None, identity: tuple[str, ...]) -> str:
    """The deterministic event id (see the module docstring); the outbound report uses the same derivation."""
    material = _ID_SEPARATOR.join((_EVENT_ID_VERSION, waba_id, kind, phone_number_id or "", *identity))
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()[:EVENT_ID_HEX_DIGITS]


def _meta_id(value: Any) -> str | None:
    """A Meta id as a string: numbers become their decimal text; empty strings (a username-only person's
    ``wa_id``) and anything that is not a string or a number mean absent."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


# Text that reaches PostgreSQL columns and metric labels straight from Meta's payload (ids, type names). Meta's
# ids are 15-20 digits and its type names a few words; a B-tree entry cannot exceed about 2,700 bytes.
MAX_STORED_TEXT: Final = 256


def text_fault(value: str) -> str | None:
    """Why ``value`` cannot be stored as it is — in PostgreSQL's UTF-8 text (and an index entry) or as a metric
    label — or None if it can. The splitter keeps such values as Meta sent them; the stores cannot."""
    if len(value) > MAX_STORED_TEXT:
        return f"longer than {MAX_STORED_TEXT} characters"
    if "\x00" in value:
        return "contains NUL"
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return "contains a lone surrogate"
    return None


def _text(value: Any) -> str | None:
    """A message type or status value: a non-empty string, or absent."""
    return value if isinstance(value, str) and value else None


def _unix_seconds(value: Any) -> int | None:
    """Meta's timestamps are decimal strings of unix seconds (sometimes integers); anything else is absent."""
    if isinstance(value, str):
        if 0 < len(value) <= _MAX_TIMESTAMP_DIGITS and value.isascii() and value.isdigit():
            return int(value)
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _MAX_TIMESTAMP:
        return value
    return None


def _subject(wa_id: Any, user_id: Any) -> Subject | None:
    wa, user = _meta_id(wa_id), _meta_id(user_id)
    return Subject(wa_id=wa, user_id=user) if (wa is not None or user is not None) else None


def _participant_subject(person: Any) -> Subject | None:
    """A group participant of ``group_participants_update``: their ``wa_id`` / ``user_id``, else the ``input`` the
    business removed them by — a phone number (its digits: a wa_id) or a business-scoped user id (anything else)."""
    if not isinstance(person, dict):
        return None
    subject = _subject(person.get("wa_id"), person.get("user_id"))
    given = _meta_id(person.get("input")) if subject is None else None
    if given is None:
        return subject
    digits = "".join(c for c in given if c not in _PHONE_PUNCTUATION)
    if digits and digits.isascii() and digits.isdigit():
        return Subject(wa_id=digits, user_id=None)
    return Subject(wa_id=None, user_id=given)


def _status_person(status: dict[str, Any]) -> tuple[Subject | None, str | None]:
    """Whose a status is, and of which group: a status of a message sent to a group names the group as its
    ``recipient_id`` and the participant it was delivered to (or read by) separately."""
    if status.get("recipient_type") != "group":
        return _subject(status.get("recipient_id"), status.get("recipient_user_id")), None
    number = status.get("recipient_participant_id")
    if number is None:
        number = status.get("participant_recipient_id")  # the spelling of some of Meta's group samples
    return _subject(number, status.get("recipient_participant_user_id")), _meta_id(status.get("recipient_id"))


def _business_number(value: dict[str, Any]) -> Any:
    """The business's own number in a change (``metadata.display_phone_number``), as Meta sent it, if any."""
    metadata = value.get("metadata")
    return metadata.get("display_phone_number") if isinstance(metadata, dict) else None


def _same_number(number: Any, business: Any) -> bool:
    """Is ``number`` the business's number? Compared on their digits (``+1 555…`` is ``1555…``), else as text."""
    a, b = _meta_id(number), _meta_id(business)
    if a is None or b is None:
        return False
    digits_a = "".join(c for c in a if c in _ASCII_DIGITS)
    digits_b = "".join(c for c in b if c in _ASCII_DIGITS)
    return digits_a == digits_b if digits_a and digits_b else a == b


def _call_subject(call: dict[str, Any], business: Any) -> Subject | None:
    """The user on a call, never the business: the side that is not the business's number; when that does not
    tell (neither or both sides are), the caller of a user-initiated call and the callee of a business-initiated
    one (Meta's own samples put the business on either side, or on neither); else no subject, never a guess."""
    caller = _subject(call.get("from"), call.get("from_user_id"))
    callee = _subject(call.get("to"), call.get("to_user_id"))
    caller_is_business = _same_number(call.get("from"), business)
    callee_is_business = _same_number(call.get("to"), business)
    if caller_is_business != callee_is_business:
        return callee if caller_is_business else caller
    if caller_is_business:
        return None  # both sides are the business's number: nobody to attribute the call to
    direction = call.get("direction")
    direction = direction.upper() if isinstance(direction, str) else None
    if direction == "USER_INITIATED":
        return caller
    if direction == "BUSINESS_INITIATED":
        return callee
    return None


def _original_message_id(item: dict[str, Any]) -> str | None:
    """The message a ``revoke`` or an ``edit`` (inbound or echoed) concerns."""
    item_type = item.get("type")
    if item_type in ("revoke", "edit"):  # a tuple: `type` may be any JSON value, even an unhashable one
        body = item.get(item_type)
        if isinstance(body, dict):
            return _meta_id(body.get("original_message_id"))
    return None


def _field_kind(field: str) -> EventKind:
    """The kind of a change that is not split into items."""
    if field == "account_update":
        return "account"
    if field.startswith(("message_template", "template")):
        return "template"
    return "unknown"


class _Contacts:
    """``value.contacts`` looked up by ``wa_id`` or ``user_id``; indexed on first use (a batch of 1,000
    messages may come with hundreds of contacts, and a linear scan per message would be quadratic)."""

    __slots__ = ("_by_user_id", "_by_wa_id", "_raw")

    def __init__(self, raw: Any) -> None:
        self._raw = raw if isinstance(raw, list) and raw else None
        self._by_wa_id: dict[str, Any] | None = None
        self._by_user_id: dict[str, Any] = {}

    def find(self, subject: Subject | None) -> Any | None:
        """The first contact whose ``wa_id`` equals the subject's, else whose ``user_id`` does; never a guess."""
        if subject is None or self._raw is None:
            return None
        if self._by_wa_id is None:
            self._by_wa_id = {}
            for contact in self._raw:
                if isinstance(contact, dict):
                    wa_id, user_id = _meta_id(contact.get("wa_id")), _meta_id(contact.get("user_id"))
                    if wa_id is not None:
                        self._by_wa_id.setdefault(wa_id, contact)
                    if user_id is not None:
                        self._by_user_id.setdefault(user_id, contact)
        found = self._by_wa_id.get(subject.wa_id) if subject.wa_id is not None else None
        if found is None and subject.user_id is not None:
            found = self._by_user_id.get(subject.user_id)
        return found


@dataclass(frozen=True, slots=True)
class _Change:
    """What every event of one change shares."""

    waba_id: str
    phone_number_id: str | None
    field: str
    entry_time: int | None


def _entry_parts(entry: Any) -> tuple[str, list[Any]]:
    """An entry's WABA id and its changes, or WebhookRejected(400) saying what is missing."""
    if not isinstance(entry, dict):
        raise WebhookRejected(400, "each entry must be an object")
    raw_id = entry.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise WebhookRejected(400, "each entry needs a WABA 'id' (a non-empty string or an integer)")
    changes = entry.get("changes")
    if not isinstance(changes, list):
        raise WebhookRejected(400, "each entry needs a 'changes' list")
    return str(raw_id), changes


def _change_field(change: Any) -> str:
    if not isinstance(change, dict) or not isinstance(change.get("field"), str):
        raise WebhookRejected(400, "each change must be an object with a string 'field'")
    field: str = change["field"]
    return field


def _change_number(value: Any) -> str | None:
    """The business phone number a change's value concerns (``metadata.phone_number_id``), if it names one."""
    metadata = value.get("metadata") if isinstance(value, dict) else None
    return _meta_id(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None


class _Splitter:
    """Walks one webhook body and collects its events, skipping repeats of an event id within the body."""

    __slots__ = ("_delivery", "_received_at", "_seen", "events")

    def __init__(self, delivery: Delivery, received_at: str) -> None:
        self._delivery = delivery
        self._received_at = received_at
        self._seen: set[str] = set()
        self.events: list[Event] = []

    def entry(self, entry: Any) -> None:
        waba_id, changes = _entry_parts(entry)
        entry_time = _unix_seconds(entry.get("time"))
        for change in changes:
            self.change(waba_id, entry_time, _change_field(change), change.get("value"))

    def change(self, waba_id: str, entry_time: int | None, field: str, value: Any) -> None:
        change = _Change(waba_id, _change_number(value), field, entry_time)
        item_keys = _ITEM_KEYS.get(field)
        if item_keys is None or not isinstance(value, dict):
            self.standalone(change, _field_kind(field), value)
            return
        produced_before = len(self.events)
        contacts = _Contacts(value.get("contacts"))
        if field == "messages":
            self.items(change, "message", value.get("messages"), contacts, "from", "from_user_id")
            self.statuses(change, value.get("statuses"), contacts)
            self.errors(change, value.get("errors"))
        elif field == "smb_message_echoes":
            self.items(change, "echo", value.get("message_echoes"), contacts, "to", "to_user_id")
        elif field == "history":
            self.history(change, value.get("history"), contacts)
            # The follow-up delivery of a history message's media asset carries a plain `messages` list.
            self.history_assets(change, value.get("messages"), contacts, _business_number(value))
        elif field == "calls":
            self.calls(change, value.get("calls"), contacts, _business_number(value))
            self.statuses(change, value.get("statuses"), contacts)
            self.errors(change, value.get("errors"))
        elif field == "user_preferences":
            self.preferences(change, value.get("user_preferences"), contacts)
        elif field == "smb_app_state_sync":
            self.state_sync(change, value.get("state_sync"), contacts)
        else:
            self.groups(change, value.get("groups"), contacts)
        if len(self.events) == produced_before:
            # Nothing to split (no items, empty lists): keep the whole value, as for an unknown field.
            self.standalone(change, "unknown", value)
            return
        # Keys the splitter does not split (a future Meta addition, a malformed list) are kept too, without
        # copying the items already emitted into a record that belongs to no subject.
        residue = {
            key: item
            for key, item in value.items()
            if key not in _VALUE_CONTEXT_KEYS and not (key in item_keys and isinstance(item, list))
        }
        if residue:
            self.standalone(change, "unknown", residue)

    def emit(
        self,
        change: _Change,
        kind: EventKind,
        identity: tuple[str, ...],
        payload: Any,
        *,
        subject: Subject | None = None,
        contact: Any | None = None,
        message_id: str | None = None,
        original_message_id: str | None = None,
        timestamp: int | None = None,
        type_: str | None = None,
        group_id: str | None = None,
    ) -> None:
        event_id = derive_event_id(change.waba_id, kind, change.phone_number_id, identity)
        if event_id in self._seen:
            return  # the same object twice in one body: deliberate deduplication (module docstring)
        self._seen.add(event_id)
        self.events.append(
            Event(
                event_id=event_id,
                kind=kind,
                field=change.field,
                received_at=self._received_at,
                waba_id=change.waba_id,
                phone_number_id=change.phone_number_id,
                subject=subject,
                message_id=message_id,
                original_message_id=original_message_id,
                timestamp=timestamp,
                type=type_,
                payload=payload,
                contact=contact,
                delivery=self._delivery,
                group_id=group_id,
            )
        )

    def standalone(self, change: _Change, kind: EventKind, payload: Any) -> None:
        """An object without an id of its own (error, account, template, unknown): identified by its content."""
        identity: tuple[str, ...] = (canonical_hash(payload),)
        if change.entry_time is not None:
            identity = (*identity, str(change.entry_time))
        self.emit(change, kind, identity, payload, timestamp=change.entry_time, type_=change.field)

    def message(
        self,
        change: _Change,
        kind: EventKind,
        item: dict[str, Any],
        subject: Subject | None,
        contacts: _Contacts,
        thread_id: tuple[str, ...] = (),
    ) -> None:
        message_id = _meta_id(item.get("id"))
        self.emit(
            change,
            kind,
            (*thread_id, message_id or "", canonical_hash(item)),
            item,
            subject=subject,
            contact=contacts.find(subject),
            message_id=message_id,
            original_message_id=_original_message_id(item),
            timestamp=_unix_seconds(item.get("timestamp")),
            type_=_text(item.get("type")),
            group_id=_meta_id(item.get("group_id")),
        )

    def objects(self, change: _Change, items: Any) -> Iterator[dict[str, Any]]:
        """The JSON objects of a list of items, in order; anything else in the list becomes an ``unknown`` event
        (never dropped); nothing when ``items`` is not a list."""
        if not isinstance(items, list):
            return
        for item in items:
            if isinstance(item, dict):
                yield item
            else:
                self.standalone(change, "unknown", item)

    def items(
        self, change: _Change, kind: EventKind, items: Any, contacts: _Contacts, wa_id_key: str, user_id_key: str
    ) -> None:
        """Inbound messages (subject: the sender) or business echoes (subject: the recipient)."""
        for item in self.objects(change, items):
            self.message(change, kind, item, _subject(item.get(wa_id_key), item.get(user_id_key)), contacts)

    def statuses(self, change: _Change, statuses: Any, contacts: _Contacts) -> None:
        for status in self.objects(change, statuses):
            status_id = _meta_id(status.get("id"))
            state = _text(status.get("status"))
            subject, group_id = _status_person(status)
            self.emit(
                change,
                "status",
                (status_id or "", canonical_hash(status)),
                status,
                subject=subject,
                contact=contacts.find(subject),
                message_id=status_id,
                # The legacy `deleted` status is the only deletion signal some numbers get: link it.
                original_message_id=status_id if state == "deleted" else None,
                timestamp=_unix_seconds(status.get("timestamp")),
                type_=state,
                group_id=group_id,
            )

    def errors(self, change: _Change, errors: Any) -> None:
        if not isinstance(errors, list):
            return
        for error in errors:
            self.standalone(change, "error" if isinstance(error, dict) else "unknown", error)

    def history(self, change: _Change, chunks: Any, contacts: _Contacts) -> None:
        """``value.history[].threads[].messages[]``: one event per message, the thread id as the subject."""
        for chunk in self.objects(change, chunks):
            threads = chunk.get("threads")
            if not isinstance(threads, list):
                # e.g. "history sharing declined": the chunk carries errors and no threads.
                self.standalone(change, "error" if "errors" in chunk else "unknown", chunk)
                continue
            if "errors" in chunk:
                self.standalone(change, "error", {key: item for key, item in chunk.items() if key != "threads"})
            for thread in threads:
                self.thread(change, thread, contacts)

    def thread(self, change: _Change, thread: Any, contacts: _Contacts) -> None:
        if not isinstance(thread, dict):
            self.standalone(change, "unknown", thread)
            return
        messages = thread.get("messages")
        if messages is None:
            return  # a thread without messages yields nothing
        if not isinstance(messages, list):
            self.standalone(change, "unknown", thread)
            return
        thread_id = _meta_id(thread.get("id"))
        subject = Subject(wa_id=thread_id, user_id=None) if thread_id is not None else None
        for message in messages:
            if isinstance(message, dict):
                self.message(change, "history", message, subject, contacts, (thread_id or "",))
            else:
                self.standalone(change, "unknown", message)

    def history_assets(self, change: _Change, items: Any, contacts: _Contacts, business: Any) -> None:
        """History messages outside threads (media assets): the subject is whoever is not the business."""
        for item in self.objects(change, items):
            sender = item.get("from")
            if business is not None and sender is not None and sender == business:
                subject = _subject(item.get("to"), item.get("to_user_id"))
            else:
                subject = _subject(sender, item.get("from_user_id"))
            self.message(change, "history", item, subject, contacts, ("",))

    def calls(self, change: _Change, calls: Any, contacts: _Contacts, business: Any) -> None:
        """``value.calls[]``: one event per call event (connect, terminate), the user on the call as the subject."""
        for call in self.objects(change, calls):
            call_id = _meta_id(call.get("id"))
            subject = _call_subject(call, business)
            self.emit(
                change,
                "call",
                (call_id or "", canonical_hash(call)),
                call,
                subject=subject,
                contact=contacts.find(subject),
                message_id=call_id,
                timestamp=_unix_seconds(call.get("timestamp")),
                type_=_text(call.get("event")) or _text(call.get("status")),
            )

    def preferences(self, change: _Change, preferences: Any, contacts: _Contacts) -> None:
        """``value.user_preferences[]``: a user stopping or resuming marketing messages, the user as the subject."""
        for preference in self.objects(change, preferences):
            subject = _subject(preference.get("wa_id"), preference.get("user_id"))
            self.emit(
                change,
                "preference",
                (canonical_hash(preference),),
                preference,
                subject=subject,
                contact=contacts.find(subject),
                timestamp=_unix_seconds(preference.get("timestamp")),
                type_=_text(preference.get("value")),
            )

    def state_sync(self, change: _Change, items: Any, contacts: _Contacts) -> None:
        """``value.state_sync[]`` (WhatsApp Business app contacts): the contact's number as the subject."""
        for item in self.objects(change, items):
            if item.get("type") != "contact":
                self.standalone(change, "unknown", item)
                continue
            contact = item.get("contact")
            subject = (
                _subject(contact.get("phone_number"), contact.get("user_id")) if isinstance(contact, dict) else None
            )
            metadata = item.get("metadata")
            self.emit(
                change,
                "contact_sync",
                (canonical_hash(item),),
                item,
                subject=subject,
                contact=contacts.find(subject),
                timestamp=_unix_seconds(metadata.get("timestamp")) if isinstance(metadata, dict) else None,
                type_=_text(item.get("action")),
            )

    def groups(self, change: _Change, items: Any, contacts: _Contacts) -> None:
        """``value.groups[]`` of the four group fields: the participants' records, or the group's own."""
        for item in self.objects(change, items):
            group_id = _meta_id(item.get("group_id"))
            if change.field == "group_participants_update" and self.participants(change, item, group_id, contacts):
                continue
            self.emit(
                change,
                "group",
                (group_id or "", canonical_hash(item)),
                item,
                timestamp=_unix_seconds(item.get("timestamp")),
                type_=_text(item.get("type")),
                group_id=group_id,
            )

    def participants(self, change: _Change, item: dict[str, Any], group_id: str | None, contacts: _Contacts) -> bool:
        """One ``group_participant`` per person the item names; False when it names nobody."""
        timestamp, type_ = _unix_seconds(item.get("timestamp")), _text(item.get("type"))

        def participant(payload: dict[str, Any], subject: Subject | None) -> None:
            self.emit(
                change,
                "group_participant",
                (group_id or "", canonical_hash(payload)),
                payload,
                subject=subject,
                contact=contacts.find(subject),
                timestamp=timestamp,
                type_=type_,
                group_id=group_id,
            )

        context: dict[str, Any] | None = None
        named = False
        for key in _PARTICIPANT_LISTS:
            people = item.get(key)
            if not isinstance(people, list):
                continue
            if context is None:
                context = {name: value for name, value in item.items() if name not in _PARTICIPANT_LISTS}
            for person in people:
                # The item as it concerns this person: its own fields and this one entry of its list.
                participant({**context, key: [person]}, _participant_subject(person))
                named = True
        if named:
            return True
        requester = _subject(item.get("wa_id"), item.get("user_id"))  # a join request, created or revoked
        if requester is None:
            return False
        participant(item, requester)
        return True


def split_webhook(body: Any, *, raw_sha256: str, signature: str | None, received_at: str) -> list[Event]:
    """Split a decoded webhook body into events, in body order (entries, changes, items).

    ``body`` must be a value the JSON decoder produced (string keys, JSON types). ``raw_sha256`` (hex of the
    raw body), ``signature`` (the header as received) and ``received_at`` (RFC 3339 UTC with milliseconds) are
    copied into every event as given. Raises WebhookRejected(400) when the body is not a WhatsApp Business
    Account envelope (see :func:`parse_webhook`) or is nested too deeply to hash; the body is left untouched.
    """
    if not isinstance(body, dict):
        raise WebhookRejected(400, "body must be a JSON object")
    if body.get("object") != WABA_OBJECT:
        raise WebhookRejected(400, "'object' must be 'whatsapp_business_account'")
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise WebhookRejected(400, "'entry' must be a list")
    splitter = _Splitter(Delivery(sha256=raw_sha256, signature=signature), received_at)
    try:
        for entry in entries:
            splitter.entry(entry)
    except RecursionError:
        raise WebhookRejected(400, "body is nested too deeply") from None
    return splitter.events


def decode_webhook(raw: bytes) -> Any:
    """A raw POST body decoded as JSON, exactly (:func:`loads_exact`); WebhookRejected(400) when it is not JSON
    (including NaN/Infinity and text that is not UTF-8/16/32) or is nested too deeply to decode."""
    try:
        return loads_exact(
            raw, lambda text: json.loads(text, parse_constant=_refuse_constant, parse_float=_finite_float)
        )
    except RecursionError:
        raise WebhookRejected(400, "body is nested too deeply") from None
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, NaN/Infinity, integers over the digit limit
        raise WebhookRejected(400, "body is not JSON") from None


def webhook_scope(body: Any) -> tuple[str, frozenset[str]]:
    """Check a decoded body's envelope without splitting it, as ingest does before journaling it: the same
    structural checks and reasons as :func:`split_webhook` (an object whose ``object`` is
    ``whatsapp_business_account``, an ``entry`` list, entries with an id and a ``changes`` list, changes with a
    string ``field``), items unread.

    Returns the body's Kafka key text and the business phone numbers it concerns: the one
    ``metadata.phone_number_id`` when every change that names a number names that one, else (account-level
    changes only, or several numbers in one POST) the first entry's WABA id."""
    if not isinstance(body, dict):
        raise WebhookRejected(400, "body must be a JSON object")
    if body.get("object") != WABA_OBJECT:
        raise WebhookRejected(400, "'object' must be 'whatsapp_business_account'")
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise WebhookRejected(400, "'entry' must be a list")
    first_waba: str | None = None
    numbers: set[str] = set()
    for entry in entries:
        waba_id, changes = _entry_parts(entry)
        first_waba = first_waba or waba_id
        for change in changes:
            _change_field(change)
            number = _change_number(change.get("value"))
            if number is not None:
                numbers.add(number)
    scope = next(iter(numbers)) if len(numbers) == 1 else (first_waba or "")
    return scope, frozenset(numbers)


def parse_webhook(raw: bytes, *, raw_sha256: str, signature: str | None, received_at: str) -> list[Event]:
    """Decode a raw POST body and split it (:func:`split_webhook`).

    Raises WebhookRejected(400) — and nothing else — when the body is not JSON (including NaN/Infinity and
    text that is not UTF-8/16/32), is nested too deeply, is not an object whose ``object`` is
    ``whatsapp_business_account``, lacks an ``entry`` list, has an entry without a string-or-integer ``id`` or
    without a ``changes`` list, or has a change that is not an object with a string ``field``.
    """
    body = decode_webhook(raw)
    return split_webhook(body, raw_sha256=raw_sha256, signature=signature, received_at=received_at)


# Ingest accepts any body its JSON decoder could read: up to 1,024 levels of nesting (orjson's limit, or about the
# interpreter's own with the standard library's fallback). The standard library's JSON code recurses once per level,
# on a stack that holds the caller's frames too: the archiver's split and encoding, and the read side's decoding,
# run under this limit (:class:`deep_enough`), so that what ingest answered 200 for is archived and read back.
JSON_RECURSION_LIMIT: Final = 5_000


class deep_enough:  # a context manager, named as the function it replaced: `with deep_enough():`
    """Run the standard library's JSON code (it recurses once per level) under :data:`JSON_RECURSION_LIMIT`: the
    archiver splits what ingest accepted, encodes its events again and the read side decodes them under this one
    limit. A class, not a generator-based context manager: the archiver enters it once per record (≈0.2 µs instead
    of ≈1.5 µs)."""

    __slots__ = ("_restore",)

    def __enter__(self) -> None:
        limit = sys.getrecursionlimit()
        self._restore = limit if limit < JSON_RECURSION_LIMIT else None
        if self._restore is not None:
            sys.setrecursionlimit(JSON_RECURSION_LIMIT)

    def __exit__(self, *_exc: object) -> None:
        if self._restore is not None:
            sys.setrecursionlimit(self._restore)
