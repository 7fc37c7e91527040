"""What the timeline says of sends through the gateway (services/review/assembly.py): the outcome's message stands
for its attempt; an attempt whose outcome the archive does not hold (the gateway died between forwarding and
journaling it) reads "outcome unknown" once the grace time has passed, "pending" before; the console and the CLI
say so. The events are the gateway's own (services/gateway/records.py), as the archive keeps them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest

from services.cli.render import messages_table, send_outcome_words
from services.console.timeline import bubbles
from services.gateway.records import SendContext, attempt_event, outcome_event
from services.review.assembly import SEND_OUTCOME_GRACE, assemble, attempt_outcome

pytestmark = pytest.mark.unit

RECEIVED = "2026-12-07T01:00:00.000Z"
AT = datetime(2026, 12, 7, 1, 0, tzinfo=UTC)


def context(send_id: str, body: str) -> SendContext:
    request = {"messaging_product": "whatsapp", "to": "15550001111", "type": "text", "text": {"body": body}}
    return SendContext(
        send_id=send_id,
        waba_id="102290129340398",
        phone_number_id="106540352242922",
        raw=orjson.dumps(request),
        request=request,
        received_at=RECEIVED,
    )


def envelope(event: Any) -> dict[str, Any]:
    return orjson.loads(event.to_json())  # type: ignore[no-any-return]


def sent(send_id: str, body: str) -> list[dict[str, Any]]:
    ctx = context(send_id, body)
    answer = {"messages": [{"id": f"wamid.{send_id}"}], "contacts": [{"wa_id": "15550001111"}]}
    return [envelope(attempt_event(ctx)), envelope(outcome_event(ctx, outcome="sent", status=200, response=answer))]


def test_a_concluded_send_is_one_message_with_its_outcome() -> None:
    (message,) = assemble(sent("s1", "Votre commande part"), now=AT + timedelta(hours=1))
    assert (message.kind, message.direction, message.send_outcome) == ("outbound", "outbound", "sent")


def test_an_attempt_without_its_outcome_reads_unknown_after_the_grace_time_and_says_what_was_sent() -> None:
    lost = envelope(attempt_event(context("s2", "Remboursement de 40 EUR")))
    messages = assemble([*sent("s1", "Votre commande part"), lost], now=AT + SEND_OUTCOME_GRACE)
    assert [(m.kind, m.send_outcome) for m in messages] == [("outbound", "sent"), ("send_attempt", "unknown")]
    (bubble,) = [b for b in bubbles(messages) if b.kind == "send_attempt"]
    assert (bubble.direction, bubble.content.text, bubble.send_outcome) == (
        "outbound",
        "Remboursement de 40 EUR",
        "unknown",
    )
    assert messages[1].to_json()["send_outcome"] == "unknown"
    rows = messages_table(messages).columns[3]._cells  # the CLI's status column
    assert rows == ["-", "outcome unknown (may have reached the customer)"]


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        pytest.param(AT + timedelta(seconds=30), "pending", id="within the grace time: pending"),
        pytest.param(AT + SEND_OUTCOME_GRACE, "unknown", id="grace time passed: unknown"),
        pytest.param(None, "unknown", id="no clock: unknown"),
    ],
)
def test_attempt_outcome(now: datetime | None, expected: str) -> None:
    assert attempt_outcome({"received_at": RECEIVED}, now) == expected


def test_an_attempt_whose_time_cannot_be_read_is_unknown() -> None:
    assert attempt_outcome({"received_at": "yesterday"}, AT) == "unknown"
    assert attempt_outcome({}, AT) == "unknown"


def test_a_refused_send_keeps_its_outcome_and_an_attempt_with_no_gateway_part_stands_alone() -> None:
    ctx = context("s3", "x")
    refused = envelope(outcome_event(ctx, outcome="refused", status=400, response={"error": {"code": 131056}}))
    odd = envelope(attempt_event(ctx)) | {"payload": {"request": ctx.request}}
    messages = assemble([refused, odd], now=AT + timedelta(hours=1))
    assert sorted((m.kind, m.send_outcome) for m in messages) == [("outbound", "refused"), ("send_attempt", "unknown")]
    assert send_outcome_words("sent") is None
