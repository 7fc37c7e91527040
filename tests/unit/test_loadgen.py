"""The load generator: exact synthetic traffic, Meta-like retries, and an HTTP client that reads answers right."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
from collections import Counter
from collections.abc import AsyncIterator, Callable

import orjson
import pytest

from services.core.events import parse_webhook
from services.tools.loadgen import HttpConnection, Tenant, send_load, synthetic_deliveries

pytestmark = pytest.mark.unit

SECRET = b"load-secret"


def test_synthetic_deliveries_hold_exactly_the_asked_events_all_distinct() -> None:
    tenant = Tenant.fresh(random.Random(3))
    deliveries = list(synthetic_deliveries(5_000, tenant=tenant, seed=3))
    ids = [i for d in deliveries for i in d.event_ids]
    assert len(ids) == 5_000
    assert len(set(ids)) == 5_000
    kinds: Counter[str] = Counter()
    wamids: set[str] = set()
    for delivery in deliveries:
        events = parse_webhook(
            delivery.body, raw_sha256=hashlib.sha256(delivery.body).hexdigest(), signature=None, received_at="-"
        )
        assert tuple(e.event_id for e in events) == delivery.event_ids
        for event in events:
            assert event.phone_number_id == tenant.phone_number_id
            kinds[event.kind] += 1
            if event.kind == "message":
                wamids.add(str(event.payload["id"]))
            else:
                assert event.payload["id"] in wamids  # a status refers to a message sent before it
    assert kinds["message"] > kinds["status"] > 0
    assert max(len(d.event_ids) for d in deliveries) > 1  # Meta batches a busy sender


Handler = Callable[[bytes], tuple[int, bytes, dict[str, str]]]


@contextlib.asynccontextmanager
async def http_server(handler: Handler) -> AsyncIterator[str]:
    """A tiny HTTP/1.1 server on 127.0.0.1 that answers with ``handler(body)`` (status, body, extra headers)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while request := await reader.readline():
                assert request.startswith(b"POST ")
                length = 0
                while (line := await reader.readline()) != b"\r\n":
                    name, _, value = line.decode().partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                status, body, headers = handler(await reader.readexactly(length))
                if headers.get("transfer-encoding") == "chunked":
                    payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:3], body[3:]) if c) + b"0\r\n\r\n"
                else:
                    headers = {**headers, "content-length": str(len(body))}
                    payload = body
                head = f"HTTP/1.1 {status} X\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
                writer.write(head.encode() + payload)
                await writer.drain()
                if headers.get("connection") == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/webhooks/whatsapp"
    finally:
        server.close()


async def test_connection_reads_sized_chunked_and_closing_answers() -> None:
    answers = iter(
        [
            (200, b"ok", {}),
            (503, b"unavailable", {"transfer-encoding": "chunked"}),
            (200, b"", {"connection": "close"}),
            (401, b"no", {}),
        ]
    )
    async with http_server(lambda _body: next(answers)) as url:
        connection = HttpConnection(url, timeout_s=5)
        statuses = [await connection.post(b"{}", {}) for _ in range(4)]
        connection.close()
        assert statuses == [200, 503, 200, 401]


async def test_send_load_retries_like_meta_until_acknowledged() -> None:
    seen: Counter[bytes] = Counter()

    def flaky(body: bytes) -> tuple[int, bytes, dict[str, str]]:
        seen[body] += 1
        orjson.loads(body)  # a whole JSON body arrived
        return (503, b"", {}) if seen[body] <= 2 else (200, b"", {})

    tenant = Tenant.fresh(random.Random(5))
    deliveries = list(synthetic_deliveries(30, tenant=tenant, seed=5))
    async with http_server(flaky) as url:
        report = await send_load(deliveries, url=url, app_secret=SECRET, concurrency=4)
    assert report.acknowledged_deliveries == len(deliveries)
    assert report.retries == 2 * len(deliveries)
    assert report.answers == Counter({503: 2 * len(deliveries), 200: len(deliveries)})
    assert report.acknowledged_ids == {i for d in deliveries for i in d.event_ids}


async def test_send_load_gives_up_after_its_deadline_and_reports_it() -> None:
    tenant = Tenant.fresh(random.Random(6))
    deliveries = list(synthetic_deliveries(5, tenant=tenant, seed=6))
    async with http_server(lambda _body: (500, b"", {})) as url:
        report = await send_load(deliveries, url=url, app_secret=SECRET, concurrency=2, give_up_after_s=0.3)
    assert report.given_up == len(deliveries)
    assert report.acknowledged_ids == set()


async def test_send_load_paces_to_the_asked_rate() -> None:
    tenant = Tenant.fresh(random.Random(7))
    deliveries = list(synthetic_deliveries(200, tenant=tenant, seed=7))
    async with http_server(lambda _body: (200, b"", {})) as url:
        report = await send_load(deliveries, url=url, app_secret=SECRET, events_per_s=400, concurrency=4)
    assert 0.4 <= report.duration_s <= 2.0  # 200 events at 400/s: about half a second, not as fast as possible
    assert report.acknowledged_deliveries == len(deliveries)
