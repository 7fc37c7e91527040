"""Held messages in the tests: ``send_held`` events as the send gateway journals them (the interface of issue 27
item 2, services/gateway/records.py ``attempt_event`` with ``kind="send_held"``), and the decision records read
back from their topic."""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from devtools.pipeline import Person
from services.core.events import Delivery, Event, Subject, derive_event_id
from services.core.vocabulary import rfc3339_millis

AUTHOR = "agent.held-author"


def text_send(person: Person, body: str) -> dict[str, Any]:
    """A send body as the company posts it to ``/{phone-number-id}/messages``."""
    return {"messaging_product": "whatsapp", "to": person.wa_id, "type": "text", "text": {"body": body}}


def held_event(
    person: Person,
    request: Mapping[str, Any],
    *,
    held_until: datetime,
    author: str | None = AUTHOR,
    rules: tuple[str, ...] = ("refund-amount",),
    send_id: str | None = None,
    received_at: datetime | None = None,
) -> Event:
    """The ``send_held`` event of ``request`` held for ``person`` until ``held_until``."""
    send_id = send_id or uuid.uuid4().hex
    raw = orjson.dumps(dict(request))
    return Event(
        event_id=derive_event_id(person.waba_id, "send_held", person.phone_number_id, (send_id,)),
        kind="send_held",
        field="gateway",
        received_at=rfc3339_millis(received_at or held_until),
        waba_id=person.waba_id,
        phone_number_id=person.phone_number_id,
        subject=Subject(wa_id=person.wa_id, user_id=None),
        message_id=None,
        original_message_id=None,
        timestamp=None,
        type=str(request.get("type") or "text"),
        payload={
            "phone_number_id": person.phone_number_id,
            "waba_id": person.waba_id,
            "request": dict(request),
            "gateway": {
                "send_id": send_id,
                "message_id": f"wamid.gw{send_id}",
                "rules": list(rules),
                "author": author,
                "held_until": held_until.isoformat(),
            },
        },
        contact=None,
        delivery=Delivery(sha256=hashlib.sha256(raw).hexdigest(), signature=None),
        group_id=None,
    )


async def decision_records(
    bootstrap: str, topic: str, expected: int, *, send_ids: set[str] | None = None, timeout_s: float = 20
) -> list[dict[str, Any]]:
    """The records of ``topic`` once ``expected`` of them are there (with ``send_ids``: counting and returning only
    the records of these sends; the shared database's other expired holds may be swept onto the topic too), and
    any more that arrive within a short poll after (a duplicate would be there), each with its key as ``_key``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[dict[str, Any]] = []

    def take(batch: dict[Any, list[Any]]) -> None:
        for records in batch.values():
            for r in records:
                value = {**orjson.loads(r.value or b"{}"), "_key": (r.key or b"").decode()}
                if send_ids is None or value.get("send_id") in send_ids:
                    found.append(value)

    try:
        deadline = time.monotonic() + timeout_s
        while len(found) < expected and time.monotonic() < deadline:
            take(await consumer.getmany(timeout_ms=500))
        take(await consumer.getmany(timeout_ms=300))
    finally:
        await consumer.stop()
    return found
