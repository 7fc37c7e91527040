"""The pure part of held messages (services/governance/held_sends.py): what a ``send_held`` event asks for, and
the decision record the gateway consumes."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from devtools.pipeline import Person
from services.archiver.held import held_reason, held_sends_of
from services.governance.held_sends import InvalidHeldSend, decision_record, held_send_of, record_bytes
from tests.helpers.held_sends import held_event, text_send

PERSON = Person("100000000000001", "200000000000002", "15550001234")
UNTIL = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
REF = "a" * 64


def event_with(**gateway: Any) -> Any:
    event = held_event(PERSON, text_send(PERSON, "Remboursement de 49,90 €"), held_until=UNTIL, send_id="s1")
    payload = {**event.payload, "gateway": {**event.payload["gateway"], **gateway}}
    return dataclasses.replace(event, payload=payload)


def test_a_held_send_names_references_only() -> None:
    held = held_send_of(event_with(), REF)
    assert held.requester == "agent.held-author"
    assert held.held_until == UNTIL
    target = held.target()
    assert target == {
        "send_id": "s1",
        "message_id": "wamid.gws1",
        "phone_number_id": PERSON.phone_number_id,
        "waba_id": PERSON.waba_id,
        "subject_ref": REF,
        "event_id": held.event_id,
        "rules": ["refund-amount"],
    }
    text = orjson.dumps(target).decode() + held_reason(held)
    assert PERSON.wa_id not in text
    assert "49,90" not in text


def test_without_an_author_the_gateway_of_the_number_asks() -> None:
    assert held_send_of(event_with(author=None), REF).requester == f"gateway:{PERSON.phone_number_id}"


def test_held_until_in_another_zone_is_the_same_moment() -> None:
    paris = UNTIL.astimezone(timezone(timedelta(hours=1))).isoformat()
    assert held_send_of(event_with(held_until=paris), REF).held_until == UNTIL


@pytest.mark.parametrize(
    ("gateway", "reason"),
    [
        pytest.param({"send_id": None}, "send_id", id="no send id"),
        pytest.param({"message_id": ""}, "message_id", id="empty message id"),
        pytest.param({"rules": "refund"}, "rules", id="rules not a list"),
        pytest.param({"rules": [1]}, "rule", id="a rule not a name"),
        pytest.param({"rules": ["x" * 101]}, "longer", id="a rule name too long"),
        pytest.param({"held_until": "tomorrow"}, "ISO-8601", id="held_until not a time"),
        pytest.param({"held_until": "2026-12-07T12:00:00"}, "time zone", id="held_until without a zone"),
        pytest.param({"author": 7}, "author", id="author not a string"),
    ],
)
def test_an_invalid_held_send_says_why_without_its_values(gateway: dict[str, Any], reason: str) -> None:
    with pytest.raises(InvalidHeldSend, match=reason) as caught:
        held_send_of(event_with(**gateway), REF)
    assert PERSON.wa_id not in str(caught.value)


def test_an_invalid_held_send_is_left_out_and_the_others_kept(caplog: pytest.LogCaptureFixture) -> None:
    good, bad = event_with(), event_with(send_id=None)
    other = dataclasses.replace(good, kind="send_attempt")
    assert [h.send_id for h in held_sends_of([(good, REF), (bad, REF), (other, REF)])] == ["s1"]
    assert bad.event_id in caplog.text
    assert "send_id" in caplog.text


@pytest.mark.parametrize(
    ("decision", "reason", "body", "error"),
    [
        pytest.param("approved", None, {"type": "text"}, None, id="approved with its body"),
        pytest.param("rejected", "IBAN in clear", None, None, id="rejected with a reason"),
        pytest.param("expired", None, None, None, id="expired"),
        pytest.param("approved", None, None, "body", id="approved without a body"),
        pytest.param("rejected", None, {"type": "text"}, "body", id="a body with a rejection"),
        pytest.param("expired", "late", None, "reason", id="a reason with an expiry"),
    ],
)
def test_the_decision_record(decision: Any, reason: str | None, body: Any, error: str | None) -> None:
    target = held_send_of(event_with(), REF).target()
    decided = datetime(2026, 12, 7, 10, 30, tzinfo=UTC)

    def build() -> dict[str, Any]:
        return decision_record(
            target, decision=decision, request_id="r-1", decided_at=decided, reason=reason, request=body
        )

    if error is not None:
        with pytest.raises(ValueError, match=error):
            build()
        return
    record = build()
    assert record == {
        "version": 1,
        "send_id": "s1",
        "message_id": "wamid.gws1",
        "phone_number_id": PERSON.phone_number_id,
        "waba_id": PERSON.waba_id,
        "decision": decision,
        "reason": reason,
        "request": body,
        "request_id": "r-1",
        "decided_at": "2026-12-07T10:30:00Z",
    }
    key, value = record_bytes(record)
    assert key == PERSON.phone_number_id.encode()
    assert orjson.loads(value) == record
