"""From decrypted records to a timeline (pure): envelopes in, :class:`ConversationMessage` out.

:func:`assemble` groups a person's (or a group's) events into messages with their statuses, edits and deletion;
a change whose message is not archived stays visible on its own, and a record that could not be read
(:func:`unreadable_record`) takes its place in time among the others. :func:`decode_records` turns what the
reader opened into envelopes, unreadable items and a count of shredded records. :func:`keyword_matches` says
which messages hold a query's words. Nothing here reads the index, the bucket or the clock (``now`` is passed in).

Sends through the gateway (services/gateway/records.py) are journaled twice: the ``send_attempt`` before the
request is forwarded, the ``outbound`` of its outcome after. The timeline shows the outcome's message, with the
gateway's ``send_outcome`` (``sent``, ``refused``, ``unknown``: the answer was lost, ``not_sent``), and folds the
attempt into it. An attempt whose outcome the archive does not hold — the gateway died between forwarding and
journaling it — stands on its own as the business's message with ``send_outcome`` ``unknown`` once
:data:`SEND_OUTCOME_GRACE` has passed since it was received (``pending`` before): it may have reached the customer.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

from services.core.keywords import searchable_text, words
from services.core.plaintext import UndecodableRecord, read_envelope
from services.core.vocabulary import (
    BUSINESS_SENT_KINDS,
    MESSAGE_KINDS,
    SEND_ATTEMPT_KINDS,
    STATUS_KINDS,
    Direction,
    EventKind,
)
from services.review.queries import IndexedRecord

# A change in these kinds is the business's: its own message edited or revoked, or a status saying it deleted one.
CHANGED_BY_BUSINESS = BUSINESS_SENT_KINDS | STATUS_KINDS
STATUS_ORDER = {"sent": 1, "delivered": 2, "read": 3, "played": 4, "failed": 5, "deleted": 6}
# How long a send's outcome may take to be archived before its attempt alone reads "outcome unknown": the gateway
# waits up to 30 s for Meta (WA_GATEWAY_SEND_TIMEOUT_S) and journals the outcome at once; the archiver flushes
# within seconds. Five minutes leaves room for a slow journal without leaving a lost outcome unsaid for long.
SEND_OUTCOME_GRACE: Final = timedelta(minutes=5)


@dataclass
class Change:
    """An edit or a deletion of a message, as archived when it arrived."""

    event_id: str
    kind: str  # edit | revoke | deleted-status
    by: str  # customer | business
    at: int | None
    payload: Any


@dataclass(kw_only=True)
class ConversationMessage:
    """One item of a timeline: a message with its statuses, edits and deletion, a change whose message is not
    archived, or a record that could not be read (``unreadable``: why, in fixed words; its ``payload`` is None and
    its time, kind and type are the index's)."""

    event_id: str
    message_id: str | None
    kind: EventKind
    type: str | None
    direction: Direction
    timestamp: int | None
    received_at: str
    payload: Any
    statuses: list[tuple[str, int | None]] = field(default_factory=list)
    edits: list[Change] = field(default_factory=list)
    deletion: Change | None = None
    media: dict[str, Any] | None = None
    unreadable: str | None = None
    # A send through the gateway: its outcome (sent | refused | unknown | not_sent), or ``pending`` for an attempt
    # whose outcome is not archived yet (module docstring); None for every other message.
    send_outcome: str | None = None

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
            "send_outcome": self.send_outcome,
        }


def direction(envelope: Mapping[str, Any]) -> Direction:
    """``outbound`` for what the business sent (an echo, an outbound request, a history message not from the
    person), else ``inbound``."""
    kind = envelope.get("kind")
    if kind in BUSINESS_SENT_KINDS or kind in SEND_ATTEMPT_KINDS:
        return "outbound"
    if kind == "history":
        subject = envelope.get("subject") or {}
        payload = envelope.get("payload")
        sender = payload.get("from") if isinstance(payload, dict) else None
        return "inbound" if sender and sender in (subject.get("wa_id"), subject.get("user_id")) else "outbound"
    return "inbound"


def change_kind(kind: str | None, kind_type: str | None) -> str | None:
    """What a record changes of its message: ``edit``, ``revoke`` or ``deleted-status``; None for anything else."""
    if kind == "status":
        return "deleted-status" if kind_type == "deleted" else None
    if kind in MESSAGE_KINDS and kind_type in ("edit", "revoke"):
        return str(kind_type)
    return None


def gateway_of(envelope: Mapping[str, Any]) -> Mapping[str, Any]:
    """The gateway's part of a send's payload (``payload.gateway``: send id, outcome), or an empty mapping."""
    payload = envelope.get("payload")
    gateway = payload.get("gateway") if isinstance(payload, dict) else None
    return gateway if isinstance(gateway, dict) else {}


