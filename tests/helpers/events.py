"""An :class:`Event` built by keyword with plausible defaults, for the pure steps' tests."""

from __future__ import annotations

from typing import Any

from services.core.events import Delivery, Event, Subject
from services.core.vocabulary import EventKind


def event(
    *,
    kind: EventKind = "message",
    type_: str | None = "text",
    phone_number_id: str | None = "106540352242922",
    waba_id: str = "102290129340398",
    wa_id: str | None = "16505551234",
    user_id: str | None = None,
    message_id: str | None = "wamid.A",
    timestamp: int | None = 1_760_000_000,
    received_at: str = "2026-12-01T11:59:59.123Z",
    payload: Any = None,
    seed: str = "a",
) -> Event:
    subject = Subject(wa_id, user_id) if (wa_id or user_id) else None
    return Event(
        event_id=(seed * 32)[:32],
        kind=kind,
        field="messages",
        received_at=received_at,
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        subject=subject,
        message_id=message_id,
        original_message_id=None,
        timestamp=timestamp,
        type=type_,
        payload=payload if payload is not None else {"type": type_, "text": {"body": "Bonjour"}},
        contact=None,
        delivery=Delivery("0" * 64, None),
    )
