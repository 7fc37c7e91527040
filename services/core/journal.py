"""The events topic's records (docs/asyncapi.yaml): what ingest journals and how the archiver reads it back.

Two record formats, told apart by the ``wa-format`` header:

- ``webhook/1`` — one record per accepted webhook POST: the value is the exact signed bytes Meta sent, the
  ``wa-signature`` header the ``X-Hub-Signature-256`` header as received, ``wa-app`` the id of the Meta app secret
  it was verified with (:func:`services.ingest.signature.app_id`; absent on records written before it) and
  ``wa-received-at`` when ingest received it (RFC 3339 UTC, milliseconds). The send gateway writes records of this
  format too — the status webhooks of held sends, signed with the app secret — marked ``wa-origin: gateway``. The
  relay (services/relay) delivers the value with that signature to the company's existing systems. The key is the
  business phone number the POST concerns (or its WABA: :func:`services.core.events.webhook_scope`), so the order
  of a number's webhooks holds on its partition.
  The archiver splits it with the same splitter ingest used to run, so event ids are unchanged.
- ``event/1`` — one schema-1 event envelope (:meth:`services.core.events.Event.to_json`): outbound reports, and
  the dead letters of single events. A record without ``wa-format`` is read as ``event/1``: that is what the
  topic held before journaling, and a replay of such a topic still works.

:func:`split_record` never raises: a record that cannot be read says why (a dead letter), in fixed words that
quote nothing of its content.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from services.core.events import (
    JSON_RECURSION_LIMIT,
    EnvelopeError,
    Event,
    WebhookRejected,
    deep_enough,
    parse_webhook,
)
from services.core.kafka import OutgoingRecord

FORMAT_HEADER: Final = "wa-format"
RECEIVED_AT_HEADER: Final = "wa-received-at"
SIGNATURE_HEADER: Final = "wa-signature"
APP_HEADER: Final = "wa-app"
# Who wrote a ``webhook/1`` record, when not ingest: ``gateway`` for the status webhooks the send gateway writes about
# held sends (services/gateway/held.py), signed with the Meta app secret as Meta signs its own.
ORIGIN_HEADER: Final = "wa-origin"
GATEWAY_ORIGIN: Final = "gateway"
WEBHOOK_FORMAT: Final = b"webhook/1"
EVENT_FORMAT: Final = b"event/1"
# Added to a dead letter beside the headers of the record it carries.
DLQ_REASON_HEADER: Final = "wa-dlq-reason"
DLQ_SOURCE_HEADER: Final = "wa-source"

Headers = Sequence[tuple[str, bytes]]

# Hashing a deeply nested value (canonical_hash) recurses as deeply as decoding it: the split runs under this limit
# (services/core/events.py), so that a POST that ingest answered 200 is never an "unsplittable" dead letter because
# of the stack it happened to be split on.
SPLIT_RECURSION_LIMIT: Final = JSON_RECURSION_LIMIT


def webhook_record(
    topic: str,
    key: str,
    raw: bytes,
    *,
    signature: str | None,
    received_at: str,
    app: str | None = None,
    origin: str | None = None,
) -> OutgoingRecord:
    """The journal record of one accepted POST; ``app`` is the id of the app secret that verified it (or signed it),
    ``origin`` who wrote it when not ingest (:data:`ORIGIN_HEADER`)."""
    headers: list[tuple[str, bytes]] = [(FORMAT_HEADER, WEBHOOK_FORMAT), (RECEIVED_AT_HEADER, received_at.encode())]
    if signature is not None:
        headers.append((SIGNATURE_HEADER, signature.encode("latin-1")))
    if app is not None:
        headers.append((APP_HEADER, app.encode()))
    if origin is not None:
        headers.append((ORIGIN_HEADER, origin.encode()))
    # surrogatepass: a lone surrogate from a malformed \\u escape must not crash the producer.
    return OutgoingRecord(topic, key.encode("utf-8", "surrogatepass"), raw, tuple(headers))


def event_record(topic: str, event: Event) -> OutgoingRecord:
    """The record of one event envelope (outbound reports; dead letters of single events)."""
    return OutgoingRecord(topic, event.key(), event.to_json(), ((FORMAT_HEADER, EVENT_FORMAT),))


def header_value(headers: Headers | None, name: str) -> bytes | None:
    for key, value in headers or ():
        if key == name:
            return value
    return None


@dataclass(frozen=True, slots=True)
class Split:
    """The events of one record, or why it has none that can be archived (``fault``)."""

    events: tuple[Event, ...]
    fault: str | None


def split_record(value: bytes | None, headers: Headers | None) -> Split:
    """The events a record carries, in body order."""
    if value is None:
        return Split((), "empty record")
    form = header_value(headers, FORMAT_HEADER)
    if form is None or form == EVENT_FORMAT:
        try:
            return Split((Event.from_json(value),), None)
        except EnvelopeError as exc:
            return Split((), f"not an event envelope: {exc}")
    if form != WEBHOOK_FORMAT:
        return Split((), "unknown record format")
    received_at = header_value(headers, RECEIVED_AT_HEADER)
    signature = header_value(headers, SIGNATURE_HEADER)
    if received_at is None:
        return Split((), f"unsplittable webhook: {RECEIVED_AT_HEADER} header missing")
    try:
        with deep_enough():
            events = parse_webhook(
                value,
                raw_sha256=hashlib.sha256(value).hexdigest(),
                signature=None if signature is None else signature.decode("latin-1"),
                received_at=received_at.decode("utf-8", "replace"),
            )
    except WebhookRejected as exc:
        return Split((), f"unsplittable webhook: {exc.reason}")
    return Split(tuple(events), None)
