"""ingest over real HTTP against the real Kafka: every sample webhook is journaled verbatim, one record per POST,
keyed by business number, and splits into the events the archiver archives."""

from __future__ import annotations

import hashlib
import json
import secrets
import subprocess
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from devtools.broker import create_topic, read_records, read_topic
from devtools.pipeline import journaled_events
from devtools.samples import payloads_dir
from devtools.serving import serve_asgi
from services.core.events import Event, decode_webhook, parse_webhook, webhook_scope
from services.core.journal import (
    APP_HEADER,
    EVENT_FORMAT,
    FORMAT_HEADER,
    RECEIVED_AT_HEADER,
    SIGNATURE_HEADER,
    WEBHOOK_FORMAT,
)
from services.core.settings import KafkaSettings
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.ingest.signature import app_id, sign
from services.tools.replay import load_bodies, post_signed

pytestmark = pytest.mark.integration

SECRET = b"integration-app-secret"
OUTBOUND_TOKEN = secrets.token_urlsafe(24)


def ingest_settings(bootstrap: str, topic: str, deadline_s: float = 5.0) -> IngestSettings:
    return IngestSettings(
        app_secrets=[SecretStr(SECRET.decode())],
        verify_token=SecretStr("verify"),
        outbound_tokens=[SecretStr(OUTBOUND_TOKEN)],
        kafka=KafkaSettings(bootstrap_servers=bootstrap, events_topic=topic),
        produce_deadline_s=deadline_s,
    )


@pytest.fixture
async def topic(kafka_bootstrap: str) -> str:
    return await create_topic(kafka_bootstrap)


@pytest.fixture
async def ingest_url(kafka_bootstrap: str, topic: str) -> AsyncIterator[str]:
    app = IngestApp(ingest_settings(kafka_bootstrap, topic))
    async with serve_asgi(app) as url:
        await app.producer.wait_connected(20)
        yield url


def expected_events(bodies: list[tuple[str, bytes]]) -> list[Event]:
    events: list[Event] = []
    for _name, body in bodies:
        events.extend(parse_webhook(body, raw_sha256=hashlib.sha256(body).hexdigest(), signature=None, received_at="x"))
    return events


async def test_every_sample_payload_is_journaled_verbatim_keyed_by_business_number(
    kafka_bootstrap: str, topic: str, ingest_url: str
) -> None:
    bodies = load_bodies([payloads_dir()])
    assert len(bodies) >= 50
    async with httpx.AsyncClient(timeout=10) as client:
        for name, body in bodies:
            status = await post_signed(client, f"{ingest_url}/webhooks/whatsapp", body, SECRET, attempts=1)
            assert status == 200, name
    records = await read_records(kafka_bootstrap, topic, len(bodies))
    assert len(records) == len(bodies), "one record per POST"
    by_body = {value: (key, dict(headers)) for key, value, headers in records}
    for name, body in bodies:
        key, headers = by_body[body]  # the exact signed bytes
        assert key.decode() == webhook_scope(decode_webhook(body))[0], name
        assert headers[FORMAT_HEADER] == WEBHOOK_FORMAT
        assert headers[SIGNATURE_HEADER].decode() == sign(body, SECRET)
        assert headers[APP_HEADER].decode() == app_id(SECRET)  # which app it was verified for, not the secret
        assert headers[RECEIVED_AT_HEADER].decode().endswith("Z")
    # The archiver's split gives the events (and ids) ingest used to produce itself.
    expected = expected_events(bodies)
    split = journaled_events(records)
    assert sorted(e.event_id for e in split) == sorted(e.event_id for e in expected)
    assert all(e.delivery.signature is not None and e.delivery.signature.startswith("sha256=") for e in split)

    # The metrics count what Kafka acknowledged: per route, per request, and when each business number last had one.
    async with httpx.AsyncClient(timeout=10) as client:
        exposition = (await client.get(f"{ingest_url}/metrics")).text
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }
    assert samples[("wa_ingest_records_produced_total", (("route", "webhook"),))] == len(bodies)
    assert samples[("wa_ingest_requests_total", (("outcome", "ok"), ("route", "webhook")))] == len(bodies)
    acknowledged = {
        dict(labels)["phone_number_id"]
        for (name, labels), value in samples.items()
        if name == "wa_ingest_last_acknowledged_timestamp_seconds" and value > 0
    }
    assert acknowledged == {event.phone_number_id for event in expected if event.phone_number_id}


async def test_a_post_at_the_body_cap_is_journaled_whole(kafka_bootstrap: str, topic: str, ingest_url: str) -> None:
    """Meta sends up to 3 MB in one POST; the record holds all of it (Kafka's default stops near 1 MB)."""
    item = orjson.loads((payloads_dir() / "inbound_text.json").read_bytes())
    messages = item["entry"][0]["changes"][0]["value"]["messages"]
    template = messages[0]
    while len(orjson.dumps(item)) < 3_500_000:
        messages.extend({**template, "id": f"wamid.BIG{len(messages):07d}"} for _ in range(1000))
    body = orjson.dumps(item)
    async with httpx.AsyncClient(timeout=30) as client:
        assert await post_signed(client, f"{ingest_url}/webhooks/whatsapp", body, SECRET, attempts=1) == 200
    ((_key, value, headers),) = await read_records(kafka_bootstrap, topic, 1)
    assert value == body
    assert len(journaled_events([(b"", value, headers)])) == len(messages)


