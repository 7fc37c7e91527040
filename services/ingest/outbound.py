"""Outbound capture: the company's own systems report what they sent through the Cloud API.

The Cloud API never echoes the content of API-sent messages (only their statuses), so without this report the
archive would hold one side of the conversation. The report is the send request body and Meta's response:

    {"phone_number_id": "1065…", "waba_id": "1022…" (optional),
     "request":  {"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {...}},
     "response": {"messaging_product": "whatsapp", "contacts": [{"input": "…", "wa_id": "16505551234"}],
                  "messages": [{"id": "wamid.…"}]}}

A message sent to a group (``"recipient_type": "group"``, ``to`` the group id) is the business's own record of
the group: it has no person as subject and carries the group id (services/core/events.py).
"""

from __future__ import annotations

import hashlib
from typing import Any

import orjson

from services.core.events import Delivery, Event, Subject, WebhookRejected


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _reject(reason: str) -> WebhookRejected:
    return WebhookRejected(400, reason)


def outbound_event(raw: bytes, *, received_at: str) -> Event:
    """Build the ``outbound`` event of one report; raises WebhookRejected(400) with a clear reason when the
    report lacks what makes it archivable (phone_number_id, the request, the wamid Meta answered with)."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise _reject("body is not JSON") from None
    if not isinstance(body, dict):
        raise _reject("body must be a JSON object")
    phone_number_id = _text(body.get("phone_number_id"))
    request, response = body.get("request"), body.get("response")
    if phone_number_id is None:
        raise _reject("phone_number_id is required")
    if not isinstance(request, dict) or not isinstance(response, dict):
        raise _reject("request and response must both be JSON objects")
    messages = response.get("messages")
    message_id = (
        _text(messages[0].get("id"))
        if isinstance(messages, list) and messages and isinstance(messages[0], dict)
        else None
    )
    if message_id is None:
        raise _reject("response.messages[0].id (the wamid) is required")
    contacts = response.get("contacts")
    contact = contacts[0] if isinstance(contacts, list) and contacts and isinstance(contacts[0], dict) else None
    group_id = _text(request.get("to")) if request.get("recipient_type") == "group" else None
    if group_id is not None:
        contact, wa_id, user_id = None, None, None  # sent to the group: no one person's record
    else:
        wa_id = _text(contact.get("wa_id")) if contact else None
        user_id = _text(contact.get("user_id")) if contact else None
        wa_id = wa_id or _text(request.get("to"))
        user_id = user_id or _text(request.get("recipient"))
    waba_id = _text(body.get("waba_id")) or ""
    identity = "\x1f".join(("v1", waba_id, "outbound", phone_number_id, message_id))
    return Event(
        event_id=hashlib.sha256(identity.encode()).hexdigest()[:32],
        kind="outbound",
        field="outbound",
        received_at=received_at,
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        subject=Subject(wa_id=wa_id, user_id=user_id) if (wa_id or user_id) else None,
        message_id=message_id,
        original_message_id=None,
        timestamp=None,
        type=_text(request.get("type")) or "text",
        payload=body,
        contact=contact,
        delivery=Delivery(sha256=hashlib.sha256(raw).hexdigest(), signature=None),
        group_id=group_id,
    )
