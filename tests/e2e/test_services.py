"""The three services as real processes on their local ports, driven over HTTP as Meta and an operator would.

After a run of every sample webhook, `make run`'s crisis, an outbound report, a retrieval and a retention run:
- every Grafana panel's query returns data from the real Prometheus that scraped the services;
- no log line and no metric of any service contains a phone number, a name or message text;
- the admin API refuses anonymous and wrong-role callers;
- the demo's media are archived, and the crisis is indexed and retrievable as the review console will show it.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson
import pytest

from devtools.broker import create_topic
from devtools.demo_crisis import (
    CAMILLE,
    CORRECTED_PRICE,
    HUGO,
    LEA,
    ORDER_CONFIRMATION,
    SEARCH_KEYWORD,
    crisis_messages,
    crisis_webhooks,
)
from devtools.demo_media import with_demo_media
from devtools.devrun import service_commands
from devtools.samples import PAYLOADS_DIR, REPO_ROOT
from services.core.events import Event, parse_webhook
from services.core.index import binary_key
from services.tools.replay import load_bodies, post_signed, replay
from tests.e2e.processes import PORTS, running_services
from tests.helpers.reader_cases import reader_case

# exclusive: its retention run goes over the whole shared index, and would delete the expired objects another
# test is in the middle of checking.
pytestmark = [pytest.mark.e2e, pytest.mark.exclusive]

SAMPLES = PAYLOADS_DIR
OWN_NUMBER = "106540352242922"  # the demo's business number (the sample payloads')
CONTACT = "1650" + "".join(random.choice("0123456789") for _ in range(7))
SECRET_TEXT = "my card number ends in 4242 and I live at 12 Elm Street"
# `make run`'s crisis (devtools/demo_crisis.py), sent as devrun sends it; its ids carry the time of this run.
CRISIS_NOW = int(time.time())
CRISIS = crisis_webhooks(CRISIS_NOW)


@dataclass
class Services:
    env: dict[str, str]
    logs: dict[str, Path]


# Keys whose values identify a customer (or a group of them: a group id names its participants' conversation).
CUSTOMER_KEYS = frozenset(
    {
        "wa_id",
        "from",
        "to",
        "recipient_id",
        "user_id",
        "from_user_id",
        "group_id",
        "input",
        "recipient_participant_id",
        "recipient_participant_user_id",
        "participant_recipient_id",
    }
)


def is_personal(key: str, value: str) -> bool:
    customer_id = key in CUSTOMER_KEYS and not value.startswith("1555")
    return customer_id or key in ("name", "formatted_name") or (key == "body" and " " in value)


def personal_strings() -> set[str]:
    """Customer ids, names and message texts found in the sample webhooks (what must never leak)."""
    found: set[str] = {CONTACT, SECRET_TEXT, "Sheena Nelson"}

    def walk(node: Any, key: str = "") -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, k)
        elif isinstance(node, list):
            for v in node:
                walk(v, key)
        elif isinstance(node, str) and len(node) >= 6 and is_personal(key, node):
            found.add(node)

    for path in SAMPLES.glob("*.json"):
        walk(json.loads(path.read_bytes()))
    for body in CRISIS:
        walk(json.loads(body))
    return found


def crisis_events() -> list[Event]:
    """The crisis's events, as ingest splits them (their ids are the index's)."""
    return [e for body in CRISIS for e in parse_webhook(body, raw_sha256="-", signature=None, received_at="-")]


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory, demo_env: dict[str, str]) -> Iterator[Services]:
    logs_dir = tmp_path_factory.mktemp("service-logs")
    # A topic of its own: the shared wa.events.v1 may hold a backlog from `make run` or the benchmarks.
    topic = asyncio.run(create_topic(f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}", partitions=3, prefix="e2e-services"))
    env = {
        **os.environ,
        **demo_env,
        "WA_INGEST_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_GROUP_ID": f"e2e-{topic}",
        "WA_RETENTION_RUN_INTERVAL_S": "0",
        "WA_RETENTION_METRICS_REFRESH_S": "1",
    }
    # demo-reader reviews the business numbers the test's webhooks come to (readers read their cases only).
    numbers = {OWN_NUMBER, *(e.phone_number_id for e in crisis_events() if e.phone_number_id)}
    with (
        running_services(env, list(service_commands(env["WA_ARCHIVER_GRAPH__TOKEN"])), logs_dir) as logs,
        reader_case("demo-reader", sorted(numbers)),
    ):
        yield Services(env, logs)


@pytest.fixture(scope="module")
async def driven(services: Services) -> Services:
    """Meta's webhooks, an outbound report, an operator's retrieval and a retention run."""
    env = services.env
    secret = orjson.loads(env["WA_INGEST_APP_SECRETS"])[0].encode()
    url = "http://127.0.0.1:8080/webhooks/whatsapp"
    # As `make run` sends them: the media hashes of the files the Graph API stand-in serves.
    report = await replay(load_bodies([SAMPLES], transform=with_demo_media), url=url, app_secret=secret)
    assert report.acknowledged == report.sent
    now = int(time.time())
    own = {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {"display_phone_number": "15550783881", "phone_number_id": OWN_NUMBER},
                            "contacts": [{"profile": {"name": "Sheena Nelson"}, "wa_id": CONTACT}],
                            "messages": [
                                {
                                    "from": CONTACT,
                                    "id": f"wamid.E2E{now}",
                                    "timestamp": str(now),
                                    "type": "text",
                                    "text": {"body": SECRET_TEXT},
                                }
                            ],
                        },
                    }
                ],
            }
        ],
    }
    async with httpx.AsyncClient(timeout=30) as client:
        assert await post_signed(client, url, orjson.dumps(own), secret) == 200
        for body in CRISIS:
            assert await post_signed(client, url, body, secret) == 200
        outbound = await client.post(
            "http://127.0.0.1:8080/v1/outbound",
            headers={"authorization": f"Bearer {orjson.loads(env['WA_INGEST_OUTBOUND_TOKENS'])[0]}"},
            json={
                "phone_number_id": OWN_NUMBER,
                "request": {
                    "messaging_product": "whatsapp",
                    "to": CONTACT,
                    "type": "text",
                    "text": {"body": SECRET_TEXT},
                },
                "response": {"messages": [{"id": f"wamid.OUT{now}"}], "contacts": [{"wa_id": CONTACT}]},
            },
        )
        assert outbound.status_code == 200
        tokens = orjson.loads(env["WA_RETENTION_ADMIN_TOKENS"])
        reader = {"authorization": f"Bearer {tokens['demo-reader']['token']}"}
        dpo = {"authorization": f"Bearer {tokens['demo-dpo']['token']}"}
        messages: list[dict[str, Any]] = []
        for _ in range(100):  # bounded: the archiver flushes within ~2 s
            answer = await client.post(
                "http://127.0.0.1:8082/v1/messages", json={"contact": CONTACT, "reason": "e2e check"}, headers=reader
            )
            # 503: still opening the archive; 403: nothing of the person's is archived yet, so no case of the reader
            # covers anything of theirs (a reader is not told whether the archive holds someone outside their cases).
            assert answer.status_code in (200, 403, 503), answer.text
            if answer.status_code == 200:
                messages = answer.json()["messages"]
                if len(messages) >= 2:
                    break
            await asyncio.sleep(0.3)
        assert answer.status_code == 200, answer.text
        inbound = [m for m in messages if m["kind"] == "message"]
        assert [m["payload"]["text"]["body"] for m in inbound] == [SECRET_TEXT], services.logs["archiver"].read_text()[
            -3000:
        ]
        assert any(m["kind"] == "outbound" for m in messages)
        run = await client.post("http://127.0.0.1:8082/v1/retention/run", json={"dry_run": False}, headers=dpo)
        assert run.status_code == 200
    await asyncio.sleep(5)  # two scrapes and a rule evaluation (every 2 s locally)
    return services


def dashboard_queries() -> list[str]:
    model = json.loads((REPO_ROOT / "deploy" / "grafana" / "wa-archive.json").read_text())
    queries: list[str] = []
    stack = list(model["panels"])
    while stack:
        panel = stack.pop(0)
        stack.extend(panel.get("panels") or [])
        queries.extend(target["expr"] for target in panel.get("targets") or [] if target.get("expr"))
    return queries


async def test_every_dashboard_panel_has_data(driven: Services, prometheus_url: str) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 10
    empty = []
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=10) as client:
        for query in queries:
            result: list[Any] = []
            for _ in range(20):  # bounded: up to ~10 s for the first scrape after a counter appears
                body = (await client.get("/api/v1/query", params={"query": query})).json()
                assert body["status"] == "success", (query, body)
                result = body["data"]["result"]
                if result:
                    break
                await asyncio.sleep(0.5)
            if not result:
                empty.append(query)
    assert empty == [], f"panels without data: {empty}"


async def test_no_personal_data_in_logs_or_metrics(driven: Services) -> None:
    texts = {name: path.read_text(errors="replace") for name, path in driven.logs.items() if name != "graph-api"}
    async with httpx.AsyncClient(timeout=10) as client:
        for name, port in PORTS.items():
            texts[f"{name} /metrics"] = (await client.get(f"http://127.0.0.1:{port}/metrics")).text
    leaks = {(where, secret) for where, text in texts.items() for secret in personal_strings() if secret in text}
    assert leaks == set()
    assert "wa_archiver_events_archived_total" in texts["archiver /metrics"]


async def test_admin_api_refuses_anonymous_and_wrong_roles(driven: Services) -> None:
    tokens = orjson.loads(driven.env["WA_RETENTION_ADMIN_TOKENS"])
    reader = {"authorization": f"Bearer {tokens['demo-reader']['token']}"}
    async with httpx.AsyncClient(base_url="http://127.0.0.1:8082", timeout=10) as client:
        assert (await client.get("/v1/search")).status_code == 401
        assert (
            await client.post("/v1/erasures", json={"contact": CONTACT, "request_ref": "x"}, headers=reader)
        ).status_code == 403
        assert (await client.get("/v1/audit", headers=reader)).status_code == 403


async def test_the_demo_media_are_archived(driven: Services) -> None:
    """`make run`'s media: the stand-in's files with the hashes the demo's webhooks carry, so none is missing."""
    async with httpx.AsyncClient(timeout=10) as client:
        metrics = (await client.get(f"http://127.0.0.1:{PORTS['archiver']}/metrics")).text

    def count(outcome: str) -> float:
        prefix = f'wa_archiver_media_total{{outcome="{outcome}"}}'
        return sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines() if line.startswith(prefix))

    assert count("archived") >= 5, metrics
    assert count("missing") == 0
    assert "sha256 mismatch" not in driven.logs["archiver"].read_text()


