"""The relay against the real Kafka, feeding receivers that stand for the company's own systems (small HTTP
servers on 127.0.0.1, devtools/inbox.py), in one run of four destinations:

- ``meta``: verifies Meta's signature with Meta's app secret and wants the ``messages`` field: it gets every
  ``messages`` webhook byte for byte, in journal order per business number, and neither the other field's webhooks
  nor the outbound reports.
- ``own``: verifies with another app's secret (the destination's own): it accepts every webhook, re-signed.
- ``late``: nothing listens on its port for the first seconds: afterwards it gets everything, in order per number.
- ``broken``: always answers 503: every wanted record lands in its parking topic with the reason, its metrics say
  so, and meanwhile ``meta`` is current.

Every group ends with its offsets committed at the journal's end.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Callable

import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools.broker import committed_offsets, create_topic, end_offsets, read_records
from devtools.inbox import Delivery, InboxReceiver
from devtools.serving import free_port, serve_asgi
from services.core.journal import event_record, webhook_record
from services.core.kafka import AckedProducer, OutgoingRecord
from services.core.settings import KafkaSettings
from services.ingest.outbound import outbound_event
from services.ingest.signature import sign
from services.relay.delivery import META_SIGNATURE
from services.relay.relay import PARK_ATTEMPTS_HEADER, PARK_REASON_HEADER, PARK_SOURCE_HEADER
from services.relay.service import run_relay
from services.relay.settings import DestinationSettings, RelaySettings
from services.tools.loadgen import webhook_body

pytestmark = pytest.mark.integration

META_SECRET = b"relay-it-meta-app-secret"
OTHER_SECRET = b"relay-it-other-app-secret"
PARTITIONS = 3
NUMBERS = ("100000000000001", "100000000000002", "100000000000003", "100000000000004")
PER_NUMBER = 6  # messages webhooks per business number
LATE_FOR_S = 3.0


def body(number: str, sequence: int, field: str = "messages") -> bytes:
    """A webhook as Meta writes it (non-ASCII escaped, '/' as '\\/'), numbered by ``sequence`` per number."""
    value: dict[str, object] = {
        "messages": [{"id": f"wamid.{number}.{sequence}", "type": "text", "text": {"body": "BODY"}}]
    }
    raw = webhook_body("WABA1", number, value, field=field)
    return raw.replace(b'"BODY"', f'"caf\\u00e9 \\/ {sequence}"'.encode())


def sequence_of(raw: bytes) -> tuple[str, int]:
    change = orjson.loads(raw)["entry"][0]["changes"][0]["value"]
    return change["metadata"]["phone_number_id"], int(change["messages"][0]["id"].rsplit(".", 1)[1])


def in_order_per_number(deliveries: list[Delivery]) -> dict[str, list[int]]:
    seen: dict[str, list[int]] = defaultdict(list)
    for delivery in deliveries:
        number, sequence = sequence_of(delivery.body)
        if sequence not in seen[number]:  # at least once: a redelivery repeats an earlier one
            seen[number].append(sequence)
    return dict(seen)


async def until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


async def journal(bootstrap: str, topic: str) -> dict[bytes, bytes]:
    """The journal of the run, as ingest writes it: per number, PER_NUMBER messages webhooks interleaved with one
    template-status webhook and one outbound report (neither wanted by ``meta``). Returns the messages webhooks'
    bytes by their signature."""
    producer = AckedProducer(KafkaSettings(bootstrap_servers=bootstrap))
    await producer.start()
    wanted: dict[bytes, bytes] = {}
    try:
        await producer.wait_connected(20)
        records: list[OutgoingRecord] = []
        for sequence in range(PER_NUMBER):
            for number in NUMBERS:
                raw = body(number, sequence)
                signature = sign(raw, META_SECRET)
                wanted[signature.encode()] = raw
                records.append(
                    webhook_record(topic, number, raw, signature=signature, received_at="2026-12-06T00:00:00.000Z")
                )
                if sequence == 2:
                    other = body(number, 99, field="message_template_status_update")
                    records.append(
                        webhook_record(
                            topic,
                            number,
                            other,
                            signature=sign(other, META_SECRET),
                            received_at="2026-12-06T00:00:00.000Z",
                        )
                    )
                    report = orjson.dumps(
                        {
                            "phone_number_id": number,
                            "request": {"to": "15550009999", "type": "text", "text": {"body": "x"}},
                            "response": {"messages": [{"id": f"wamid.out.{number}"}]},
                        }
                    )
                    records.append(event_record(topic, outbound_event(report, received_at="2026-12-06T00:00:00.000Z")))
        for record in records:  # one at a time: the journal's order is the order of acknowledgement
            await producer.produce((record,), deadline_s=10)
    finally:
        await producer.stop()
    return wanted


async def test_relay_delivers_signed_bytes_in_order_parks_what_fails_and_keeps_the_others_current(
    kafka_bootstrap: str,
) -> None:
    run = uuid.uuid4().hex[:8]
    topic = await create_topic(kafka_bootstrap, partitions=PARTITIONS, prefix="relay")
    names = {kind: f"it-{kind}-{run}" for kind in ("meta", "own", "late", "broken")}
    parked_topic = f"wa-relay-{names['broken']}-parked"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"wa-relay-{name}-parked", 1, 1) for name in names.values()])
    finally:
        await admin.close()
    wanted = await journal(kafka_bootstrap, topic)

    meta, own, late, broken = (
        InboxReceiver([META_SECRET], keep=True),
        InboxReceiver([OTHER_SECRET], keep=True),
        InboxReceiver([META_SECRET], keep=True),
        InboxReceiver([META_SECRET], keep=True),
    )
    broken.fail_with(503)
    late_port = free_port()
    registry = CollectorRegistry()
    stop = asyncio.Event()
    async with (
        serve_asgi(meta, lifespan="off") as meta_url,
        serve_asgi(own, lifespan="off") as own_url,
        serve_asgi(broken, lifespan="off") as broken_url,
    ):
        quick = {"retry_initial_s": 0.05, "retry_max_s": 0.2}
        settings = RelaySettings(
            port=0,
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=topic),
            destinations=[
                DestinationSettings(name=names["meta"], url=f"{meta_url}/webhooks", fields=("messages",), **quick),
                DestinationSettings(
                    name=names["own"], url=f"{own_url}/hook", secret=SecretStr(OTHER_SECRET.decode()), **quick
                ),
                DestinationSettings(
                    name=names["late"], url=f"http://127.0.0.1:{late_port}/in", fields=("messages",), **quick
                ),
                DestinationSettings(
                    name=names["broken"], url=broken_url, fields=("messages",), retry_budget_s=0.15, **quick
                ),
            ],
            commit_interval_s=0.2,
        )
        relay = asyncio.create_task(run_relay(settings, stop, registry=registry))
        started = time.monotonic()
        try:
            total = len(NUMBERS) * PER_NUMBER
            await until(lambda: meta.verified >= total, 30, "the meta destination's deliveries")

            def parked() -> float:
                return (
                    registry.get_sample_value(
                        "wa_relay_parked_total", {"destination": names["broken"], "reason": "retry_budget_exhausted"}
                    )
                    or 0.0
                )

            # Each broken record spends its 0.15 s budget: meta was current long before broken was through.
            assert parked() < total
            assert meta.refused == 0
            assert {d.headers["x-hub-signature-256"].encode(): d.body for d in meta.received} == wanted
            assert in_order_per_number(meta.received) == {n: list(range(PER_NUMBER)) for n in NUMBERS}

            # own wants every field: the template-status webhooks too, re-signed with its secret, Meta's kept aside.
            await until(lambda: own.verified >= total + len(NUMBERS), 30, "the own-secret destination")
            assert own.refused == 0
            assert all(sign(d.body, META_SECRET) == d.headers[META_SIGNATURE.lower()] for d in own.received)

            await asyncio.sleep(max(0.0, LATE_FOR_S - (time.monotonic() - started)))
            assert late.verified == 0
            async with serve_asgi(late, lifespan="off", port=late_port):
                await until(lambda: late.verified >= total, 30, "the late destination's deliveries")
                assert in_order_per_number(late.received) == {n: list(range(PER_NUMBER)) for n in NUMBERS}

            await until(lambda: parked() == total, 30, "the broken destination's parking")
            found = await read_records(kafka_bootstrap, parked_topic, total, partitions=1)
            assert sorted(value for _key, value, _headers in found) == sorted(wanted.values())
            for _key, _value, headers in found:
                named = dict(headers)
                assert named[PARK_REASON_HEADER].startswith(b"retry_budget_exhausted: ")
                assert b"HTTP 503" in named[PARK_REASON_HEADER]
                assert named[PARK_SOURCE_HEADER].startswith(topic.encode() + b"/")
                assert int(named[PARK_ATTEMPTS_HEADER]) >= 2
            assert broken.verified == 0

            ends = await end_offsets(kafka_bootstrap, topic, PARTITIONS)

            def lag(name: str) -> float | None:
                return registry.get_sample_value("wa_relay_lag_records", {"destination": name})

            await until(lambda: all(lag(name) == 0 for name in names.values()), 10, "every destination's lag at 0")
            await asyncio.sleep(0.5)  # one more commit interval
            for name in names.values():
                assert await committed_offsets(kafka_bootstrap, f"wa-relay-{name}", topic, PARTITIONS) == ends
            delivered = registry.get_sample_value(
                "wa_relay_deliveries_total", {"destination": names["meta"], "outcome": "delivered"}
            )
            skipped = registry.get_sample_value(
                "wa_relay_deliveries_total", {"destination": names["meta"], "outcome": "skipped"}
            )
            assert (delivered, skipped) == (total, 2 * len(NUMBERS))
            assert (
                registry.get_sample_value(
                    "wa_relay_deliveries_total", {"destination": names["broken"], "outcome": "parked"}
                )
                == total
            )
            freshness = registry.get_sample_value(
                "wa_relay_last_delivered_journal_timestamp_seconds", {"destination": names["meta"]}
            )
            assert freshness is not None
            assert abs(freshness - time.time()) < 120
        finally:
            stop.set()
            await asyncio.wait_for(relay, 30)
