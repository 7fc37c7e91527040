"""The send gateway against the real Kafka, S3 and PostgreSQL and the Graph API stand-in: what the company sends
through it is archived and reads back in the person's conversation; Meta's answers come back unchanged, errors
included, and no send is ever retried; without Kafka nothing is sent; a lost answer is archived ``unknown``; the
bearer token is nowhere but on the way to Meta.

One gateway and one archiver run serve the module: the sends are made once (``sent``), the tests read what
they left."""

from __future__ import annotations

import hashlib
import logging
import socket
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.broker import create_topic, read_to_end
from devtools.graph_api import FakeGraphApi
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import open_access
from services.actions.layer import Actions, Operator
from services.core.journal import split_record
from services.core.settings import KafkaSettings
from services.core.vocabulary import rfc3339_millis
from services.gateway.app import GatewayApp
from services.gateway.records import SendContext, attempt_event
from services.gateway.settings import GatewaySettings
from services.governance.metrics import RetentionMetrics
from services.review.assembly import ConversationMessage

pytestmark = pytest.mark.integration

# A bearer token no other test uses: it must appear nowhere but in the requests that reach the stand-in.
TOKEN = f"EAAG-gateway-{uuid.uuid4().hex}"
AUTH = {"authorization": f"Bearer {TOKEN}"}
VERSION = "v21.0"
REGISTER_BODY = b'{"messaging_product":"whatsapp","pin":"123456"}'
CRASHED_SEND_ID = f"crashed-{uuid.uuid4().hex}"  # a send whose outcome the gateway never journaled
INVOICE = b"%PDF-1.4\n" + bytes(range(255, -1, -1)) * 30 + b"\n%%EOF\n"
PHOTO = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 40 + b"\xff\xd9"  # a JPEG's markers around 10 KiB
TEMPLATE = {
    "name": "order_refund",
    "language": "en_US",
    "category": "UTILITY",
    "status": "APPROVED",
    "id": "1407680676729941",
    "components": [
        {"type": "HEADER", "format": "TEXT", "text": "Order {{1}}"},
        {"type": "BODY", "text": "Hello {{1}}, your refund of {{2}} is on its way."},
        {"type": "FOOTER", "text": "Reply STOP to opt out"},
    ],
}


@dataclass
class Sent:
    person: Person
    status: dict[str, int]  # what the gateway answered each send, by name
    body: dict[str, bytes]
    fake: FakeGraphApi
    records: list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]
    conversation: list[ConversationMessage]
    passed: list[dict[str, Any]]
    logs: str
    prefix: str
    files: list[bytes]  # the media files of the conversation, decrypted


def gateway_settings(person: Person, upstream: str, bootstrap: str, topic: str, **overrides: Any) -> GatewaySettings:
    return GatewaySettings(
        upstream_url=upstream,
        loopback_http=True,
        business_accounts={person.phone_number_id: person.waba_id},
        kafka=KafkaSettings(bootstrap_servers=bootstrap, events_topic=topic),
        **overrides,
    )


def text(person: Person, body: str) -> dict[str, Any]:
    return {"messaging_product": "whatsapp", "to": person.wa_id, "type": "text", "text": {"body": body}}