async def test_the_crisis_is_indexed_and_retrievable_with_its_photo(driven: Services, pg_pool: asyncpg.Pool) -> None:
    """`make run`'s crisis as the review console will show it: the search's deleted and edited filters find the
    order confirmation, the price and the photo (the index links each revoke and edit to its original), a keyword
    search finds the words (accents ignored), the photo is archived, and the retrieval tells what happened."""
    ids = crisis_messages(CRISIS_NOW)
    events = crisis_events()
    event_of = {e.message_id: e.event_id for e in events if e.kind != "status"}
    electricity = next(e.event_id for e in events if e.kind == "message" and "Électricité" in str(e.payload))
    tokens = orjson.loads(driven.env["WA_RETENTION_ADMIN_TOKENS"])
    reader = {"authorization": f"Bearer {tokens['demo-reader']['token']}"}
    async with httpx.AsyncClient(base_url="http://127.0.0.1:8082", timeout=30) as client:

        async def conversation(contact: str) -> dict[str, dict[str, Any]]:
            answer = await client.post(
                "/v1/messages", json={"contact": contact, "reason": "e2e: the demo crisis"}, headers=reader
            )
            assert answer.status_code == 200, answer.text
            return {m["message_id"]: m for m in answer.json()["messages"]}

        async def search(**query: Any) -> set[str]:
            answer = await client.post("/v1/search", json=query, headers=reader)
            assert answer.status_code == 200, answer.text
            return {hit["event_id"] for hit in answer.json()}

        camille: dict[str, dict[str, Any]] = {}
        lea: dict[str, dict[str, Any]] = {}
        for _ in range(100):  # bounded: the archiver flushes within ~2 s
            camille, lea = await conversation(CAMILLE.wa_id), await conversation(LEA.wa_id)
            order, price, photo = camille.get(ids.order), camille.get(ids.price), lea.get(ids.photo)
            if order and order["deleted"] and price and price["edits"] and photo and photo["deleted"]:
                break
            await asyncio.sleep(0.3)
        logs = driven.logs["archiver"].read_text()[-3000:]
        assert {ids.order, ids.price} <= set(camille), logs
        assert ids.photo in lea, logs
        order, price, photo = camille[ids.order], camille[ids.price], lea[ids.photo]
        assert order["payload"]["text"]["body"] == ORDER_CONFIRMATION
        assert order["deleted"]["how"] == "revoke"
        assert order["deleted"]["by"] == "customer"
        assert (price["kind"], price["direction"], price["latest_status"]) == ("echo", "outbound", "read")
        assert [e["payload"]["edit"]["message"]["text"]["body"] for e in price["edits"]] == [CORRECTED_PRICE]
        assert photo["deleted"]["how"] == "revoke"
        assert photo["media"]["status"] == "archived", photo["media"]
        assert photo["media"]["mime_type"] == "image/png"

        assert event_of[ids.order] in await search(contact=CAMILLE.wa_id, deleted_only=True)
        assert event_of[ids.price] in await search(contact=CAMILLE.wa_id, edited_only=True)
        assert event_of[ids.photo] in await search(contact=LEA.wa_id, deleted_only=True)
        assert event_of[ids.order] in await search(contact=CAMILLE.wa_id, keywords=SEARCH_KEYWORD)
        assert electricity in await search(contact=HUGO.wa_id, keywords="electricite")

    async with pg_pool.acquire() as conn:
        media = await conn.fetchrow(
            "SELECT status, mime_type FROM archived_media WHERE event_id = $1", binary_key(event_of[ids.photo])
        )
    assert media is not None
    assert (media["status"], media["mime_type"]) == ("archived", "image/png")
