"""docs/asyncapi.yaml says what the code produces: the journal record, the event envelope, the dead letter."""

from __future__ import annotations

import hashlib
from functools import cache
from typing import Any

import jsonschema
import orjson
import pytest
import yaml

from devtools.samples import REPO_ROOT, payloads_dir
from services.archiver.sealing import RawRecord, dead_letter, decode_record
from services.core.events import decode_webhook, parse_webhook, webhook_scope
from services.core.journal import event_record, webhook_record
from services.core.kafka import MAX_RECORD_BYTES, PROTOCOL_OVERHEAD_BYTES
from services.core.settings import KafkaSettings
from services.core.vocabulary import EVENT_KIND_SET
from services.ingest.outbound import outbound_event

pytestmark = pytest.mark.unit

SIGNATURE = "sha256=" + "0f" * 32
RECEIVED_AT = "2026-12-01T10:00:00.123Z"
UNSTORABLE_VALUE = {"metadata": {"phone_number_id": "\x00"}}


@cache
def document() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "docs" / "asyncapi.yaml").read_text())
    return loaded


def schema(name: str) -> dict[str, Any]:
    found: dict[str, Any] = document()["components"]["schemas"][name]
    return found


def check(name: str, value: Any) -> None:
    jsonschema.Draft202012Validator(schema(name)).validate(value)


def headers_of(headers: tuple[tuple[str, bytes], ...]) -> dict[str, str]:
    return {name: value.decode() for name, value in headers}


def samples() -> list[bytes]:
    return [path.read_bytes() for path in sorted(payloads_dir().glob("*.json"))]


def test_the_document_names_the_topics_the_services_use() -> None:
    doc = document()
    assert doc["asyncapi"] == "3.0.0"
    jsonschema.Draft202012Validator.check_schema(schema("envelope"))
    channels = doc["channels"]
    assert channels["events"]["address"] == KafkaSettings.model_fields["events_topic"].default
    assert channels["deadLetters"]["address"] == KafkaSettings.model_fields["dlq_topic"].default
    for channel in channels.values():
        limit = channel["bindings"]["kafka"]["topicConfiguration"]["max.message.bytes"]
        assert limit == MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES


def test_the_document_lists_exactly_the_kinds_the_code_produces() -> None:
    assert set(schema("envelope")["properties"]["kind"]["enum"]) == EVENT_KIND_SET


@pytest.mark.parametrize("raw", samples())
def test_journal_records_and_their_events_match_the_document(raw: bytes) -> None:
    scope = webhook_scope(decode_webhook(raw))[0]
    record = webhook_record("t", scope, raw, signature=SIGNATURE, received_at=RECEIVED_AT)
    check("webhookHeaders", headers_of(record.headers))
    check("webhookBody", orjson.loads(record.value))
    events = parse_webhook(raw, raw_sha256=hashlib.sha256(raw).hexdigest(), signature=SIGNATURE, received_at="x")
    for event in events:
        check("envelope", orjson.loads(event.to_json()))
        check("eventHeaders", headers_of(event_record("t", event).headers))


def test_an_outbound_record_matches_the_document() -> None:
    report = {
        "phone_number_id": "106540352242922",
        "request": {"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {"body": "Hi"}},
        "response": {"messaging_product": "whatsapp", "messages": [{"id": "wamid.OUT"}]},
    }
    record = event_record("t", outbound_event(orjson.dumps(report), received_at=RECEIVED_AT))
    check("eventHeaders", headers_of(record.headers))
    check("envelope", orjson.loads(record.value))


def test_a_bad_envelope_is_refused_by_the_schema() -> None:
    (event,) = parse_webhook(samples()[0], raw_sha256="0" * 64, signature=None, received_at="x")
    envelope = orjson.loads(event.to_json())
    with pytest.raises(jsonschema.ValidationError):
        check("envelope", {**envelope, "extra": 1})
    with pytest.raises(jsonschema.ValidationError):
        check("envelope", {**envelope, "event_id": "not hex"})


@pytest.mark.parametrize(
    "raw",
    [
        pytest.param(
            RawRecord(partition=0, offset=4, timestamp_ms=0, key=b"k", value=b"not json"), id="not an envelope"
        ),
        pytest.param(
            RawRecord(
                partition=0,
                offset=4,
                timestamp_ms=0,
                key=b"k",
                value=b'{"object": "page"}',
                headers=(("wa-format", b"webhook/1"), ("wa-received-at", b"x")),
            ),
            id="unsplittable webhook",
        ),
        pytest.param(
            RawRecord(
                partition=0,
                offset=4,
                timestamp_ms=0,
                key=b"k",
                value=orjson.dumps(
                    {
                        "object": "whatsapp_business_account",
                        "entry": [
                            {"id": "1", "changes": [{"field": "x", "value": {"metadata": {"phone_number_id": "\x00"}}}]}
                        ],
                    }
                ),
                headers=(("wa-format", b"webhook/1"), ("wa-received-at", RECEIVED_AT.encode())),
            ),
            id="one unstorable event",
        ),
    ],
)
def test_dead_letters_match_the_document(raw: RawRecord) -> None:
    (dead,) = decode_record(raw)
    assert dead.poison is not None
    letter = dead_letter("dlq", "wa.events.v1", dead)
    headers = headers_of(letter.headers)
    check("deadLetterHeaders", headers)
    assert headers["wa-source"] == "wa.events.v1/0/4"
    listed = schema("deadLetterHeaders")["properties"]["wa-dlq-reason"]["description"]
    prefix = headers["wa-dlq-reason"].split(":")[0]
    assert f'"{prefix.split(" ")[0]}' in listed, "every reason's first word is listed in the document"
