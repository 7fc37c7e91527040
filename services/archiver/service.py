"""Wiring of the archiver process: settings → adapters → consumer loop, with a clean drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal

import asyncpg
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from services.archiver.batching import FlushPolicy
from services.archiver.consumer import ArchiverLoop, Rebalance
from services.archiver.media import MediaFetcher
from services.archiver.metrics import ArchiverMetrics
from services.archiver.settings import ArchiverSettings
from services.archiver.writer import BatchWriter
from services.core.bucket import ArchiveBucket
from services.core.crypto import DekCache, LocalKek
from services.core.kafka import AckedProducer
from services.core.keyring import Keyring
from services.core.ops_http import OpsServer, ops_app
from services.core.policy import DEFAULT_POLICY, load_policy
from services.core.schema import connect_pool

log = logging.getLogger("wa_archive.archiver")


async def connect_pool_patiently(dsn: str, *, min_size: int, max_size: int, stop: asyncio.Event) -> asyncpg.Pool | None:
    """PostgreSQL may start after us (or be down for maintenance): retry until it answers or we are stopped."""
    delay = 0.5
    while not stop.is_set():
        try:
            return await connect_pool(dsn, min_size=min_size, max_size=max_size)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("postgres not reachable (%s); retrying in %.1fs", type(exc).__name__, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10)
    return None


async def run_archiver(
    settings: ArchiverSettings,
    stop: asyncio.Event,
    *,
    registry: CollectorRegistry | None = None,
) -> None:
    registry = registry or CollectorRegistry()
    metrics = ArchiverMetrics(registry)
    state: dict[str, ArchiverLoop] = {}
    dlq = AckedProducer(settings.kafka)

    def ready() -> bool:
        loop = state.get("loop")
        return loop is not None and loop.ready and dlq.connected

    ops = OpsServer(ops_app(registry, ready), settings.host, settings.port)
    await ops.start()
    await dlq.start()
    pool = await connect_pool_patiently(
        settings.pg.dsn.get_secret_value(),
        min_size=settings.pg.min_connections,
        max_size=settings.pg.max_connections,
        stop=stop,
    )
    media: MediaFetcher | None = None
    try:
        if pool is None:
            return
        kek = LocalKek(settings.keys.kek_bytes(), settings.keys.current_kek_id)
        keyring = Keyring(pool, kek, DekCache(settings.dek_cache_size))
        if settings.graph.token is not None:
            media = MediaFetcher(
                settings.graph.base_url,
                settings.graph.token.get_secret_value(),
                attempts=settings.graph.attempts,
                backoff_s=settings.graph.backoff_s,
                timeout_s=settings.graph.timeout_s,
                max_bytes=settings.graph.max_bytes,
            )
        writer = BatchWriter(
            topic=settings.kafka.events_topic,
            dlq_topic=settings.kafka.dlq_topic,
            bucket=ArchiveBucket(settings.s3),
            pool=pool,
            keyring=keyring,
            pepper=settings.keys.pepper_bytes(),
            dlq=dlq,
            metrics=metrics,
            media=media,
            media_concurrency=settings.graph.concurrency,
            policy=load_policy(settings.retention_policy_file) if settings.retention_policy_file else DEFAULT_POLICY,
            retry_initial_s=settings.retry_initial_s,
            retry_max_s=settings.retry_max_s,
            max_concurrent_writes=settings.max_concurrent_writes,
        )
        consumer = AIOKafkaConsumer(
            **settings.kafka.client_options(),
            group_id=settings.group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=settings.max_partition_fetch_bytes,
            fetch_max_bytes=settings.fetch_max_bytes,
            **settings.consumer_options,
        )
        loop = ArchiverLoop(
            consumer,
            writer,
            metrics,
            policy=FlushPolicy(settings.flush.max_records, settings.flush.max_bytes, settings.flush.max_age_s),
            max_poll_records=settings.max_poll_records,
            max_buffered_records=settings.max_buffered_records,
        )
        state["loop"] = loop
        consumer.subscribe([settings.kafka.events_topic], listener=Rebalance(loop))
        await start_consumer_patiently(consumer, stop)
        if stop.is_set():
            return
        try:
            await loop.run(stop)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(loop.drain(), settings.drain_timeout_s)
            await consumer.stop()
    finally:
        if media is not None:
            await media.aclose()
        await dlq.stop()
        if pool is not None:
            await pool.close()
        await ops.stop()


async def start_consumer_patiently(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
    delay = 0.5
    while not stop.is_set():
        try:
            await consumer.start()
            return
        except Exception as exc:  # aiokafka raises several unrelated types when the broker is away
            log.warning("kafka not reachable (%s); retrying in %.1fs", type(exc).__name__, delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(delay * 2, 10)


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