def attempt_outcome(envelope: Mapping[str, Any], now: datetime | None) -> str:
    """What the archive can say of a send attempt whose outcome it does not hold: ``unknown`` once
    :data:`SEND_OUTCOME_GRACE` has passed since it was received (or when ``now`` is not given, or its time cannot
    be read), ``pending`` before."""
    if now is None:
        return "unknown"
    try:
        received = datetime.fromisoformat(str(envelope.get("received_at")).replace("Z", "+00:00"))
    except ValueError:
        return "unknown"
    if received.tzinfo is None or now - received >= SEND_OUTCOME_GRACE:
        return "unknown"
    return "pending"


def assemble(
    envelopes: Iterable[dict[str, Any]],
    media: Mapping[str, dict[str, Any]] | None = None,
    unreadable: Iterable[ConversationMessage] = (),
    *,
    now: datetime | None = None,
) -> list[ConversationMessage]:
    """Group a person's events into messages with their statuses, edits and deletion (pure); the ``unreadable``
    records (:func:`unreadable_record`) take their place in time among them, each on its own. ``media`` holds the
    ``archived_media`` row (as JSON) of a message's media, by event id. ``now`` decides whether a send attempt
    without its outcome is ``pending`` or ``unknown`` (module docstring; None: ``unknown``)."""
    ordered = sorted(envelopes, key=lambda e: (e.get("timestamp") or 0, e.get("received_at") or ""))
    concluded = {gateway_of(e).get("send_id") for e in ordered if e.get("kind") in BUSINESS_SENT_KINDS} - {None}
    messages: dict[str, ConversationMessage] = {}
    result: list[ConversationMessage] = []
    pending: list[dict[str, Any]] = []
    for envelope in ordered:
        if envelope.get("kind") == "status" or change_kind(envelope.get("kind"), envelope.get("type")):
            pending.append(envelope)
            continue
        send_outcome: str | None = None
        if envelope.get("kind") in SEND_ATTEMPT_KINDS:
            if gateway_of(envelope).get("send_id") in concluded:
                continue  # its outcome's message stands for it (the attempt stays archived, as evidence)
            send_outcome = attempt_outcome(envelope, now)
        elif isinstance(outcome := gateway_of(envelope).get("outcome"), str):
            send_outcome = outcome
        message = _message(envelope, envelope.get("message_id"))
        message.send_outcome = send_outcome
        message.media = (media or {}).get(envelope["event_id"])
        result.append(message)
        if message.message_id and message.message_id not in messages:
            messages[message.message_id] = message
    for envelope in pending:
        change = change_kind(envelope.get("kind"), envelope.get("type"))
        target_id = envelope.get("original_message_id") or envelope.get("message_id")
        target = messages.get(target_id) if target_id else None
        if envelope.get("kind") == "status" and change is None:
            if target is not None:
                target.statuses.append((str(envelope.get("type")), envelope.get("timestamp")))
            continue
        if target is None:
            # The original was not archived (it predates the archive): keep the change visible on its own.
            result.append(_message(envelope, target_id))
            continue
        by = "business" if envelope.get("kind") in CHANGED_BY_BUSINESS else "customer"
        record = Change(envelope["event_id"], change or "", by, envelope.get("timestamp"), envelope.get("payload"))
        if change == "edit":
            target.edits.append(record)
        elif target.deletion is None:
            target.deletion = record
    result.extend(unreadable)
    return sorted(result, key=lambda m: (m.timestamp or 0, m.received_at))


def _message(envelope: dict[str, Any], message_id: str | None) -> ConversationMessage:
    return ConversationMessage(
        event_id=envelope["event_id"],
        message_id=message_id,
        kind=envelope["kind"],
        type=envelope.get("type"),
        direction=direction(envelope),
        timestamp=envelope.get("timestamp"),
        received_at=envelope.get("received_at", ""),
        payload=envelope.get("payload"),
    )


def unreadable_record(record: IndexedRecord, reason: str) -> ConversationMessage:
    """The timeline item of a record whose plaintext could not be read: its index metadata and why, no content."""
    when = record.event_time or record.received_at
    return ConversationMessage(
        event_id=record.location.event_id,
        message_id=None,
        kind=record.kind,
        type=record.type,
        direction=direction({"kind": record.kind}),
        timestamp=int(when.timestamp()),
        received_at=record.received_at.isoformat(),
        payload=None,
        unreadable=reason,
    )


@dataclass
class Opened:
    """Records opened for a view: the decoded envelopes, the records that could not be read (as timeline items),
    and how many were shredded (their key is gone: an erasure)."""

    envelopes: list[dict[str, Any]]
    unreadable: list[ConversationMessage]
    shredded: int

    def messages(
        self, media: Mapping[str, dict[str, Any]] | None = None, *, now: datetime | None = None
    ) -> list[ConversationMessage]:
        return assemble(self.envelopes, media, self.unreadable, now=now)


def decode_records(records: Iterable[IndexedRecord], plaintexts: Mapping[str, bytes | None]) -> Opened:
    """Decode what the reader opened for ``records`` (``plaintexts`` by event id; None: shredded); a plaintext
    that is not a readable envelope becomes its timeline item (:func:`unreadable_record`)."""
    opened = Opened([], [], 0)
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
