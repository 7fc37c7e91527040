"""The consumer loop: Kafka records → per-partition batches → BatchWriter → offset commit.

Guarantees:
- Offsets are committed manually, per partition, as ``last_offset + 1`` of a batch, and only after
  :meth:`BatchWriter.write` returned (the data is durable). Auto-commit is never enabled.
- At most one write is in flight per partition, so commits of a partition happen in offset order; partitions
  are written concurrently.
- Backpressure: while a partition's write is in flight its next batch keeps filling; past
  ``max_buffered_records`` the partition is paused (``pause()``) and resumed when the write finishes. The loop
  never sleeps to slow down.
- Batches close by count, size or age; age is checked on every loop turn (at least every ``poll_timeout_ms``),
  so a quiet partition is flushed on time.
- On revoke, in-flight writes are awaited (and committed) and buffered records are dropped: the new owner
  consumes them again. On shutdown, :meth:`ArchiverLoop.drain` writes and commits everything buffered; the
  caller bounds it by the grace period and then :meth:`ArchiverLoop.abandon` cancels what is still retrying
  (a dependency down): those offsets stay uncommitted and are consumed again, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from services.archiver.batching import FlushPolicy, FlushReason, OpenBatch, plan_flush
from services.archiver.metrics import ArchiverMetrics
from services.archiver.sealing import RawRecord
from services.core.runtime import FullCollections

log = logging.getLogger("wa_archive.archiver")


class BatchSink(Protocol):
    """What the loop needs of :class:`~services.archiver.writer.BatchWriter`: ``write`` returns once the batch is
    durable (objects and index), or raises; the loop commits only after it returned."""

    async def write(self, partition: int, raw: list[RawRecord]) -> object: ...


@dataclass(kw_only=True)
class PartitionState:
    tp: TopicPartition
    batch: OpenBatch[RawRecord] | None = None
    inflight: asyncio.Task[None] | None = None
    inflight_first_ts_ms: int | None = None
    committed: int | None = None
    paused_since: float | None = None


class Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: ArchiverLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        self.loop.adopt(assigned)


class ArchiverLoop:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        writer: BatchSink,
        metrics: ArchiverMetrics,
        *,
        policy: FlushPolicy,
        max_poll_records: int = 5_000,
        max_buffered_records: int = 20_000,
        poll_timeout_ms: int = 200,
        clock: Callable[[], float] = time.monotonic,
        collections: FullCollections | None = None,
    ) -> None:
        self.consumer = consumer
        self.writer = writer
        self.metrics = metrics
        self.policy = policy
        self.max_poll_records = max_poll_records
        self.max_buffered_records = max_buffered_records
        self.poll_timeout_ms = poll_timeout_ms
        self.clock = clock
        # Full garbage collections at a steady pace (memory: services/core/runtime.py); None leaves them to the
        # collector's thresholds.
        self.collections = collections
        self.partitions: dict[TopicPartition, PartitionState] = {}
        self.ready = False

    # ------------------------------------------------------------------ rebalance
    def adopt(self, assigned: list[TopicPartition]) -> None:
        for tp in assigned:
            self.partitions.setdefault(tp, PartitionState(tp=tp))
        log.info("assigned partitions %s", sorted(tp.partition for tp in assigned))

    async def release(self, revoked: list[TopicPartition]) -> None:
        """Finish (and commit) what is in flight for the revoked partitions, drop what is only buffered."""
        for tp in revoked:
            state = self.partitions.get(tp)
            if state is None:
                continue
            if state.inflight is not None:
                with contextlib.suppress(Exception):
                    await state.inflight
            self.partitions.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.metrics.lag_records.remove(str(tp.partition))
        if revoked:
            log.info("revoked partitions %s", sorted(tp.partition for tp in revoked))

    # ------------------------------------------------------------------ main loop
    async def run(self, stop: asyncio.Event) -> None:
        self.ready = True
        try:
            while not stop.is_set():
                fetched = await self.consumer.getmany(
                    timeout_ms=self.poll_timeout_ms, max_records=self.max_poll_records
                )
                self._buffer(fetched)
                if any(state.committed is None for state in self.partitions.values()):
                    await self.refresh_committed()
                self._schedule(self.clock(), drain=False)
                self._observe()
                if self.collections is not None:
                    self.collections.tick()
        finally:
            self.ready = False

    def _buffer(self, fetched: dict[TopicPartition, list[Any]]) -> None:
        now = self.clock()
        for tp, records in fetched.items():
            state = self.partitions.get(tp)
            if state is None:  # fetched just before a revoke: the new owner reads it again
                continue
            for r in records:
                if state.batch is None:
                    state.batch = OpenBatch(opened_at=now)
                state.batch.add(
                    RawRecord(
                        partition=tp.partition,
                        offset=r.offset,
                        timestamp_ms=r.timestamp,
                        key=r.key,
                        value=r.value,
                        headers=tuple(r.headers or ()),
                    ),
                    r.offset,
                    len(r.value or b""),
                )

    def _schedule(self, now: float, *, drain: bool) -> None:
        for state in self.partitions.values():
            if state.inflight is not None and state.inflight.done():
                failed = None if state.inflight.cancelled() else state.inflight.exception()
                if failed is not None:
                    # Going on would commit later batches past this one: stop instead, and let the restart
                    # consume again from the last committed offset.
                    raise RuntimeError(f"a write of partition {state.tp.partition} failed") from failed
                state.inflight = None
            if state.inflight is None:
                reason = FlushReason.DRAIN if drain and state.batch else plan_flush(state.batch, self.policy, now)
                if reason is not None and state.batch is not None:
                    # A batch that grew behind an in-flight write is cut at max_records: objects stay bounded.
                    batch, state.batch = state.batch.split(self.policy.max_records)
                    self.metrics.flushes.labels(reason.value).inc()
                    state.inflight_first_ts_ms = batch.items[0].timestamp_ms
                    state.inflight = asyncio.create_task(self._write(state, batch), name=f"write-{state.tp.partition}")
            self._backpressure(state, now)

    def _backpressure(self, state: PartitionState, now: float) -> None:
        buffered = len(state.batch) if state.batch else 0
        must_pause = state.inflight is not None and buffered >= self.max_buffered_records
        if must_pause and state.paused_since is None:
            self.consumer.pause(state.tp)
            state.paused_since = now
        elif not must_pause and state.paused_since is not None:
            self.consumer.resume(state.tp)
            self.metrics.paused_seconds.inc(now - state.paused_since)
            state.paused_since = None

    async def _write(self, state: PartitionState, batch: OpenBatch[RawRecord]) -> None:
        next_offset = batch.last_offset + 1
        await self.writer.write(state.tp.partition, batch.items)  # emptied by the writer once decoded
        try:
            await self.consumer.commit({state.tp: OffsetAndMetadata(next_offset, "")})
            state.committed = next_offset
        except (CommitFailedError, KafkaError) as exc:
            # The data is durable and indexed idempotently: whoever consumes these records again overwrites
            # the same object and index rows. Nothing is lost; only work is repeated.
            log.warning("offset commit failed for partition %d (%s)", state.tp.partition, type(exc).__name__)
        finally:
            state.inflight_first_ts_ms = None

    def _observe(self) -> None:
        """Lag in records and seconds, and the caught-up heartbeat that keeps quiet tenants measurable."""
        now_ms = time.time() * 1000
        oldest_ms: float | None = None
        caught_up = bool(self.partitions)
        for tp, state in self.partitions.items():
            highwater = self.consumer.highwater(tp)
            if highwater is None or state.committed is None:
                caught_up = False  # nothing fetched yet: unknown, so not "caught up"
            else:
                lag = max(0, highwater - state.committed)
                self.metrics.lag_records.labels(str(tp.partition)).set(lag)
                caught_up = caught_up and lag == 0
            pending = [state.inflight_first_ts_ms, state.batch.items[0].timestamp_ms if state.batch else None]
            for ts in pending:
                if ts is not None:
                    oldest_ms = ts if oldest_ms is None else min(oldest_ms, ts)
                    caught_up = False
        self.metrics.lag_seconds.set(max(0.0, (now_ms - oldest_ms) / 1000) if oldest_ms is not None else 0.0)
        if caught_up:
            self.metrics.caught_up.set(now_ms / 1000)

    async def refresh_committed(self) -> None:
        """Learn the committed offsets of newly assigned partitions (for the lag metric)."""
        for tp, state in self.partitions.items():
            if state.committed is None:
                with contextlib.suppress(KafkaError):
                    state.committed = await self.consumer.committed(tp) or 0

    async def drain(self) -> None:
        """Write and commit everything buffered (shutdown): batch after batch, each behind the write before it, for a
        buffer may hold several batches (up to ``max_buffered_records``) behind a write in flight. A write that
        failed stops the drain (RuntimeError, as in the loop): what follows it stays uncommitted."""
        while True:
            inflight = [s.inflight for s in self.partitions.values() if s.inflight is not None]
            if inflight:
                await asyncio.gather(*inflight, return_exceptions=True)
            if not any(s.batch for s in self.partitions.values()):
                return
            self._schedule(self.clock(), drain=True)

    async def abandon(self) -> None:
        """Cancel the writes still in flight (shutdown past its grace period): their offsets stay uncommitted."""
        inflight = [s.inflight for s in self.partitions.values() if s.inflight is not None and not s.inflight.done()]
        for task in inflight:
            task.cancel()
        if inflight:
            await asyncio.gather(*inflight, return_exceptions=True)
        for state in self.partitions.values():
            state.inflight = None
