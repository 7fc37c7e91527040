"""The relay (services/relay): deliveries per second per destination and CPU per delivery, then the lag a
destination sees at a steady rate of webhooks.

The relay runs as a process (``python -m services.relay``) against the real Kafka; the receivers (the company's
systems) are small HTTP servers in this process that answer 200 at once, so the figures are the relay's.

1. **Backlog**: ``--backlog`` signed webhooks journaled on a fresh topic of 6 partitions (as ingest writes them,
   keyed by 24 business numbers), then the relay started with ``--destinations`` destinations: each one's
   deliveries per second until it has them all, and the relay's CPU per delivery over that window.
2. **Steady rate**: with the relay caught up, ``--rate`` webhooks/s journaled for ``--seconds``; a webhook's lag is
   its arrival at the receiver minus the time its journal record was acknowledged (the time ingest would have
   answered Meta), p50/p99/max over every webhook of every destination.

    python -m bench.relay [--backlog 20000 --destinations 1 --rate 1000 --seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import httpx
import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import RESULTS, CpuMeter, demo_env, ensure_stack, listening, start_module, wait_http, write_result
from devtools.broker import create_topic
from devtools.serving import free_port, serve_asgi
from services.core.journal import webhook_record
from services.core.kafka import AckedProducer, OutgoingRecord
from services.core.settings import KafkaSettings
from services.ingest.signature import sign
from services.tools.loadgen import webhook_body

PARTITIONS = 6
NUMBERS = [f"1000000000{n:05d}" for n in range(24)]
SECRET = b"bench-relay-app-secret"
SENT_AT = re.compile(rb'"wamid\.bench\.(\d+)\.(\d+)"')

Message = MutableMapping[str, Any]


class Receiver:
    """Answers 200 at once; records when each webhook arrived and the time the bench wrote into it."""

    def __init__(self) -> None:
        self.count = 0
        self.lags: list[float] = []
        self.target = 0
        self.reached = asyncio.Event()

    def expect(self, total: int) -> None:
        """Set ``reached`` once ``total`` webhooks arrived."""
        self.target = total
        self.reached.clear()
        if self.count >= total:
            self.reached.set()

    async def __call__(
        self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            return
        chunks = []
        while True:
            message = await receive()
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        arrived = time.time()
        self.count += 1
        if self.count >= self.target > 0:
            self.reached.set()
        found = SENT_AT.search(b"".join(chunks))
        if found is not None and found.group(1) != b"0":
            self.lags.append(arrived - int(found.group(1)) / 1e6)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


def record(topic: str, n: int, stamp_us: int) -> OutgoingRecord:
    """A journal record as ingest writes it: a messages webhook of one business number, signed by Meta's secret."""
    number = NUMBERS[n % len(NUMBERS)]
    value: dict[str, object] = {
        "messages": [{"id": f"wamid.bench.{stamp_us}.{n}", "type": "text", "text": {"body": "caf\u00e9 " * 20}}]
    }
    raw = webhook_body("WABA", number, value)
    return webhook_record(topic, number, raw, signature=sign(raw, SECRET), received_at="2026-12-06T00:00:00.000Z")


async def journal(producer: AckedProducer, topic: str, count: int) -> None:
    batch = 500
    for start in range(0, count, batch):
        records = tuple(record(topic, n, 0) for n in range(start, min(count, start + batch)))
        await producer.produce(records, deadline_s=30)


