"""Held sends' shapes (services/gateway/held.py, services/gateway/records.py): the answer the company gets, the
``send_held`` event, the decision records the gateway accepts, and the status webhooks it journals — each checked
against docs/asyncapi.yaml and read back by the same splitter the archiver uses."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from devtools.samples import REPO_ROOT
from services.core.events import decode_webhook, parse_webhook, webhook_scope
from services.core.journal import GATEWAY_ORIGIN, webhook_record
from services.gateway.held import (
    InvalidDecision,
    author_of,
    held_answer,
    held_message_id,
    held_until,
    parse_decision,
    status_webhook,
)
from services.gateway.records import SendContext, attempt_event, held_event
from services.ingest.signature import SignatureVerifier, app_id, sign

pytestmark = pytest.mark.unit

SECRET = b"app-secret-for-held-statuses"
REQUEST = {"messaging_product": "whatsapp", "to": "+33612345678", "type": "text", "text": {"body": "promo"}}


@cache
def schemas() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docs" / "asyncapi.yaml").read_text())
    found: dict[str, Any] = loaded["components"]["schemas"]
    return found


def check(name: str, value: Any) -> None:
    jsonschema.Draft202012Validator(schemas()[name]).validate(value)


def context(**overrides: Any) -> SendContext:
    fields: dict[str, Any] = {
        "send_id": "5f0c" * 8,
        "waba_id": "1022",
        "phone_number_id": "1065",
        "raw": orjson.dumps(REQUEST),
        "request": REQUEST,
        "received_at": "2026-12-07T01:00:00.000Z",
    } | overrides
    return SendContext(**fields)


def test_the_held_answer_is_metas_own_with_the_gateways_id() -> None:
    assert orjson.loads(held_answer(REQUEST, held_message_id("abc"))) == {
        "messaging_product": "whatsapp",
        "contacts": [{"input": "+33612345678", "wa_id": "33612345678"}],
        "messages": [{"id": "wamid.abc", "message_status": "held_for_quality_assessment"}],
    }


def test_the_send_held_event_is_filed_under_the_person_with_rule_names_only() -> None:
    until = held_until(datetime(2026, 12, 7, 1, tzinfo=UTC), 24)
    event = held_event(context(), message_id="wamid.x", rules=["iban", "amount"], author="agent.ana", held_until=until)
    again = held_event(context(), message_id="wamid.x", rules=["iban", "amount"], author="agent.ana", held_until=until)
    assert event.event_id == again.event_id != attempt_event(context()).event_id
    assert (event.kind, event.field, event.key()) == ("send_held", "gateway", b"1065:33612345678")
    assert event.payload["gateway"] == {
        "send_id": "5f0c" * 8,
        "message_id": "wamid.x",
        "rules": ["iban", "amount"],
        "author": "agent.ana",
        "held_until": "2026-12-08T01:00:00.000Z",
    }
    assert event.payload["request"] == REQUEST
    check("envelope", orjson.loads(event.to_json()))


def test_a_held_templates_text_is_kept_for_the_approver() -> None:
    event = held_event(context(), message_id="m", rules=["marketing"], author=None, held_until="t", text="Hello Ana")
    assert event.payload["gateway"]["text"] == "Hello Ana"
    check("envelope", orjson.loads(event.to_json()))


def test_an_approved_sends_attempt_names_the_held_draft() -> None:
    held = {"held_send_id": "s", "held_message_id": "wamid.s", "request_id": "r", "decided_at": "t"}
    event = attempt_event(context(held=held))
    assert event.payload["gateway"] == {"send_id": "5f0c" * 8, **held}


@pytest.mark.parametrize(
    ("value", "author"),
    [
        pytest.param(b"agent.ana", "agent.ana", id="a username"),
        pytest.param(b"  lead.emma ", "lead.emma", id="trimmed"),
        pytest.param(b"", None, id="empty"),
        pytest.param(b"\xff\xfe", None, id="not UTF-8"),
        pytest.param(b"a" * 129, None, id="too long"),
        pytest.param(None, None, id="absent"),
    ],
)
def test_the_author_header(value: bytes | None, author: str | None) -> None:
    assert author_of(value) == author


DECISION = {
    "version": 1,
    "send_id": "s1",
    "message_id": "wamid.s1",
    "phone_number_id": "1065",
    "waba_id": "1022",
    "decision": "approved",
    "reason": None,
    "request": REQUEST,
    "request_id": "r1",
    "decided_at": "2026-12-07T01:05:00.000Z",
}


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        pytest.param({}, None, id="approved"),
        pytest.param({"decision": "rejected", "reason": "no promises of refunds", "request": None}, None, id="rej"),
        pytest.param({"decision": "expired"}, None, id="expired (a request given is dropped)"),
        pytest.param({"version": 2}, "version", id="another version"),
        pytest.param({"decision": "maybe"}, "decision must be", id="an unknown decision"),
        pytest.param({"request": None}, "send body", id="approved without a body"),
        pytest.param({"send_id": ""}, "send_id", id="no send id"),
        pytest.param({"reason": 3}, "reason", id="a reason not text"),
    ],
)
def test_decision_records(changes: dict[str, Any], error: str | None) -> None:
    record = DECISION | changes
    if error is None:
        decision = parse_decision(orjson.dumps(record))
        assert (decision.send_id, decision.decision) == ("s1", record["decision"])
        assert (decision.request is not None) == (record["decision"] == "approved")
        check("decision", record)
    else:
        with pytest.raises(InvalidDecision, match=error):
            parse_decision(orjson.dumps(record))


@pytest.mark.parametrize("value", [None, b"", b"[]", b"{", b'"x"'])
def test_what_is_not_a_decision_is_refused_without_its_content(value: bytes | None) -> None:
    with pytest.raises(InvalidDecision):
        parse_decision(value)


@pytest.mark.parametrize(
    ("outcome", "status"),
    [
        pytest.param({"sent_message_id": "wamid.REAL"}, "sent", id="sent, with Meta's id"),
        pytest.param({"failure": "rejected", "details": "no refunds by message"}, "failed", id="rejected"),
        pytest.param({"failure": "expired"}, "failed", id="expired"),
    ],
)
def test_a_status_webhook_is_read_as_metas_are_and_signed_with_the_app_secret(
    outcome: dict[str, Any], status: str
) -> None:
    body = status_webhook(
        waba_id="1022",
        phone_number_id="1065",
        display_phone_number="15550001111",
        message_id="wamid.s1",
        recipient_id="33612345678",
        timestamp=1_796_000_000,
        **outcome,
    )
    assert webhook_scope(decode_webhook(body)) == ("1065", frozenset({"1065"}))
    (event,) = parse_webhook(body, raw_sha256=hashlib.sha256(body).hexdigest(), signature=None, received_at="t")
    assert (event.kind, event.message_id, event.key()) == ("status", "wamid.s1", b"1065:33612345678")
    value = orjson.loads(body)["entry"][0]["changes"][0]["value"]["statuses"][0]
    assert value["status"] == status
    assert value["wa_archive"] == {"held_message_id": "wamid.s1", "message_id": outcome.get("sent_message_id")}
    if status == "failed":
        assert value["errors"][0]["error_data"]["details"] == outcome.get("details") or value["errors"][0]["title"]
    record = webhook_record(
        "t", "1065", body, signature=sign(body, SECRET), received_at="2026-12-07T01:00:00.000Z",
        app=app_id(SECRET), origin=GATEWAY_ORIGIN,
    )  # fmt: skip
    headers = {name: raw.decode() for name, raw in record.headers}
    check("webhookHeaders", headers)
    check("webhookBody", orjson.loads(body))
    assert headers["wa-origin"] == "gateway"
    assert SignatureVerifier([SECRET]).verify(record.value, headers["wa-signature"])
