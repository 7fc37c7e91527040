"""The journal records of one send through the gateway (pure): the request before it is forwarded, the outcome
after (docs/ARCHIVE_FORMAT.md, docs/asyncapi.yaml).

1. ``send_attempt`` — journaled (acks=all) *before* the request is forwarded: the request as the company sent it,
   under the person it is addressed to. Nothing reaches Meta that this record does not hold; should the gateway
   die between forwarding and journaling the outcome, this record is what the archive keeps of the send.
2. ``outbound`` — journaled once the outcome is known: the same envelope an outbound report to ingest's
   ``/v1/outbound`` makes (services/ingest/outbound.py; the same event id for the same wamid, so a company that
   still reports its sends does not archive them twice), with ``gateway`` added to the payload: the send's id, its
   :data:`Outcome`, Meta's HTTP status, and — when the gateway knows them — the text a template showed and the
   staged medium the send used.

Both are keyed like every event of the person (``<phone_number_id>:<wa_id>``), so they keep their order on one
partition. Neither carries the ``Authorization`` header: the bearer token is never journaled.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias, get_args

from services.core.events import Delivery, Event, Subject, derive_event_id
from services.core.vocabulary import EventKind

# What became of a send: Meta accepted it (2xx), refused it (its error answer), the answer was lost after the
# request may have left (a timeout, a reset: Meta may have sent it), or it never left (no connection to Meta).
Outcome: TypeAlias = Literal["sent", "refused", "unknown", "not_sent"]
OUTCOMES: Final[tuple[Outcome, ...]] = get_args(Outcome)


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True, slots=True, kw_only=True)
class SendContext:
    """What the gateway knows of one send before forwarding it."""

    send_id: str  # the gateway's own id of this send (random, no personal data)
    waba_id: str
    phone_number_id: str
    raw: bytes  # the request body as received
    request: Any  # the request body decoded (any JSON value; a send Meta will refuse is archived as well)
    received_at: str
    # A held send, approved and now sent: what links its records to the held draft (``held_send_id``, the gateway's
    # ``held_message_id``, the approval's ``request_id``), added to the payload's ``gateway`` object.
    held: Mapping[str, str] | None = None

    @property
    def subject(self) -> Subject | None:
        request = self.request if isinstance(self.request, dict) else {}
        if request.get("recipient_type") == "group":
            return None
        wa_id = _text(request.get("to"))
        user_id = _text(request.get("recipient"))
        return Subject(wa_id=wa_id.lstrip("+") if wa_id else None, user_id=user_id) if (wa_id or user_id) else None

    @property
    def group_id(self) -> str | None:
        request = self.request if isinstance(self.request, dict) else {}
        return _text(request.get("to")) if request.get("recipient_type") == "group" else None

    @property
    def message_type(self) -> str:
        request = self.request if isinstance(self.request, dict) else {}
        return _text(request.get("type")) or "text"


def _request_event(context: SendContext, kind: EventKind, gateway: dict[str, Any]) -> Event:
    """An event of the request as the company sent it, under the person it is addressed to (``send_attempt``,
    ``send_held``): keyed by the send's own id, with ``gateway`` (the send's id and what the kind adds)."""
    return Event(
        event_id=derive_event_id(context.waba_id, kind, context.phone_number_id, (context.send_id,)),
        kind=kind,
        field="gateway",
        received_at=context.received_at,
        waba_id=context.waba_id,
        phone_number_id=context.phone_number_id,
        subject=context.subject,
        message_id=None,
        original_message_id=None,
        timestamp=None,
        type=context.message_type,
        payload={
            "phone_number_id": context.phone_number_id,
            "waba_id": context.waba_id,
            "request": context.request,
            "gateway": gateway,
        },
        contact=None,
        delivery=Delivery(sha256=hashlib.sha256(context.raw).hexdigest(), signature=None),
        group_id=context.group_id,
    )


def attempt_event(context: SendContext) -> Event:
    """The ``send_attempt`` event journaled before forwarding."""
    return _request_event(context, "send_attempt", {"send_id": context.send_id, **(context.held or {})})


def held_event(
    context: SendContext,
    *,
    message_id: str,
    rules: Sequence[str],
    author: str | None,
    held_until: str,
    text: str | None = None,
) -> Event:
    """The ``send_held`` event journaled (acks=all) instead of forwarding a send a policy rule matched: keyed, and
    filed under the person, as its ``send_attempt`` would be. ``rules`` are rule names (no personal data);
    ``author`` the sending agent's username from ``X-WA-Archive-Author``, if given; ``text`` a template's text as
    the customer would see it (optional: when the template cache has its definition), for the approver."""
    gateway: dict[str, Any] = {
        "send_id": context.send_id,
        "message_id": message_id,
        "rules": list(rules),
        "author": author,
        "held_until": held_until,
    }
    if text is not None:
        gateway["text"] = text
    return _request_event(context, "send_held", gateway)


def wamid(response: Any) -> str | None:
    """The message id of Meta's send answer (``messages[0].id``), or None."""
    messages = response.get("messages") if isinstance(response, dict) else None
    first = messages[0] if isinstance(messages, list) and messages else None
    return _text(first.get("id")) if isinstance(first, dict) else None


def outcome_of(status: int | None, response: Any) -> Outcome:
    """``sent`` for a 2xx answer with a message id, ``refused`` for any other answer; None status: ``unknown``."""
    if status is None:
        return "unknown"
    return "sent" if 200 <= status < 300 and wamid(response) is not None else "refused"


def outcome_event(
    context: SendContext,
    *,
    outcome: Outcome,
    status: int | None,
    response: Any,
    text: str | None = None,
    media: dict[str, Any] | None = None,
) -> Event:
    """The ``outbound`` event of a send's outcome (module docstring). ``response`` is Meta's answer decoded (None
    when there was none, or it was not JSON); ``text`` the template's text as the customer saw it; ``media`` the
    staged medium the send used (services/gateway/staging.py)."""
    message_id = wamid(response) if outcome == "sent" else None
    contacts = response.get("contacts") if isinstance(response, dict) else None
    contact = contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else None
    subject = context.subject
    if subject is not None and contact is not None and outcome == "sent":
        subject = Subject(wa_id=_text(contact.get("wa_id")) or subject.wa_id, user_id=subject.user_id)
    # A wamid names the message once, whoever reports it (ingest's /v1/outbound derives the same id); without one,
    # the send's own id does.
    identity = (message_id,) if message_id is not None else ("gateway", context.send_id)
    gateway: dict[str, Any] = {"send_id": context.send_id, "outcome": outcome, "http_status": status}
    gateway.update(context.held or {})
    if text is not None:
        gateway["text"] = text
    if media is not None:
        gateway["media"] = media
    return Event(
        event_id=derive_event_id(context.waba_id, "outbound", context.phone_number_id, identity),
        kind="outbound",
        field="outbound",
        received_at=context.received_at,
        waba_id=context.waba_id,
        phone_number_id=context.phone_number_id,
        subject=subject,
        message_id=message_id,
        original_message_id=None,
        timestamp=None,
        type=context.message_type,
        payload={
            "phone_number_id": context.phone_number_id,
            "waba_id": context.waba_id,
            "request": context.request,
            "response": response,
            "gateway": gateway,
        },
        contact=contact if outcome == "sent" else None,
        delivery=Delivery(sha256=hashlib.sha256(context.raw).hexdigest(), signature=None),
        group_id=context.group_id,
    )