async def test_unsigned_and_malformed_posts_produce_nothing(kafka_bootstrap: str, topic: str, ingest_url: str) -> None:
    body = (payloads_dir() / "inbound_text.json").read_bytes()
    url = f"{ingest_url}/webhooks/whatsapp"
    async with httpx.AsyncClient(timeout=10) as client:
        unsigned = await client.post(url, content=body)
        forged = await client.post(url, content=body, headers={"x-hub-signature-256": sign(body, b"other-app")})
        not_json = await client.post(url, content=b"{nope", headers={"x-hub-signature-256": sign(b"{nope", SECRET)})
        wrong_object = b'{"object":"page","entry":[]}'
        not_waba = await client.post(
            url, content=wrong_object, headers={"x-hub-signature-256": sign(wrong_object, SECRET)}
        )
    assert (unsigned.status_code, forged.status_code, not_json.status_code, not_waba.status_code) == (
        401,
        401,
        400,
        400,
    )
    assert "whatsapp_business_account" in not_waba.json()["error"]
    assert await read_topic(kafka_bootstrap, topic, 1) == []


async def test_redelivery_gives_the_same_event_ids(kafka_bootstrap: str, topic: str, ingest_url: str) -> None:
    body = (payloads_dir() / "synthetic_batch_two_entries.json").read_bytes()
    reencoded = json.dumps(json.loads(body), indent=1).encode()  # Meta's retry may differ byte-wise: ids may not
    async with httpx.AsyncClient(timeout=10) as client:
        for raw in (body, reencoded):
            assert await post_signed(client, f"{ingest_url}/webhooks/whatsapp", raw, SECRET, attempts=1) == 200
    records = await read_records(kafka_bootstrap, topic, 2)
    assert len(records) == 2
    ids = Counter(event.event_id for event in journaled_events(records))
    assert ids, "nothing was produced"
    assert set(ids.values()) == {2}, "each event must come twice, under the same id"


async def test_outbound_report_is_produced_as_outbound_event(kafka_bootstrap: str, topic: str, ingest_url: str) -> None:
    report = {
        "phone_number_id": "106540352242922",
        "request": {"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {"body": "Hi"}},
        "response": {
            "messaging_product": "whatsapp",
            "contacts": [{"input": "16505551234", "wa_id": "16505551234"}],
            "messages": [{"id": "wamid.OUTBOUND-TEST-1"}],
        },
    }
    async with httpx.AsyncClient(base_url=ingest_url, timeout=10) as client:
        refused = await client.post("/v1/outbound", json=report)
        wrong = await client.post("/v1/outbound", json=report, headers={"authorization": "Bearer nope"})
        incomplete = await client.post(
            "/v1/outbound", json={"phone_number_id": "1"}, headers={"authorization": f"Bearer {OUTBOUND_TOKEN}"}
        )
        accepted = await client.post("/v1/outbound", json=report, headers={"authorization": f"Bearer {OUTBOUND_TOKEN}"})
    assert (refused.status_code, wrong.status_code, incomplete.status_code, accepted.status_code) == (
        401,
        401,
        400,
        200,
    )
    records = await read_records(kafka_bootstrap, topic, 1)
    assert len(records) == 1
    key, value, headers = records[0]
    assert dict(headers) == {FORMAT_HEADER: EVENT_FORMAT}
    envelope = orjson.loads(value)
    assert key == b"106540352242922:16505551234"
    assert envelope["kind"] == "outbound"
    assert envelope["message_id"] == "wamid.OUTBOUND-TEST-1"
    assert envelope["payload"] == report


@pytest.mark.exclusive  # stops the shared Kafka
async def test_kafka_down_answers_503_then_redelivery_lands(kafka_bootstrap: str, repo_root: Path) -> None:
    topic = await create_topic(kafka_bootstrap)
    app = IngestApp(ingest_settings(kafka_bootstrap, topic, deadline_s=2.0))
    body = (payloads_dir() / "synthetic_batch_two_contacts.json").read_bytes()
    stack = str(repo_root / "deploy" / "local" / "stack.sh")
    async with serve_asgi(app) as url, httpx.AsyncClient(timeout=30) as client:
        await app.producer.wait_connected(20)
        subprocess.run([stack, "down", "kafka"], check=True, capture_output=True, timeout=120)
        try:
            down = await post_signed(client, f"{url}/webhooks/whatsapp", body, SECRET, attempts=1)
            ready = await client.get(f"{url}/readyz")
        finally:
            subprocess.run([stack, "up", "kafka"], check=True, capture_output=True, timeout=180)
        # Meta retries until it gets a 200: so does the replay tool.
        retried = await post_signed(client, f"{url}/webhooks/whatsapp", body, SECRET, attempts=40, backoff_s=0.5)
        metrics = (await client.get(f"{url}/metrics")).text
    assert down == 503
    assert ready.status_code == 200  # the producer object lives on; readiness is about the connection it holds
    assert retried == 200
    expected = {e.event_id for e in expected_events([("b", body)])}
    records = await read_records(kafka_bootstrap, topic, 1)
    assert {e.event_id for e in journaled_events(records)} == expected
    assert 'wa_ingest_requests_total{outcome="unavailable",route="webhook"} 1.0' in metrics
