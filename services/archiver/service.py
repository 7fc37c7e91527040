"""Wiring of the archiver process: settings → adapters → consumer loop, with a clean drain on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Callable

import asyncpg
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from services.archiver.batching import FlushPolicy
from services.archiver.consumer import ArchiverLoop, Rebalance
from services.archiver.inflight import InflightLedger
from services.archiver.media import MediaFetcher
from services.archiver.metrics import ArchiverMetrics
from services.archiver.settings import ArchiverSettings
from services.archiver.sweep import MediaSweep
from services.archiver.writer import BatchWriter
from services.core.bucket import ArchiveBucket
from services.core.budget import ByteBudget
from services.core.crypto import DekCache, LocalKek
from services.core.kafka import AckedProducer
from services.core.key_copies import KeyCopies
from services.core.keyring import Keyring
from services.core.ops_http import OpsServer, ops_app
from services.core.policy import DEFAULT_POLICY, load_policy
from services.core.retry import Attempt, RetryPolicy, Stopped, sleep_until_stopped
from services.core.runtime import FullCollections
from services.core.schema import SchemaNotCurrent, connect_pool
from services.evidence.chain import Chain

log = logging.getLogger("wa_archive.archiver")


# Dependencies may start after us (or be down for maintenance) at start-up: wait for them until stopped.
START_UP_RETRY = RetryPolicy(initial_s=0.5, max_s=10.0, jitter=0.2)


def _log_start_up_retry(dependency: str) -> Callable[[Attempt], None]:
    def log_retry(attempt: Attempt) -> None:
        log.warning(
            "%s not reachable (%s); retrying in %.1fs", dependency, type(attempt.error).__name__, attempt.delay_s
        )

    return log_retry


async def connect_pool_patiently(dsn: str, *, min_size: int, max_size: int, stop: asyncio.Event) -> asyncpg.Pool | None:
    """A pool once PostgreSQL answers with a schema at least as new as this build (the migrator, a Job beside
    the Deployments, may not have run yet), or None if we are stopped first."""
    try:
        return await START_UP_RETRY.run(
            lambda: connect_pool(dsn, min_size=min_size, max_size=max_size, schema_wait_s=0),
            retry_on=lambda exc: isinstance(
                exc, OSError | asyncpg.PostgresError | asyncpg.InterfaceError | SchemaNotCurrent
            ),
            on_retry=_log_start_up_retry("postgres"),
            sleep=sleep_until_stopped(stop),
        )
    except Stopped:
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
    sweeping: asyncio.Task[None] | None = None
    try:
        if pool is None:
            return
        kek = LocalKek(settings.keys.kek_bytes(), settings.keys.current_kek_id)
        bucket = ArchiveBucket(settings.s3)
        # Every new key is copied to the bucket before a record is sealed with it (services/core/key_copies.py).
        keyring = Keyring(pool, kek, DekCache(settings.dek_cache_size), copies=KeyCopies(bucket))
        if settings.graph.token is not None:
            budget = ByteBudget(settings.media.budget_bytes)
            media = MediaFetcher(
                settings.graph.base_url,
                settings.graph.token.get_secret_value(),
                attempts=settings.graph.attempts,
                backoff_s=settings.graph.backoff_s,
                timeout_s=settings.graph.timeout_s,
                max_bytes=settings.graph.max_bytes,
                egress=settings.graph.egress(),
                budget=budget,
            )
            metrics.media_budget_in_use.set_function(lambda: budget.in_use)
        writer = BatchWriter(
            topic=settings.kafka.events_topic,
            dlq_topic=settings.kafka.dlq_topic,
            bucket=bucket,
            pool=pool,
            keyring=keyring,
            pepper=settings.keys.pepper_bytes(),
            dlq=dlq,
            metrics=metrics,
            media=media,
            media_concurrency=settings.graph.concurrency,
            media_chunk_bytes=settings.media.chunk_bytes,
            media_part_bytes=settings.media.part_bytes,
            policy=load_policy(settings.retention_policy_file) if settings.retention_policy_file else DEFAULT_POLICY,
            retry=RetryPolicy(initial_s=settings.retry_initial_s, max_s=settings.retry_max_s, jitter=0.2),
            max_concurrent_writes=settings.max_concurrent_writes,
            unexpected_attempts=settings.unexpected_attempts,
            ledger=InflightLedger(pool, group_id=settings.group_id, topic=settings.kafka.events_topic),
            crash_fan_out=settings.crash_fan_out,
            chain=Chain(bucket),
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
            collections=FullCollections(),
        )
        state["loop"] = loop
        consumer.subscribe([settings.kafka.events_topic], listener=Rebalance(loop))
        await start_consumer_patiently(consumer, stop)
        if stop.is_set():
            return
        if media is not None and settings.media.sweep_interval_s > 0:
            sweep = MediaSweep(
                pool=pool,
                bucket=writer.bucket,
                keyring=keyring,
                fetcher=media,
                metrics=metrics,
                chunk_bytes=settings.media.chunk_bytes,
                part_bytes=settings.media.part_bytes,
                batch=settings.media.sweep_batch,
                chain=writer.chain,
            )
            sweeping = asyncio.create_task(sweep.run(stop, interval_s=settings.media.sweep_interval_s))
        try:
            await loop.run(stop)
        finally:
            if sweeping is not None:
                # It ends with the stop event; a download in flight is cancelled (its upload is never completed,
                # and its entry comes due again when its lease runs out).
                sweeping.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await sweeping
            # Within the grace period, write and commit what is buffered; past it (a dependency is down and the
            # writes are retrying), give up: the uncommitted records are consumed again after the restart.
            try:
                await asyncio.wait_for(loop.drain(), settings.drain_timeout_s)
            except TimeoutError:
                log.warning("drain not finished within %.0fs; leaving the rest uncommitted", settings.drain_timeout_s)
            except Exception as exc:
                log.warning("drain failed (%s); leaving the rest uncommitted", type(exc).__name__)
            await loop.abandon()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 10)
    finally:
        if media is not None:
            await media.aclose()
        # Bounded too: with Kafka or PostgreSQL away, a graceful close would wait for them.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(dlq.stop(), 10)
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), 10)
            except TimeoutError:
                pool.terminate()
        await ops.stop()


async def start_consumer_patiently(consumer: AIOKafkaConsumer, stop: asyncio.Event) -> None:
    """Start the consumer once Kafka answers; return early (not started) if we are stopped first."""
    with contextlib.suppress(Stopped):
        await START_UP_RETRY.run(
            consumer.start,
            # aiokafka raises several unrelated types when the broker is away
            retry_on=lambda exc: True,
            on_retry=_log_start_up_retry("kafka"),
            sleep=sleep_until_stopped(stop),
        )


def install_stop_signals(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
