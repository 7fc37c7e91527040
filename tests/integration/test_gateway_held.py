"""Sensitive sends held for approval, against the real Kafka, the Graph API stand-in and the relay feeding a receiver
that verifies Meta's signature (devtools/inbox.py), in one run:

- a send a policy rule matches is held: Meta's held answer with the gateway's id, nothing reaches the stand-in, its
  ``send_held`` event journaled with the rule's name and the author (a marketing template held by its category,
  with the text the customer would see); a send to a recipient never written to is
  refused (403), nothing sent; any other send is forwarded as before;
- decision records (produced here as the action layer would): ``approved`` → sent once to the stand-in with the
  configured token (the caller's was another), its ``send_attempt`` and ``outbound`` journaled naming the held
  draft, a ``sent`` status for the gateway's id with Meta's real id; the same approval produced twice sends nothing
  twice; ``rejected`` and ``expired`` → ``failed`` statuses with the reason, nothing sent;
- the statuses reach the relay's receiver signed with the app secret."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools.broker import create_topic, read_to_end
from devtools.graph_api import FakeGraphApi
from devtools.inbox import InboxReceiver
from devtools.serving import serve_asgi
from services.core.events import Event
from services.core.journal import ORIGIN_HEADER, split_record
from services.core.kafka import AckedProducer, OutgoingRecord
from services.core.settings import KafkaSettings
from services.gateway.app import GatewayApp
from services.gateway.policy import recipient_hash
from services.gateway.settings import GatewaySettings
from services.relay.service import run_relay
from services.relay.settings import DestinationSettings, RelaySettings

pytestmark = pytest.mark.integration

TOKEN = f"EAAG-configured-{uuid.uuid4().hex}"  # the gateway's configured send token: the stand-in takes only it
CALLER = f"EAAG-caller-{uuid.uuid4().hex}"  # the company's own token on the held sends: never reused
APP_SECRET = "held-it-meta-app-secret"
NUMBER, WABA = "106540352242922", "102290129340398"
BLOCKED = "33600000001"
MESSAGES = f"/v21.0/{NUMBER}/messages"


SALE = {
    "name": "summer_sale",
    "language": "fr",
    "category": "MARKETING",
    "status": "APPROVED",
    "id": "1",
    "components": [{"type": "BODY", "text": "Summer sale, {{1}}: -20% on everything"}],
}
SALE_SEND = {
    "messaging_product": "whatsapp",
    "to": "33612345679",
    "type": "template",
    "template": {
        "name": "summer_sale",
        "language": {"code": "fr"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "Ana"}]}],
    },
}


def text(to: str, body: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": to, "type": "text", "text": {"body": body}}


def decision(
    topic: str, held: dict[str, Any], kind: str, request: Any = None, reason: str | None = None
) -> OutgoingRecord:
    value = {
        "version": 1,
        "send_id": held["send_id"],
        "message_id": held["message_id"],
        "phone_number_id": NUMBER,
        "waba_id": WABA,
        "decision": kind,
        "reason": reason,
        "request": request,
        "request_id": uuid.uuid4().hex,
        "decided_at": "2026-12-07T02:00:00.000Z",
    }
    return OutgoingRecord(topic, NUMBER.encode(), orjson.dumps(value), ())


async def until(condition: Callable[[], Any], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


async def test_held_sends_wait_for_a_decision_and_their_statuses_reach_the_relay(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    run = uuid.uuid4().hex[:8]
    events = await create_topic(kafka_bootstrap, partitions=1, prefix="held")
    decisions = await create_topic(kafka_bootstrap, partitions=1, prefix="held-decisions")
    (tmp_path / "default.toml").write_text(
        '[[hold]]\nname = "promotion"\nwords = ["offre spéciale"]\n'
        '[[hold]]\nname = "marketing"\ntemplate_categories = ["MARKETING"]\n'
        f'[[refuse]]\nname = "do-not-contact"\nrecipients_sha256 = ["{recipient_hash(BLOCKED)}"]\n',
        encoding="utf-8",
    )
    settings = GatewaySettings(
        loopback_http=True,
        upstream_url="http://127.0.0.1:1",  # replaced below, once the stand-in listens
        business_accounts={NUMBER: WABA},
        kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=events),
        policy_dir=tmp_path,
        app_secret=SecretStr(APP_SECRET),
        send_tokens={NUMBER: SecretStr(TOKEN)},
        decisions_topic=decisions,
        decisions_group=f"test-held-{run}",
    )
    inbox = InboxReceiver([APP_SECRET.encode()], keep=True)
    producer = AckedProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    stop = asyncio.Event()
    async with FakeGraphApi(token=TOKEN) as fake, serve_asgi(inbox, lifespan="off") as inbox_url:
        settings = settings.model_copy(update={"upstream_url": fake.base_url})
        app = GatewayApp(settings, registry=CollectorRegistry(), ops=False)
        async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            await app.producer.wait_connected(20)
            caller = {"authorization": f"Bearer {CALLER}", "x-wa-archive-author": "agent.ana"}
            held_requests = [text(f"3361234567{i}", f"Une offre  SPECIALE n°{i}") for i in range(3)]
            answers = [await client.post(MESSAGES, json=r, headers=caller) for r in held_requests]
            owner = {"authorization": f"Bearer {TOKEN}"}
            plain = await client.post(MESSAGES, json=text("33612345670", "votre colis"), headers=owner)
            blocked = await client.post(MESSAGES, json=text(f"+{BLOCKED}", "bonjour"), headers=caller)
            # A marketing template, held by its category (read with the caller's token through the cache).
            fake.add_template(WABA, SALE)
            sale = await client.post(MESSAGES, json=SALE_SEND, headers=owner)
            assert sale.json()["messages"][0]["message_status"] == "held_for_quality_assessment"

            assert [a.status_code for a in answers] == [200, 200, 200]
            held = [a.json() for a in answers]
            for request, answer in zip(held_requests, held, strict=True):
                assert answer["contacts"] == [{"input": request["to"], "wa_id": request["to"]}]
                (message,) = answer["messages"]
                assert message["message_status"] == "held_for_quality_assessment"
                assert message["id"].startswith("wamid.")
            assert plain.status_code == 200
            assert blocked.status_code == 403
            assert blocked.json()["error"]["type"] == "WaArchiveGateway"
            assert [body["text"]["body"] for _, body in fake.sends] == ["votre colis"]

            journaled = await journal(kafka_bootstrap, events)
            (held_sale,) = [e for e in journaled if e.kind == "send_held" and e.type == "template"]
            assert held_sale.payload["gateway"]["rules"] == ["marketing"]
            assert held_sale.payload["gateway"]["text"] == "Summer sale, Ana: -20% on everything"
            held_events = [e for e in journaled if e.kind == "send_held" and e.type == "text"]
            assert [e.payload["gateway"]["message_id"] for e in held_events] == [h["messages"][0]["id"] for h in held]
            assert all(e.payload["gateway"]["rules"] == ["promotion"] for e in held_events)
            assert all(e.payload["gateway"]["author"] == "agent.ana" for e in held_events)
            assert [e.payload["request"] for e in held_events] == held_requests
            refused = [e for e in journaled if e.kind == "outbound" and e.payload["gateway"]["outcome"] == "refused"]
            assert len(refused) == 1
            assert app.registry.get_sample_value("wa_gateway_held_total", {"rule": "promotion"}) == 3

            gateway_ids = [e.payload["gateway"] for e in held_events]
            await producer.start()
            try:
                await producer.wait_connected(20)
                approve = decision(decisions, gateway_ids[0], "approved", request=held_requests[0])
                records = [
                    approve,
                    approve,  # the same record twice: sent once
                    decision(decisions, gateway_ids[1], "rejected", reason="pas de promesse de remboursement"),
                    decision(decisions, gateway_ids[2], "expired"),
                ]
                for record in records:  # one at a time: in this order on the partition
                    await producer.produce((record,), deadline_s=10)
            finally:
                await producer.stop()

            async def statuses_journaled() -> bool:
                found = await read_to_end(kafka_bootstrap, events, 1)
                return sum((ORIGIN_HEADER, b"gateway") in headers for _, _, headers in found) >= 3

            await until(statuses_journaled, 30, "the held sends' statuses")
            duplicates = {"result": "duplicate"}
            await until(
                lambda: _true(app.registry.get_sample_value("wa_gateway_decisions_total", duplicates)),
                10,
                "the duplicate skipped",
            )
        # A gateway started afresh in the same group learns what its group decided: the approval produced again
        # (an action layer that retried) sends nothing.
        await producer.start()
        try:
            await producer.wait_connected(20)
            await producer.produce((approve,), deadline_s=10)
        finally:
            await producer.stop()
        again = GatewayApp(settings, registry=CollectorRegistry(), ops=False)
        async with serve_asgi(again):
            await until(
                lambda: _true(again.registry.get_sample_value("wa_gateway_decisions_total", duplicates)),
                20,
                "the replayed approval skipped after a restart",
            )
        assert [body for _, body in fake.sends] == [text("33612345670", "votre colis"), held_requests[0]]
        assert [status for status, _ in fake.answers] == [200, 200]  # the stand-in took the configured token
        real_id = orjson.loads(fake.answers[-1][1])["messages"][0]["id"]

        journaled = await journal(kafka_bootstrap, events)
        approved = gateway_ids[0]["send_id"]
        linked = [e for e in journaled if e.payload.get("gateway", {}).get("held_send_id") == approved]
        assert [e.kind for e in linked] == ["send_attempt", "outbound"]
        assert linked[1].message_id == real_id
        assert linked[1].payload["gateway"]["held_message_id"] == gateway_ids[0]["message_id"]
        assert len([e for e in journaled if e.kind == "send_attempt"]) == 2  # the plain send's and the approved one's
        assert len([e for e in journaled if e.kind == "status"]) == 3

        # The relay delivers the statuses, signed with the app secret, to the company's receiver.
        name = f"it-held-{run}"
        admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(f"wa-relay-{name}-parked", 1, 1)])
        finally:
            await admin.close()
        relay_settings = RelaySettings(
            port=0,
            kafka=KafkaSettings(bootstrap_servers=kafka_bootstrap, events_topic=events),
            destinations=[DestinationSettings(name=name, url=f"{inbox_url}/webhooks", fields=("messages",))],
            commit_interval_s=0.2,
        )
        relay = asyncio.create_task(run_relay(relay_settings, stop, registry=CollectorRegistry()))
        try:
            await until(lambda: _true(inbox.verified >= 3), 30, "the relay's deliveries")
        finally:
            stop.set()
            await relay
    assert inbox.refused == 0
    statuses = {
        status["id"]: status
        for delivery in inbox.received
        for status in orjson.loads(delivery.body)["entry"][0]["changes"][0]["value"]["statuses"]
    }
    sent = statuses[gateway_ids[0]["message_id"]]
    assert (sent["status"], sent["wa_archive"]["message_id"]) == ("sent", real_id)
    rejected = statuses[gateway_ids[1]["message_id"]]
    assert rejected["status"] == "failed"
    assert rejected["errors"][0]["error_data"]["details"] == "pas de promesse de remboursement"
    expired = statuses[gateway_ids[2]["message_id"]]
    assert (expired["status"], expired["errors"][0]["title"]) == ("failed", "Held message expired before approval")


async def journal(bootstrap: str, topic: str) -> list[Event]:
    return [
        e for _, value, headers in await read_to_end(bootstrap, topic, 1) for e in split_record(value, headers).events
    ]


async def _true(value: Any) -> bool:
    return bool(value)


async def test_without_kafka_nothing_is_held_nor_sent(tmp_path: Path) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    (tmp_path / "default.toml").write_text('[[hold]]\nname = "promotion"\nwords = ["promotion"]\n', encoding="utf-8")
    async with FakeGraphApi(token=TOKEN) as fake:
        settings = GatewaySettings(
            loopback_http=True,
            upstream_url=fake.base_url,
            business_accounts={NUMBER: WABA},
            kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", events_topic="unreachable"),
            produce_deadline_s=1,
            policy_dir=tmp_path,
            app_secret=SecretStr(APP_SECRET),
        )
        app = GatewayApp(settings, registry=CollectorRegistry(), ops=False)
        async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            request = text("33612345670", "notre promotion")
            answer = await client.post(MESSAGES, json=request, headers={"authorization": f"Bearer {CALLER}"})
        assert (answer.status_code, answer.json()["error"]["code"]) == (503, 2)
        assert fake.requests == []
        assert app.registry.get_sample_value("wa_gateway_sends_total", {"route": "messages", "outcome": "held"}) == 0