@pytest.fixture(scope="module")
async def sent(demo_env: dict[str, str], pg_pool: asyncpg.Pool, kafka_bootstrap: str) -> AsyncIterator[Sent]:
    person = Person.fresh()
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="gateway")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="gateway-dlq")
    handler = _Capture()
    logging.getLogger().addHandler(handler)
    status: dict[str, int] = {}
    body: dict[str, bytes] = {}
    messages = f"/{VERSION}/{person.phone_number_id}/messages"
    try:
        async with FakeGraphApi(token=TOKEN) as fake:
            fake.add_template(person.waba_id, TEMPLATE)
            settings = gateway_settings(person, fake.base_url, kafka_bootstrap, topic, send_timeout_s=1.0)
            app = GatewayApp(settings, registry=CollectorRegistry(), ops=False)
            async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
                await app.producer.wait_connected(20)
                sends = {
                    "text": text(person, "your parcel left the depot"),
                    "template": {
                        "messaging_product": "whatsapp",
                        "to": person.wa_id,
                        "type": "template",
                        "template": {
                            "name": "order_refund",
                            "language": {"code": "en_US"},
                            "components": [
                                {"type": "header", "parameters": [{"type": "text", "text": "#4471"}]},
                                {
                                    "type": "body",
                                    "parameters": [{"type": "text", "text": "Ana"}, {"type": "text", "text": "€42"}],
                                },
                            ],
                        },
                    },
                }
                for name, request in sends.items():
                    answer = await client.post(messages, json=request, headers=AUTH)
                    status[name], body[name] = answer.status_code, answer.content
                # An image uploaded (multipart, passed through), then sent by its id.
                upload = await client.post(
                    f"/{VERSION}/{person.phone_number_id}/media",
                    data={"messaging_product": "whatsapp", "type": "image/jpeg"},
                    files={"file": ("receipt.jpg", PHOTO, "image/jpeg")},
                    headers=AUTH,
                )
                status["upload"], body["upload"] = upload.status_code, upload.content
                image = {
                    "messaging_product": "whatsapp",
                    "to": person.wa_id,
                    "type": "image",
                    "image": {"id": upload.json()["id"], "caption": "your receipt"},
                }
                answer = await client.post(messages, json=image, headers=AUTH)
                status["image"], body["image"] = answer.status_code, answer.content
                # A document sent by link: Meta fetches it; so does the archive.
                document = {
                    "messaging_product": "whatsapp",
                    "to": person.wa_id,
                    "type": "document",
                    "document": {
                        "link": fake.add_file("/files/invoice-4471.pdf", INVOICE, "application/pdf"),
                        "filename": "invoice-4471.pdf",
                    },
                }
                answer = await client.post(messages, json=document, headers=AUTH)
                status["document"], body["document"] = answer.status_code, answer.content
                for code in (131056, 130429):
                    fake.refuse_next_sends(code)
                    answer = await client.post(messages, json=text(person, f"refused {code}"), headers=AUTH)
                    status[str(code)], body[str(code)] = answer.status_code, answer.content
                fake.lose_next_sends(1)
                answer = await client.post(messages, json=text(person, "answer lost"), headers=AUTH)
                status["lost"], body["lost"] = answer.status_code, answer.content
                profile = await client.get(
                    f"/{VERSION}/{person.phone_number_id}/whatsapp_business_profile?fields=about%2Cemail",
                    headers={**AUTH, "x-custom": "kept"},
                )
                status["profile"], body["profile"] = profile.status_code, profile.content
                register = await client.post(
                    f"/{VERSION}/{person.phone_number_id}/register", content=REGISTER_BODY, headers=AUTH
                )
                status["register"], body["register"] = register.status_code, register.content
            # Meta then reports the text's delivery by webhook, as for any message the business sent.
            wamid = orjson.loads(body["text"])["messages"][0]["id"]
            delivered = pipeline.events_of([pipeline.status(person, wamid, "delivered", 1_767_000_000)])
            await pipeline.produce(kafka_bootstrap, topic, delivered)
            # A send whose gateway died after forwarding it, an hour before: only its attempt is journaled.
            crashed = text(person, "gateway died")
            await pipeline.produce(
                kafka_bootstrap,
                topic,
                [
                    attempt_event(
                        SendContext(
                            send_id=CRASHED_SEND_ID,
                            waba_id=person.waba_id,
                            phone_number_id=person.phone_number_id,
                            raw=orjson.dumps(crashed),
                            request=crashed,
                            received_at=rfc3339_millis(datetime.now(UTC) - timedelta(hours=1)),
                        )
                    )
                ],
            )
            records = await read_to_end(kafka_bootstrap, topic, partitions=1)
            events = [e for _k, v, h in records for e in split_record(v, h).events]
            archiver = pipeline.archiver_settings(
                demo_env, topic, dlq, prefix, graph=fake.graph_settings(attempts=1, backoff_s=0)
            )
            async with pipeline.running_archiver(archiver):
                await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
            access = await open_access(pipeline.retention_settings(demo_env, prefix))
            try:
                actions = Actions(access, RetentionMetrics(CollectorRegistry()))
                operator = Operator("test", "dpo")
                conversation = await actions.messages(operator, contact=person.wa_id, reason="gateway integration test")
                files = [
                    b"".join([chunk async for chunk in medium.chunks])
                    async for medium in actions.media(operator, conversation, reason="gateway integration test")
                ]
            finally:
                await access.close()
            yield Sent(
                person,
                status,
                body,
                fake,
                records,
                conversation.messages,
                list(fake.passed),
                "\n".join(handler.lines),
                prefix,
                files,
            )
    finally:
        logging.getLogger().removeHandler(handler)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(level=logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


def outbound(sent: Sent, outcome: str) -> list[ConversationMessage]:
    return [m for m in sent.conversation if m.kind == "outbound" and m.payload["gateway"]["outcome"] == outcome]


async def test_a_text_and_a_template_are_archived_with_metas_message_id_and_their_statuses(sent: Sent) -> None:
    assert sent.status["text"] == sent.status["template"] == 200
    by_body = {m.payload["request"]["type"]: m for m in outbound(sent, "sent")}
    assert set(by_body) == {"text", "template", "image", "document"}
    text_message = by_body["text"]
    assert text_message.message_id == orjson.loads(sent.body["text"])["messages"][0]["id"]
    assert text_message.payload["request"]["text"]["body"] == "your parcel left the depot"
    assert text_message.direction == "outbound"
    assert [state for state, _ in text_message.statuses] == ["delivered"]
    template = by_body["template"]
    assert template.payload["gateway"]["text"] == (
        "Order #4471\nHello Ana, your refund of €42 is on its way.\nReply STOP to opt out"
    )
    assert template.message_id == orjson.loads(sent.body["template"])["messages"][0]["id"]


async def test_an_uploaded_image_sent_by_id_is_archived_byte_exact_under_the_person(sent: Sent) -> None:
    assert sent.status["upload"] == sent.status["image"] == 200
    assert orjson.loads(sent.body["upload"])["id"] == sent.fake.uploads[0]
    (image,) = [m for m in outbound(sent, "sent") if m.type == "image"]
    assert image.payload["request"]["image"]["caption"] == "your receipt"
    assert image.media is not None
    assert image.media["status"] == "archived"
    assert PHOTO in sent.files


async def test_a_document_sent_by_link_is_fetched_and_archived_byte_exact(sent: Sent) -> None:
    assert sent.status["document"] == 200
    (document,) = [m for m in outbound(sent, "sent") if m.type == "document"]
    assert document.media is not None
    assert document.media["status"] == "archived"
    assert sorted(sent.files) == sorted([PHOTO, INVOICE])


async def test_metas_answers_come_back_verbatim_errors_archived_and_nothing_retried(sent: Sent) -> None:
    # Each send reached the stand-in exactly once (seven sends, the lost one included), in order.
    assert len(sent.fake.sends) == 7
    answered = list(sent.fake.answers)
    assert [sent.body[name] for name in ("text", "template", "image", "document", "131056", "130429")] == [
        a for _s, a in answered
    ]
    assert sent.status["131056"] == sent.status["130429"] == 400
    assert orjson.loads(sent.body["131056"])["error"]["code"] == 131056
    refused = {m.payload["response"]["error"]["code"]: m for m in outbound(sent, "refused")}
    assert set(refused) == {131056, 130429}
    assert refused[130429].payload["gateway"]["http_status"] == 400
    assert refused[130429].message_id is None


async def test_a_lost_answer_is_archived_unknown(sent: Sent) -> None:
    assert sent.status["lost"] == 504
    (lost,) = outbound(sent, "unknown")
    assert lost.payload["request"]["text"]["body"] == "answer lost"
    assert lost.payload["response"] is None


async def test_a_send_whose_outcome_was_never_journaled_reads_outcome_unknown(sent: Sent) -> None:
    """The gateway died between forwarding and journaling the outcome: its attempt stands as the business's
    message, outcome unknown (it may have reached the customer); every concluded send is its outcome alone."""
    attempts = [m for m in sent.conversation if m.kind == "send_attempt"]
    assert [(m.payload["gateway"]["send_id"], m.direction, m.send_outcome) for m in attempts] == [
        (CRASHED_SEND_ID, "outbound", "unknown")
    ]
    assert attempts[0].payload["request"]["text"]["body"] == "gateway died"
    assert sorted(m.send_outcome or "" for m in sent.conversation if m.kind == "outbound") == [
        "refused",
        "refused",
        "sent",
        "sent",
        "sent",
        "sent",
        "unknown",
    ]


async def test_every_send_is_journaled_before_its_outcome(sent: Sent) -> None:
    events = [e for _k, v, h in sent.records for e in split_record(v, h).events]
    kinds = [(e.kind, e.payload["gateway"]["send_id"]) for e in events if e.kind in ("send_attempt", "outbound")]
    attempts = [send_id for kind, send_id in kinds if kind == "send_attempt" and send_id != CRASHED_SEND_ID]
    assert len(attempts) == 7
    for send_id in attempts:
        assert kinds.index(("send_attempt", send_id)) < kinds.index(("outbound", send_id))


async def test_other_paths_pass_through_unchanged(sent: Sent) -> None:
    profile, register = sent.passed
    assert profile["method"] == "GET"
    assert profile["path"] == f"/{VERSION}/{sent.person.phone_number_id}/whatsapp_business_profile"
    assert profile["query"] == "fields=about%2Cemail"
    assert profile["x_custom"] == "kept"
    assert register["method"] == "POST"
    assert register["body_sha256"] == hashlib.sha256(REGISTER_BODY).hexdigest()
    assert orjson.loads(sent.body["register"])["received"]["path"].endswith("/register")


async def test_the_bearer_token_is_nowhere_but_on_the_way_to_meta(
    sent: Sent, pg_pool: asyncpg.Pool, s3_client: Any, demo_env: dict[str, str]
) -> None:
    secret = TOKEN.encode()
    assert all(secret not in value and secret not in key for key, value, _h in sent.records)
    assert all(secret not in v for _k, _v, headers in sent.records for _n, v in headers)
    assert TOKEN not in sent.logs
    bucket = demo_env["WA_ARCHIVER_S3__BUCKET"]
    listed = s3_client.list_objects_v2(Bucket=bucket, Prefix=sent.prefix)
    keys = [item["Key"] for item in listed.get("Contents", [])]
    assert keys
    assert all(secret not in s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() for key in keys)
    # This run's index rows (by their objects' keys) and the newest audit rows, as text.
    rows = await pg_pool.fetch(
        "SELECT t::text AS row FROM archived_events t WHERE object_key >= $1 AND object_key < $1 || '~'", sent.prefix
    )
    rows += await pg_pool.fetch("SELECT t::text AS row FROM audit_log t ORDER BY audit_id DESC LIMIT 1000")
    assert rows
    assert all(TOKEN not in row["row"] for row in rows)


async def test_without_kafka_nothing_is_sent(kafka_bootstrap: str) -> None:
    person = Person.fresh()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    async with FakeGraphApi(token=TOKEN) as fake:
        settings = gateway_settings(person, fake.base_url, f"127.0.0.1:{port}", "unreachable", produce_deadline_s=1)
        app = GatewayApp(settings, registry=CollectorRegistry(), ops=False)
        async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
            answer = await client.post(
                f"/{VERSION}/{person.phone_number_id}/messages",
                json=text(person, "not without the archive"),
                headers=AUTH,
            )
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == 2
        assert fake.sends == []
        assert fake.requests == []
