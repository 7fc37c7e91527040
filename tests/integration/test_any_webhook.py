"""Any JSON value in any field of a signed webhook is archived and readable, or dead-lettered alone; the pipeline
keeps moving. On the real stack: Hypothesis draws real sample webhooks with one to three values replaced by arbitrary
JSON (lone surrogates, integers beyond 64 bits, deep nesting, values of the wrong type, odd media ids), each is signed
and POSTed to ingest, and one archiver (with the Graph API stand-in for media) takes the topic. Then:

- every event split from a POST ingest accepted is either in the index or in the dead-letter topic (its reason in
  fixed words), never both and never neither; every offset is committed and the archiver is still running;
- a plain message sent after them all is archived: nothing stalled behind the odd ones;
- every person's conversation reads without an error through the action layer, every archived record of theirs in it.

Hypothesis only generates here (no shrinking through a live pipeline): a failure names the event and its POST.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import httpx
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, read_to_end
from devtools.graph_api import FakeGraphApi
from devtools.serving import serve_asgi
from services.actions.access import open_access
from services.actions.layer import Actions, Operator
from services.archiver.service import run_archiver
from services.archiver.settings import GraphSettings
from services.core.events import WebhookRejected, parse_webhook
from services.core.index import binary_keys
from services.core.settings import KafkaSettings
from services.governance.metrics import RetentionMetrics
from services.ingest.app import IngestApp
from services.ingest.settings import IngestSettings
from services.tools.replay import post_signed
from tests.helpers.webhook_strategies import SAMPLE_VALUES, encoded, mutated_samples

pytestmark = pytest.mark.integration

SECRET = b"any-webhook-secret"
WEBHOOKS = 300
GRAPH_TOKEN = "any-webhook-graph-token"


def draw_webhooks(count: int) -> list[bytes]:
    """``count`` bodies: mostly mutated samples, a few untouched ones (so that some archive for sure)."""
    found: list[bytes] = []

    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(encoded(mutated_samples()), encoded(mutated_samples()), encoded(SAMPLE_VALUES)))
    def collect(body: bytes) -> None:
        found.append(body)

    collect()
    return found


def hostile_webhooks() -> list[bytes]:
    """Values the maintainers' corpus found stopping or hiding things, beside the drawn ones: media ids no URL can
    carry, lone surrogates where the read side decoded with orjson, a message nested as deep as ingest accepts.
    Written as JSON escapes into the bytes, as a sender would (the builders' encoder refuses lone surrogates)."""
    person = pipeline.Person.fresh()
    ts = int(time.time())
    media_ids = [rb"12 34", rb"12\u0000", rb"../../etc", rb"\ud83d", b"9" * 5000, rb"a#b?c", rb"\u0007", rb"\n"]
    bodies = [
        pipeline.image(person, f"wamid.H{n}", ts, id="@ID@", mime_type="image/jpeg").replace(b"@ID@", media_id)
        for n, media_id in enumerate(media_ids)
    ]
    text = pipeline.text_message(person, "wamid.Hs", "@TEXT@", ts)
    bodies.append(text.replace(b"@TEXT@", rb"un emoji coup\u00e9 \ud83d ici"))
    deep = pipeline.text_message(person, "wamid.Hdeep", "@DEEP@", ts)
    bodies.append(deep.replace(b'"@DEEP@"', b'"x","n":' + b"[" * 1000 + b"]" * 1000))
    return bodies


def expected_events(body: bytes) -> list[str]:
    try:
        events = parse_webhook(body, raw_sha256="-", signature=None, received_at="2026-12-06T00:00:00.000Z")
    except WebhookRejected:
        return []
    return [e.event_id for e in events]


@pytest.mark.timeout(600)
async def test_any_value_in_any_field_is_archived_and_readable_or_dead_lettered_alone(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool
) -> None:
    bodies = [*hostile_webhooks(), *await asyncio.to_thread(draw_webhooks, WEBHOOKS)]
    topic = await create_topic(kafka_bootstrap, partitions=3, prefix="any-webhook")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="any-webhook-dlq")
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    ingest = IngestApp(
        IngestSettings(
            app_secrets=[SecretStr(SECRET.decode())],
            verify_token=SecretStr("any-webhook-verify-token"),
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=topic),
            produce_deadline_s=15,
        )
    )
    accepted: list[bytes] = []
    async with FakeGraphApi(token=GRAPH_TOKEN) as graph, serve_asgi(ingest) as url:
        await ingest.producer.wait_connected(20)
        async with httpx.AsyncClient(timeout=30) as client:
            for body in bodies:
                status = await post_signed(client, f"{url}/webhooks/whatsapp", body, SECRET, attempts=1)
                assert status < 500, status
                if status == 200:
                    accepted.append(body)
            sentinel_person = pipeline.Person.fresh()
            sentinel = pipeline.text_message(sentinel_person, "wamid.SENTINEL", "still moving", int(time.time()))
            assert await post_signed(client, f"{url}/webhooks/whatsapp", sentinel, SECRET, attempts=1) == 200
        expected = {event_id: body for body in accepted for event_id in expected_events(body)}
        (sentinel_id,) = expected_events(sentinel)
        settings_ = pipeline.archiver_settings(
            demo_env,
            topic,
            dlq,
            prefix,
            graph=GraphSettings(base_url=graph.base_url, token=SecretStr(GRAPH_TOKEN), loopback_http=True),
        ).model_copy(update={"unexpected_attempts": 2})
        stop = asyncio.Event()
        archiver = asyncio.create_task(run_archiver(settings_, stop, registry=CollectorRegistry()))
        try:
            journaled = len(accepted) + 1
            for _ in range(1200):  # bounded: 120 s
                committed = sum((await committed_offsets(kafka_bootstrap, settings_.group_id, topic, 3)).values())
                if committed == journaled:
                    break
                assert not archiver.done(), "the archiver stopped"
                await asyncio.sleep(0.1)
            assert committed == journaled, f"{committed} of {journaled} records committed"
            assert not archiver.done()
        finally:
            stop.set()
            await asyncio.wait_for(archiver, 60)

    rows = await pg_pool.fetch(
        "SELECT encode(event_id, 'hex') AS event_id, encode(subject_ref, 'hex') AS subject_ref, kind"
        " FROM archived_events WHERE event_id = ANY($1::bytea[])",
        binary_keys([*expected, sentinel_id]),
    )
    indexed = {row["event_id"] for row in rows}
    dead: dict[str, str] = {}
    for _key, value, headers in await read_to_end(kafka_bootstrap, dlq, 1):
        reason = dict(headers)["wa-dlq-reason"].decode()
        envelope: Any = json.loads(value)
        assert isinstance(envelope, dict), f"a dead letter is one event ({reason})"
        assert "event_id" in envelope, f"a dead letter is one event ({reason})"
        dead[envelope["event_id"]] = reason
    assert sentinel_id in indexed, "a plain message after the odd ones was archived"
    for event_id, body in expected.items():
        assert (event_id in indexed) != (event_id in dead), (event_id, dead.get(event_id), body[:300])
    assert not set(dead) - set(expected), "nothing dead-lettered that was not sent"
    print(f"\n[any webhook] {len(bodies)} drawn, {len(accepted)} accepted, {len(expected)} events, {len(dead)} dead")

    # Every person's conversation reads, with every record of theirs that was archived.
    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        actions = Actions(access, RetentionMetrics(CollectorRegistry()))
        people: dict[str, set[str]] = {}
        for row in rows:
            # Messages, echoes and history are items of the timeline (or changes of one); statuses and business
            # records are read too, attached or summarised.
            wanted = row["event_id"] if row["kind"] in ("message", "echo", "history") else None
            people.setdefault(row["subject_ref"], set()).update([wanted] if wanted else [])
        for subject, messages in people.items():
            conversation = await actions.messages(
                Operator("test", "dpo"), reason="property test of the pipeline", subject_ref=subject
            )
            shown = {m.event_id for m in conversation.messages}
            for message in conversation.messages:
                shown.update(change.event_id for change in message.edits)
                shown.update([message.deletion.event_id] if message.deletion else [])
                assert message.unreadable is None, (message.event_id, message.unreadable)
            assert messages <= shown, (subject, messages - shown)
    finally:
        await access.close()