async def steady(producer: AckedProducer, topic: str, rate: int, seconds: float, first: int) -> int:
    """``rate`` webhooks/s for ``seconds``, handed to Kafka every 10 ms as they fall due, each stamped with the time
    it is handed over. Returns how many were journaled."""
    started = time.monotonic()
    sent = 0
    pending: list[asyncio.Task[None]] = []
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(rate * elapsed) + 1 - sent
        if due > 0:
            stamp = int(time.time() * 1e6)
            records = tuple(record(topic, first + sent + i, stamp) for i in range(due))
            pending.append(asyncio.create_task(producer.produce(records, deadline_s=30)))
            sent += due
        await asyncio.sleep(0.01)
    await asyncio.gather(*pending)
    return sent


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = demo_env()
    bootstrap = f"127.0.0.1:{env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=PARTITIONS, prefix="bench-relay")
    run_id = uuid.uuid4().hex[:8]
    names = [f"bench-{run_id}-{d}" for d in range(args.destinations)]
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(f"wa-relay-{name}-parked", 1, 1) for name in names])
    finally:
        await admin.close()
    producer = AckedProducer(KafkaSettings(bootstrap_servers=bootstrap, events_topic=topic))
    await producer.start()
    await producer.wait_connected(30)
    await journal(producer, topic, args.backlog)

    receivers = [Receiver() for _ in names]
    ops_port = free_port()
    async with contextlib.AsyncExitStack() as servers:
        urls = [await servers.enter_async_context(serve_asgi(r, lifespan="off")) for r in receivers]
        relay_env = {
            **env,
            "WA_RELAY_PORT": str(ops_port),
            "WA_RELAY_LOG_LEVEL": "WARNING",
            "WA_RELAY_KAFKA__EVENTS_TOPIC": topic,
            "WA_RELAY_DESTINATIONS": orjson.dumps(
                [{"name": name, "url": url} for name, url in zip(names, urls, strict=True)]
            ).decode(),
        }
        log = args.log_dir / "relay.log"
        relay = start_module("services.relay", relay_env, log)
        try:
            await asyncio.to_thread(wait_http, f"http://127.0.0.1:{ops_port}/readyz", 60)
            meter = CpuMeter({"relay": relay.pid})
            started = time.monotonic()
            done_at: dict[str, float] = {}

            async def delivered(name: str, receiver: Receiver, total: int) -> None:
                receiver.expect(total)
                await receiver.reached.wait()
                done_at[name] = time.monotonic() - started

            waits = [delivered(n, r, args.backlog) for n, r in zip(names, receivers, strict=True)]
            try:
                await asyncio.wait_for(asyncio.gather(*waits), args.timeout_s)
            except TimeoutError:
                raise SystemExit(
                    f"backlog not delivered in {args.timeout_s}s: {[r.count for r in receivers]}"
                ) from None
            meter.stop()
            cpu = meter.per_unit(args.backlog * len(names))
            backlog = {
                "webhooks": args.backlog,
                "destinations": len(names),
                "deliveries_per_s_per_destination": [round(args.backlog / done_at[n]) for n in names],
                "relay_cpu_us_per_delivery": cpu["cpu_us_per_unit"]["relay"],
                "machine_busy_fraction": cpu["machine_busy_fraction"],
            }
            print(f"backlog: {backlog}", flush=True)

            for receiver in receivers:
                receiver.lags.clear()
            sent = await steady(producer, topic, args.rate, args.seconds, args.backlog)
            for receiver in receivers:
                receiver.expect(args.backlog + sent)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.gather(*(r.reached.wait() for r in receivers)), args.timeout_s)
            lags = [lag for r in receivers for lag in r.lags]
            steady_figures = {
                "rate_per_s": args.rate,
                "seconds": args.seconds,
                "webhooks": sent,
                "delivered_per_destination": [r.count - args.backlog for r in receivers],
                "lag_p50_ms": round(percentile(lags, 0.5) * 1000, 1),
                "lag_p99_ms": round(percentile(lags, 0.99) * 1000, 1),
                "lag_max_ms": round(max(lags) * 1000, 1) if lags else None,
                "lag_mean_ms": round(statistics.fmean(lags) * 1000, 1) if lags else None,
            }
            print(f"steady: {steady_figures}", flush=True)
            async with httpx.AsyncClient() as client:
                metrics = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
            parked = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("wa_relay_parked_total{")
            )
        finally:
            relay.terminate()
            relay.wait(timeout=60)
            await producer.stop()
    return {"backlog": backlog, "steady": steady_figures, "parked": parked}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backlog", type=int, default=20_000)
    parser.add_argument("--destinations", type=int, default=1)
    parser.add_argument("--rate", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--timeout-s", type=float, default=300)
    args = parser.parse_args()
    if not listening(int(demo_env()["WA_KAFKA_PORT"])):
        ensure_stack()  # the relay needs Kafka only: no migration to wait for when it is up
    args.log_dir = RESULTS / "logs"
    args.log_dir.mkdir(parents=True, exist_ok=True)
    figures = asyncio.run(run(args))
    write_result("relay", figures)


if __name__ == "__main__":
    main()
