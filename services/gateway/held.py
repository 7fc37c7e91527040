"""Held sends (pure): what the gateway answers for a send it holds, the decision records it consumes, and the status
webhooks by which the company's systems learn what became of a held send (docs/ARCHITECTURE.md, "Sensitive
messages held for approval").

- :func:`held_answer`: Meta's own answer for a message it holds (``message_status: held_for_quality_assessment``),
  with the gateway's id ``wamid.<send_id>`` in place of Meta's: the company's system files the send under that id.
- :func:`parse_decision`: a record of ``wa.gateway.decisions.v1`` (version 1: ``approved`` with the send body,
  ``rejected`` with a reason, ``expired``), or :class:`InvalidDecision` saying what is wrong (never its content).
- :func:`status_webhook`: a webhook body in Meta's envelope (``object: whatsapp_business_account``, one entry, one
  ``statuses`` change) about the gateway's id: ``sent`` once an approved send left — Meta's real message id in the
  added ``wa_archive.message_id`` — or ``failed`` with ``errors[0]`` saying why (rejected, expired, refused by Meta).
  The gateway signs its exact bytes with the Meta app secret and journals it as ingest journals Meta's POSTs, so
  the archiver archives the status and the relay delivers it like any other.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Literal, TypeAlias, get_args

import orjson

from services.core.vocabulary import rfc3339_millis

HELD_STATUS: Final = "held_for_quality_assessment"
AUTHOR_HEADER: Final = b"x-wa-archive-author"
MAX_AUTHOR_CHARS: Final = 128
DECISION_VERSION: Final = 1

DecisionKind: TypeAlias = Literal["approved", "rejected", "expired"]
DECISION_KINDS: Final[tuple[DecisionKind, ...]] = get_args(DecisionKind)

# ``errors[0]`` of a failed status the gateway reports. Meta's generic code (131000, "Something went wrong") with a
# title of the gateway's saying what happened: a receiver that knows only Meta's codes reads a failure, one that
# reads the title knows why; ``error_data.details`` carries the approver's reason.
FAILED_CODE: Final = 131000
FAILED_TITLES: Final[dict[str, str]] = {
    "rejected": "Held message rejected by an approver",
    "expired": "Held message expired before approval",
    "refused": "Approved message refused by the Graph API",
    "not_sent": "Approved message could not be sent",
    "no_token": "Approved message not sent: the gateway has no send token for this number",
}


class InvalidDecision(ValueError):
    """A decision record the gateway cannot act on; the message says what is wrong, never the record's content."""


def held_message_id(send_id: str) -> str:
    """The id the gateway answers for a held send, in the shape of Meta's ids."""
    return f"wamid.{send_id}"


def author_of(value: bytes | None) -> str | None:
    """The ``X-WA-Archive-Author`` header's username, or None when absent, empty, not UTF-8 or too long."""
    if value is None:
        return None
    try:
        text = value.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    return text if 0 < len(text) <= MAX_AUTHOR_CHARS and text.isprintable() else None


def held_until(now: datetime, hours: float) -> str:
    return rfc3339_millis(now + timedelta(hours=hours))


def held_answer(request: Any, message_id: str) -> bytes:
    """Meta's answer for a message held for quality assessment, with the gateway's id."""
    to = request.get("to") if isinstance(request, dict) else None
    answer: dict[str, Any] = {"messaging_product": "whatsapp"}
    if isinstance(to, str) and to:
        answer["contacts"] = [{"input": to, "wa_id": "".join(c for c in to if c.isdigit())}]
    answer["messages"] = [{"id": message_id, "message_status": HELD_STATUS}]
    return orjson.dumps(answer)


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldDecision:
    send_id: str
    message_id: str
    phone_number_id: str
    waba_id: str
    decision: DecisionKind
    reason: str | None
    request: Any  # the send body (approved only)
    request_id: str
    decided_at: str


def _text(record: dict[str, Any], key: str, *, optional: bool = False) -> Any:
    value = record.get(key)
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value:
        raise InvalidDecision(f"{key} must be a non-empty string")
    return value


def parse_decision(value: bytes | None) -> HeldDecision:
    """A decision record (the interface of docs/asyncapi.yaml, ``wa.gateway.decisions.v1``)."""
    if value is None:
        raise InvalidDecision("an empty record")
    try:
        record = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidDecision("not JSON") from None
    if not isinstance(record, dict):
        raise InvalidDecision("not a JSON object")
    if record.get("version") != DECISION_VERSION:
        raise InvalidDecision(f"version must be {DECISION_VERSION}")
    decision = record.get("decision")
    if decision not in DECISION_KINDS:
        raise InvalidDecision(f"decision must be one of {', '.join(DECISION_KINDS)}")
    request = record.get("request")
    if decision == "approved" and not isinstance(request, dict):
        raise InvalidDecision("an approved decision carries the send body as an object")
    reason = record.get("reason")
    if reason is not None and not isinstance(reason, str):
        raise InvalidDecision("reason must be a string or null")
    return HeldDecision(
        send_id=_text(record, "send_id"),
        message_id=_text(record, "message_id"),
        phone_number_id=_text(record, "phone_number_id"),
        waba_id=_text(record, "waba_id", optional=True) or "",
        decision=decision,
        reason=reason,
        request=request if decision == "approved" else None,
        request_id=_text(record, "request_id"),
        decided_at=_text(record, "decided_at"),
    )


def recipient(request: Any) -> str | None:
    to = request.get("to") if isinstance(request, dict) else None
    return "".join(c for c in to if c.isdigit()) or None if isinstance(to, str) else None


def status_webhook(
    *,
    waba_id: str,
    phone_number_id: str,
    display_phone_number: str | None,
    message_id: str,
    recipient_id: str | None,
    timestamp: int,
    sent_message_id: str | None = None,
    failure: str | None = None,
    details: str | None = None,
) -> bytes:
    """A status webhook about the gateway's ``message_id``: ``sent`` (``sent_message_id``: Meta's real id) or, with
    ``failure`` (a key of :data:`FAILED_TITLES`), ``failed`` with ``errors[0]``."""
    status: dict[str, Any] = {
        "id": message_id,
        "status": "failed" if failure is not None else "sent",
        "timestamp": str(timestamp),
    }
    if recipient_id is not None:
        status["recipient_id"] = recipient_id
    if failure is not None:
        title = FAILED_TITLES[failure]
        status["errors"] = [
            {
                "code": FAILED_CODE,
                "title": title,
                "message": title,
                "error_data": {"details": details or title},
            }
        ]
    status["wa_archive"] = {"held_message_id": message_id, "message_id": sent_message_id}
    metadata: dict[str, str] = {"phone_number_id": phone_number_id}
    if display_phone_number is not None:
        metadata["display_phone_number"] = display_phone_number
    value = {"messaging_product": "whatsapp", "metadata": metadata, "statuses": [status]}
    body = {
        "object": "whatsapp_business_account",
        "entry": [{"id": waba_id, "changes": [{"value": value, "field": "messages"}]}],
    }
    return orjson.dumps(body)
