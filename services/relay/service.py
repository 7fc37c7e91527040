"""Wiring of the relay process: settings → one consumer loop per destination, a shared parking producer, the ops
endpoints; a clean stop on SIGTERM (what is done is committed; a delivery in flight is delivered again later)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import ssl
from collections.abc import Mapping
from typing import Final
from urllib.parse import urlsplit

from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from services.core.http1 import Http1Pool
from services.core.kafka import AckedProducer
from services.core.ops_http import OpsServer, ops_app
from services.core.retry import Attempt, RetryPolicy, Stopped, sleep_until_stopped
from services.relay.metrics import RelayMetrics
from services.relay.relay import Destination, DestinationLoop, RelayRebalance
from services.relay.settings import DestinationSettings, RelaySettings

log = logging.getLogger("wa_archive.relay")

# Kafka may start after us (or be down for maintenance): wait for it until stopped.
# A receiver's answer is read and dropped; past this the connection is closed instead of read further.
MAX_ANSWER_BYTES: Final = 1024 * 1024
START_UP_RETRY = RetryPolicy(initial_s=0.5, max_s=10.0, jitter=0.2)


async def start_consumer_patiently(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
    """Start the consumer once Kafka answers; return early (not started) if we are stopped first."""

    def log_retry(attempt: Attempt) -> None:
        log.warning("kafka not reachable (%s); retrying in %.1fs", type(attempt.error).__name__, attempt.delay_s)

    with contextlib.suppress(Stopped):
        # aiokafka raises several unrelated types when the broker is away
        await START_UP_RETRY.run(
            consumer.start, retry_on=lambda exc: True, on_retry=log_retry, sleep=sleep_until_stopped(stop)
        )


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


def destination_of(settings: DestinationSettings) -> Destination:
    return Destination(
        name=settings.name,
        url=settings.url,
        fields=frozenset(settings.fields),
        secret=settings.secret.get_secret_value().encode() if settings.secret is not None else None,
        backoff=settings.backoff(),
        parking_topic=settings.topic_for_parking(),
    )


class DestinationClient:
    """POSTs to one destination's URL over kept-alive connections (services/core/http1.py): no redirect is
    followed (the bytes go to its URL only), no proxy is taken from the environment. :meth:`post` returns the
    status, the answer's body read and dropped (never logged: a receiver may echo content), or raises
    :class:`~services.core.http1.RequestFailed` (:class:`~services.core.http1.TimedOut` for a timeout)."""

    def __init__(
        self, url: str, *, connect_timeout_s: float, timeout_s: float, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self._pool = Http1Pool(url, connect_timeout_s=connect_timeout_s, timeout_s=timeout_s, ssl_context=ssl_context)
        parts = urlsplit(url)
        self._target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")

    async def post(self, body: bytes, headers: Mapping[str, str]) -> int:
        encoded = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]
        # Delivery is at least once: a request that met a connection the receiver had closed while idle is sent
        # again on a new one.
        answer = await self._pool.request(
            "POST",
            self._target,
            encoded,
            body,
            max_answer_bytes=MAX_ANSWER_BYTES,
            discard_body=True,
            resend_if_stale=True,
        )
        return answer.status

    async def aclose(self) -> None:
        await self._pool.aclose()


def http_client(settings: DestinationSettings) -> DestinationClient:
    """The client of one destination: its URL and timeouts."""
    return DestinationClient(settings.url, connect_timeout_s=settings.connect_timeout_s, timeout_s=settings.timeout_s)


async def run_relay(settings: RelaySettings, stop: asyncio.Event, *, registry: CollectorRegistry | None = None) -> None:
    registry = registry or CollectorRegistry()
    metrics = RelayMetrics(registry)
    parking = AckedProducer(settings.kafka)
    loops: list[DestinationLoop] = []

    def ready() -> bool:
        return parking.connected and len(loops) == len(settings.destinations) and all(loop.started for loop in loops)

    ops = OpsServer(ops_app(registry, ready), settings.host, settings.port)
    await ops.start()
    await parking.start()
    consumers: list[AIOKafkaConsumer] = []
    clients: list[DestinationClient] = []
    tasks: list[asyncio.Task[None]] = []
    try:
        for destination in settings.destinations:
            consumer = AIOKafkaConsumer(
                **settings.consumer_options(),
                group_id=settings.group_id(destination),
                enable_auto_commit=False,
                auto_offset_reset="earliest",
            )
            client = http_client(destination)
            consumers.append(consumer)
            clients.append(client)
            loop = DestinationLoop(
                consumer,
                destination_of(destination),
                client,
                parking,
                metrics,
                max_buffered_records=settings.max_buffered_records,
                max_poll_records=settings.max_poll_records,
                commit_interval_s=settings.commit_interval_s,
            )
            consumer.subscribe([settings.kafka.events_topic], listener=RelayRebalance(loop))
            await start_consumer_patiently(consumer, stop)
            if stop.is_set():
                return
            loops.append(loop)
        tasks = [asyncio.create_task(loop.run(stop), name=f"relay-{loop.destination.name}") for loop in loops]
        log.info("relay started: %s", ", ".join(d.name for d in settings.destinations))
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        for task in done:
            error = task.exception()
            if error is not None:
                raise error
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(Exception):
                await task
        for consumer in consumers:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 10)
        for client in clients:
            await client.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(parking.stop(), 10)
        await ops.stop()
