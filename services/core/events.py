"""The event envelope (Kafka value, schema 1) and the pure splitter of Meta's webhook bodies.

:func:`parse_webhook` turns one POST body into one :class:`Event` per message, status, echo, history message,
error and account/template/unknown update — iterating over *every* entry, change and item (Meta batches up to
1,000 updates in one POST). Nothing is dropped: items it does not understand become ``unknown`` events with the
object kept as it came. Each event carries the Meta object verbatim, the subject's ``contacts`` entry, and the
delivery evidence (sha256 of the raw body and its signature header).

``event_id`` is deterministic: a hash of the WABA, the kind, the business number, Meta's own id and the
canonical JSON of the object, so a redelivery of the same update — however Meta re-serialises it — gets the same
id and deduplicates in the archive, while two different objects never share an id even where Meta reuses a
wamid (its own documentation samples do). Two identical objects in one POST (e.g. the same value-level error
twice) deliberately collapse into one event id.

The only exception :func:`parse_webhook` raises is :class:`WebhookRejected` (a 400 with a short reason that
carries no personal data).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import orjson

SCHEMA_VERSION = 1
KINDS = frozenset({"message", "status", "echo", "history", "error", "account", "template", "unknown", "outbound"})


class WebhookRejected(ValueError):
    """The body is not a WhatsApp Business Account webhook; nothing from it may be produced."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class EnvelopeError(ValueError):
    """A Kafka record is not a valid schema-1 event envelope (a dead letter for the archiver)."""


@dataclass(frozen=True, slots=True)
class Subject:
    """The customer an event is about (never the business). Either id may be absent."""

    wa_id: str | None
    user_id: str | None


@dataclass(frozen=True, slots=True)
class Delivery:
    """Evidence that the record came from Meta: the hash of the raw POST body and its signature header."""

    sha256: str
    signature: str | None


@dataclass(frozen=True, slots=True)
class Event:
    event_id: str
    kind: str
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

    def key(self) -> bytes:
        """Kafka key: one conversation (business number + person) keeps its order on one partition."""
        person = (self.subject.wa_id or self.subject.user_id or "") if self.subject else ""
        return f"{self.phone_number_id or self.waba_id}:{person}".encode()

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA_VERSION,
            "event_id": self.event_id,
            "kind": self.kind,
            "field": self.field,
            "received_at": self.received_at,
            "waba_id": self.waba_id,
            "phone_number_id": self.phone_number_id,
            "subject": None if self.subject is None else {"wa_id": self.subject.wa_id, "user_id": self.subject.user_id},
            "message_id": self.message_id,
            "original_message_id": self.original_message_id,
            "timestamp": self.timestamp,
            "type": self.type,
            "payload": self.payload,
            "contact": self.contact,
            "delivery": {"sha256": self.delivery.sha256, "signature": self.delivery.signature},
        }

    def to_json(self) -> bytes:
        try:
            return orjson.dumps(self.as_dict())
        except TypeError:  # an integer beyond 64 bits in Meta's object: the standard library keeps it exact
            import json  # noqa: PLC0415

            return json.dumps(self.as_dict(), separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Event:
        """Strictly decode a schema-1 envelope; EnvelopeError says what is wrong."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise EnvelopeError("not JSON") from None
        if not isinstance(data, dict):
            raise EnvelopeError("not a JSON object")
        if data.get("schema") != SCHEMA_VERSION:
            raise EnvelopeError(f"unsupported schema {data.get('schema')!r}")
        for name in ("event_id", "kind", "field", "received_at", "waba_id"):
            if not isinstance(data.get(name), str):
                raise EnvelopeError(f"{name} missing or not a string")
        if data["kind"] not in KINDS or len(data["event_id"]) != 32:
            raise EnvelopeError("unknown kind or malformed event_id")
        for name in ("phone_number_id", "message_id", "original_message_id", "type"):
            if data.get(name) is not None and not isinstance(data[name], str):
                raise EnvelopeError(f"{name} must be a string or null")
        timestamp = data.get("timestamp")
        if timestamp is not None and (not isinstance(timestamp, int) or isinstance(timestamp, bool)):
            raise EnvelopeError("timestamp must be an integer or null")
        subject_raw = data.get("subject")
        subject = None
        if subject_raw is not None:
            if not isinstance(subject_raw, dict):
                raise EnvelopeError("subject must be an object or null")
            subject = Subject(_opt_str(subject_raw.get("wa_id")), _opt_str(subject_raw.get("user_id")))
        delivery = data.get("delivery")
        if not isinstance(delivery, dict) or not isinstance(delivery.get("sha256"), str):
            raise EnvelopeError("delivery evidence missing")
        if "payload" not in data:
            raise EnvelopeError("payload missing")
        return cls(
            event_id=data["event_id"],
            kind=data["kind"],
            field=data["field"],
            received_at=data["received_at"],
            waba_id=data["waba_id"],
            phone_number_id=data.get("phone_number_id"),
            subject=subject,
            message_id=data.get("message_id"),
            original_message_id=data.get("original_message_id"),
            timestamp=timestamp,
            type=data.get("type"),
            payload=data["payload"],
            contact=data.get("contact"),
            delivery=Delivery(delivery["sha256"], _opt_str(delivery.get("signature"))),
        )


def _opt_str(value: Any) -> str | None:
    """A Meta id as a string; empty strings (usernames without a phone) and non-ids mean absent."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _timestamp(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.isdigit() and len(value) <= 12:
        return int(value)
    return None


def canonical_hash(value: Any) -> str:
    """sha256 of the canonical JSON of a value: the identity of objects that carry no id of their own."""
    try:
        encoded = orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: fall back to the standard library
        import json  # noqa: PLC0415

        encoded = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(encoded).hexdigest()


def make_event_id(*parts: str) -> str:
    return hashlib.sha256("\x1f".join(("v1", *parts)).encode()).hexdigest()[:32]


class _Splitter:
    """Walks one webhook body; collects events with the shared delivery evidence."""

    def __init__(self, delivery: Delivery, received_at: str) -> None:
        self.delivery = delivery
        self.received_at = received_at
        self.events: list[Event] = []

    def add(
        self,
        *,
        kind: str,
        field: str,
        waba_id: str,
        phone_number_id: str | None,
        identity: str,
        payload: Any,
        subject: Subject | None = None,
        contact: Any | None = None,
        message_id: str | None = None,
        original_message_id: str | None = None,
        timestamp: int | None = None,
        type_: str | None = None,
    ) -> None:
        self.events.append(
            Event(
                event_id=make_event_id(waba_id, kind, phone_number_id or "", identity),
                kind=kind,
                field=field,
                received_at=self.received_at,
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                subject=subject,
                message_id=message_id,
                original_message_id=original_message_id,
                timestamp=timestamp,
                type=type_,
                payload=payload,
                contact=contact,
                delivery=self.delivery,
            )
        )

    def change(self, waba_id: str, change: Any) -> None:
        if not isinstance(change, dict):
            self.add(
                kind="unknown",
                field="",
                waba_id=waba_id,
                phone_number_id=None,
                identity=canonical_hash(change),
                payload=change,
            )
            return
        field = change.get("field")
        if not isinstance(field, str):
            raise WebhookRejected(400, "a change has no 'field'")
        value = change.get("value")
        metadata = value.get("metadata") if isinstance(value, dict) else None
        phone_number_id = _opt_str(metadata.get("phone_number_id")) if isinstance(metadata, dict) else None
        produced_before = len(self.events)
        if isinstance(value, dict) and field == "messages":
            self.messages(waba_id, phone_number_id, field, value)
        elif isinstance(value, dict) and field == "smb_message_echoes":
            self.items(waba_id, phone_number_id, field, value, "message_echoes", "echo")
        elif isinstance(value, dict) and field == "history":
            self.history(waba_id, phone_number_id, value)
            # The follow-up delivery of a history message's media asset carries a plain `messages` array.
            self.items(waba_id, phone_number_id, field, value, "messages", "history")
        if len(self.events) == produced_before:
            kind = (
                "account"
                if field == "account_update"
                else "template"
                if field.startswith(("message_template", "template"))
                else "unknown"
            )
            self.add(
                kind=kind,
                field=field,
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                identity=canonical_hash(value),
                payload=value,
                timestamp=_timestamp(value.get("timestamp")) if isinstance(value, dict) else None,
                type_=field,
            )

    def messages(self, waba_id: str, phone_number_id: str | None, field: str, value: dict[str, Any]) -> None:
        self.items(waba_id, phone_number_id, field, value, "messages", "message")
        contacts = value.get("contacts")
        statuses = value.get("statuses")
        if isinstance(statuses, list):
            for status in statuses:
                if not isinstance(status, dict):
                    self.add(
                        kind="unknown",
                        field=field,
                        waba_id=waba_id,
                        phone_number_id=phone_number_id,
                        identity=canonical_hash(status),
                        payload=status,
                    )
                    continue
                subject = _subject(status.get("recipient_id"), status.get("recipient_user_id"))
                status_id = _opt_str(status.get("id"))
                state = _opt_str(status.get("status"))
                identity = "\x1f".join((status_id or "", canonical_hash(status)))
                self.add(
                    kind="status",
                    field=field,
                    waba_id=waba_id,
                    phone_number_id=phone_number_id,
                    identity=identity,
                    payload=status,
                    subject=subject,
                    contact=_contact(contacts, subject),
                    message_id=status_id,
                    original_message_id=status_id if state == "deleted" else None,
                    timestamp=_timestamp(status.get("timestamp")),
                    type_=state,
                )
        errors = value.get("errors")
        if isinstance(errors, list):
            for error in errors:
                self.add(
                    kind="error",
                    field=field,
                    waba_id=waba_id,
                    phone_number_id=phone_number_id,
                    identity=canonical_hash(error),
                    payload=error,
                    type_="error",
                )

    def items(
        self, waba_id: str, phone_number_id: str | None, field: str, value: dict[str, Any], key: str, kind: str
    ) -> None:
        items = value.get(key)
        if not isinstance(items, list):
            return
        contacts = value.get("contacts")
        for item in items:
            if not isinstance(item, dict):
                self.add(
                    kind="unknown",
                    field=field,
                    waba_id=waba_id,
                    phone_number_id=phone_number_id,
                    identity=canonical_hash(item),
                    payload=item,
                )
                continue
            business = (
                value.get("metadata", {}).get("display_phone_number")
                if isinstance(value.get("metadata"), dict)
                else None
            )
            if kind == "echo" or (kind == "history" and business and item.get("from") == business):
                subject = _subject(item.get("to"), item.get("to_user_id"))
            else:
                subject = _subject(item.get("from"), item.get("from_user_id"))
            message_id = _opt_str(item.get("id"))
            self.add(
                kind=kind,
                field=field,
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                identity="\x1f".join((message_id or "", canonical_hash(item))),
                payload=item,
                subject=subject,
                contact=_contact(contacts, subject),
                message_id=message_id,
                original_message_id=_original_id(item),
                timestamp=_timestamp(item.get("timestamp")),
                type_=_opt_str(item.get("type")),
            )

    def history(self, waba_id: str, phone_number_id: str | None, value: dict[str, Any]) -> None:
        history = value.get("history")
        if not isinstance(history, list):
            return
        for chunk in history:
            if not isinstance(chunk, dict):
                continue
            threads = chunk.get("threads")
            if not isinstance(threads, list):
                if chunk.get("errors") is not None:
                    self.add(
                        kind="error",
                        field="history",
                        waba_id=waba_id,
                        phone_number_id=phone_number_id,
                        identity=canonical_hash(chunk),
                        payload=chunk,
                        type_="history_error",
                    )
                continue
            for thread in threads:
                if not isinstance(thread, dict):
                    continue
                thread_id = _opt_str(thread.get("id"))
                messages = thread.get("messages")
                if not isinstance(messages, list):
                    continue
                for message in messages:
                    if not isinstance(message, dict):
                        continue
                    message_id = _opt_str(message.get("id"))
                    self.add(
                        kind="history",
                        field="history",
                        waba_id=waba_id,
                        phone_number_id=phone_number_id,
                        identity="\x1f".join((thread_id or "", message_id or "", canonical_hash(message))),
                        payload=message,
                        subject=_subject(thread_id, thread.get("user_id")),
                        message_id=message_id,
                        original_message_id=_original_id(message),
                        timestamp=_timestamp(message.get("timestamp")),
                        type_=_opt_str(message.get("type")),
                    )


def _subject(wa_id: Any, user_id: Any) -> Subject | None:
    wa, user = _opt_str(wa_id), _opt_str(user_id)
    return Subject(wa, user) if (wa or user) else None


def _contact(contacts: Any, subject: Subject | None) -> Any | None:
    if subject is None or not isinstance(contacts, list):
        return None
    for contact in contacts:
        if not isinstance(contact, dict):
            continue
        if (subject.wa_id and _opt_str(contact.get("wa_id")) == subject.wa_id) or (
            subject.user_id and _opt_str(contact.get("user_id")) == subject.user_id
        ):
            return contact
    return None


def _original_id(item: dict[str, Any]) -> str | None:
    """The message a revoke or an edit concerns."""
    kind = item.get("type")
    if kind in ("revoke", "edit"):
        body = item.get(kind)
        if isinstance(body, dict):
            return _opt_str(body.get("original_message_id"))
    return None


def split_webhook(body: Any, *, raw_sha256: str, signature: str | None, received_at: str) -> list[Event]:
    """Split a parsed webhook body into events; WebhookRejected(400) if it is not a WABA envelope."""
    if not isinstance(body, dict):
        raise WebhookRejected(400, "body must be a JSON object")
    if body.get("object") != "whatsapp_business_account":
        raise WebhookRejected(400, "'object' must be 'whatsapp_business_account'")
    entries = body.get("entry")
    if not isinstance(entries, list):
        raise WebhookRejected(400, "'entry' must be a list")
    splitter = _Splitter(Delivery(raw_sha256, signature), received_at)
    for entry in entries:
        if not isinstance(entry, dict):
            raise WebhookRejected(400, "each entry must be an object")
        waba_id = _opt_str(entry.get("id"))
        if waba_id is None:
            raise WebhookRejected(400, "an entry has no WABA 'id'")
        changes = entry.get("changes")
        if not isinstance(changes, list):
            raise WebhookRejected(400, "an entry's 'changes' must be a list")
        for change in changes:
            splitter.change(waba_id, change)
    return splitter.events


def parse_webhook(raw: bytes, *, raw_sha256: str, signature: str | None, received_at: str) -> list[Event]:
    """Decode and split a raw POST body; WebhookRejected(400) for non-JSON or a non-WABA envelope."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson refuses integers beyond 64 bits; JSON allows them, so give the standard library a chance.
        import json  # noqa: PLC0415

        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            raise WebhookRejected(400, "body is not JSON") from None
    return split_webhook(body, raw_sha256=raw_sha256, signature=signature, received_at=received_at)
