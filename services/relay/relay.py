"""One destination's consumer loop: journal records → the destination, in order per partition, at least once.

Guarantees:
- The destination has a consumer group of its own: its progress, lag and failures touch no other destination and
  never ingest (Meta is answered when the journal holds the POST; the relay only reads the journal).
- Each partition is a lane: its records are delivered one at a time, in offset order, so a business number's
  webhooks (one key, one partition) arrive in the order Meta sent them. Partitions are delivered concurrently.
- A record that fails with a status that may change (408, 429, 5xx, a timeout, no connection) is retried with
  capped exponential backoff and jitter until its retry budget is spent; then, or at once for an answer retrying
  cannot change (another 4xx, a redirect), it is parked — written to the destination's parking topic with the
  reason in its headers — and the lane moves on. A record the destination does not want is skipped.
- Offsets are committed as ``last done + 1`` per partition, only after the record was delivered, skipped or parked
  (Kafka acknowledged the parking record), at most every ``commit_interval_s`` and on revoke and stop. A crash
  delivers again what was not committed: a receiver can drop a redelivery by its ``X-Wa-Archive-Record`` header.
- Backpressure: past ``max_buffered_records`` fetched and not done, a partition is paused until its lane catches up.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from services.core.http1 import RequestFailed, TimedOut
from services.core.kafka import OutgoingRecord, ProduceUnavailable
from services.core.retry import RetryPolicy
from services.relay.delivery import (
    Answer,
    Backoff,
    ParkReason,
    Selection,
    delivery_headers,
    judge_status,
    select,
)
from services.relay.metrics import RelayMetrics

log = logging.getLogger("wa_archive.relay")

# Added to a parked record beside the headers of the journal record it copies.
PARK_REASON_HEADER = "wa-relay-reason"
PARK_SOURCE_HEADER = "wa-relay-source"
PARK_ATTEMPTS_HEADER = "wa-relay-attempts"
# Kafka down while parking: retried until it answers (the lane waits; nothing is committed meanwhile).
PARKING_RETRY = RetryPolicy(initial_s=0.5, max_s=10.0, jitter=0.2)
PARKING_DEADLINE_S = 10.0


class Parking(Protocol):
    """What the loop needs of :class:`~services.core.kafka.AckedProducer`: returns once Kafka acknowledged, or
    raises ProduceUnavailable."""

    async def produce(self, records: tuple[OutgoingRecord, ...], *, deadline_s: float) -> None: ...


class Client(Protocol):
    """What the loop needs of :class:`~services.relay.service.DestinationClient`: the status of one POST, or
    TimedOut / RequestFailed (services/core/http1.py)."""

    async def post(self, body: bytes, headers: Mapping[str, str]) -> int: ...


@dataclass(frozen=True, slots=True, kw_only=True)
class Destination:
    name: str
    url: str
    fields: frozenset[str]
    secret: bytes | None
    backoff: Backoff
    parking_topic: str


@dataclass(slots=True, kw_only=True)
class Lane:
    """One partition's records fetched and not yet done, and the task delivering them."""

    tp: TopicPartition
    queue: collections.deque[Any] = field(default_factory=collections.deque)
    done: int | None = None  # the offset after the last record done
    committed: int | None = None
    task: asyncio.Task[None] | None = None
    paused: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    delivered: bool
    attempts: int
    reason: ParkReason | None = None
    detail: str = ""


class RelayRebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, loop: DestinationLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.loop.adopt(assigned)


class DestinationLoop:
    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        destination: Destination,
        client: Client,
        parking: Parking,
        metrics: RelayMetrics,
        *,
        max_buffered_records: int = 500,
        max_poll_records: int = 500,
        commit_interval_s: float = 1.0,
        poll_timeout_ms: int = 200,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        draw: Callable[[], float] = random.random,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.consumer = consumer
        self.destination = destination
        self.client = client
        self.parking = parking
        self.metrics = metrics
        self.max_buffered_records = max_buffered_records
        self.max_poll_records = max_poll_records
        self.commit_interval_s = commit_interval_s
        self.poll_timeout_ms = poll_timeout_ms
        self.clock = clock
        self.wall_clock = wall_clock
        self.draw = draw
        self.sleep = sleep
        self.lanes: dict[TopicPartition, Lane] = {}
        self.started = False
        self._last_commit = 0.0
        self._stop = asyncio.Event()
        name = destination.name
        self._delivered = metrics.deliveries.labels(name, "delivered")
        self._skipped = metrics.deliveries.labels(name, "skipped")
        self._parked = metrics.deliveries.labels(name, "parked")
        self._attempt_seconds = metrics.attempt_seconds.labels(name)
        self._lag = metrics.lag_records.labels(name)
        self._oldest = metrics.oldest_waiting.labels(name)
        self._fresh = metrics.last_delivered_journal.labels(name)
        self._progress = metrics.last_progress.labels(name)

    async def run(self, stop: asyncio.Event) -> None:
        """Fetch, hand records to their lanes, commit what is done, until ``stop``; then commit what is done
        (a delivery in flight is abandoned: it is delivered again after the restart)."""
        self._stop = stop
        self.started = True
        self._progress.set(self.wall_clock())
        try:
            while not stop.is_set():
                batch = await self.consumer.getmany(timeout_ms=self.poll_timeout_ms, max_records=self.max_poll_records)
                for tp, records in batch.items():
                    self._enqueue(tp, records)
                self._raise_if_a_lane_died()
                self._resume_caught_up()
                await self.commit(force=False)
                self._measure()
        finally:
            await self.release(list(self.lanes))

    def _enqueue(self, tp: TopicPartition, records: list[Any]) -> None:
        lane = self.lanes.get(tp)
        if lane is None:
            lane = self.lanes[tp] = Lane(tp=tp)
        lane.queue.extend(records)
        if lane.task is None or lane.task.done():
            lane.task = asyncio.create_task(self._drive(lane), name=f"relay-{self.destination.name}-{tp.partition}")
        if len(lane.queue) >= self.max_buffered_records and not lane.paused:
            self.consumer.pause(tp)
            lane.paused = True

    def _raise_if_a_lane_died(self) -> None:
        """A lane ends only when its queue is empty or it is cancelled; an exception in it is a bug: the process
        stops (and restarts), and what was not committed is delivered again."""
        for lane in self.lanes.values():
            if lane.task is not None and lane.task.done() and not lane.task.cancelled():
                error = lane.task.exception()
                if error is not None:
                    raise error

    def _resume_caught_up(self) -> None:
        for lane in self.lanes.values():
            if lane.paused and len(lane.queue) < self.max_buffered_records // 2 + 1:
                self.consumer.resume(lane.tp)
                lane.paused = False

    async def _drive(self, lane: Lane) -> None:
        """Deliver the lane's records one at a time, in order; each is done (delivered, skipped or parked) before
        the next starts."""
        while lane.queue:
            record = lane.queue[0]
            await self.handle(record)
            lane.queue.popleft()
            lane.done = record.offset + 1
            self._progress.set(self.wall_clock())

    async def handle(self, record: Any) -> None:
        """Deliver, skip or park one record; returns when it is done. Raises only CancelledError."""
        destination = self.destination
        selection = select(record.value, record.headers, destination.fields)
        if selection is Selection.SKIP:
            self._skipped.inc()
            return
        if selection is Selection.UNREADABLE:
            await self.park(record, Outcome(False, 0, "unreadable", "the body's changes cannot be read"))
            return
        position = f"{record.topic}/{record.partition}/{record.offset}"
        headers = delivery_headers(record.value, record.headers, secret=destination.secret, position=position)
        if headers is None:
            await self.park(record, Outcome(False, 0, "unsigned", "no Meta signature and no secret of its own"))
            return
        outcome = await self.deliver(record.value, headers)
        if outcome.delivered:
            self._delivered.inc()
            self._fresh.set(record.timestamp / 1000)
        else:
            await self.park(record, outcome)

    async def deliver(self, value: bytes, headers: dict[str, str]) -> Outcome:
        """POST until delivered, refused for good, or out of retry budget."""
        backoff = self.destination.backoff
        first = self.clock()
        attempts = 0
        while True:
            attempts += 1
            answer, detail = await self._attempt(value, headers)
            if answer.delivered:
                return Outcome(True, attempts)
            assert answer.failure is not None
            self.metrics.failures.labels(self.destination.name, answer.failure).inc()
            if not answer.retry:
                return Outcome(False, attempts, "rejected", detail)
            wait = backoff.next_wait(attempts, self.draw(), self.clock() - first)
            if wait is None:
                return Outcome(False, attempts, "retry_budget_exhausted", f"{attempts} attempts, last: {detail}")
            if attempts == 1 or attempts % 10 == 0:
                log.warning(
                    "destination %s: delivery failed (%s); retrying in %.1fs", self.destination.name, detail, wait
                )
            await self.sleep(wait)

    async def _attempt(self, value: bytes, headers: dict[str, str]) -> tuple[Answer, str]:
        started = time.perf_counter()
        try:
            status = await self.client.post(value, headers)
        except TimedOut as exc:
            return Answer(delivered=False, retry=True, failure="timeout"), f"timeout: {exc}"
        except RequestFailed as exc:
            return Answer(delivered=False, retry=True, failure="connection"), f"connection: {exc}"
        finally:
            self._attempt_seconds.observe(time.perf_counter() - started)
        # The answer's body was read and dropped, never logged: a receiver may echo content.
        return judge_status(status), f"HTTP {status}"

    async def park(self, record: Any, outcome: Outcome) -> None:
        """Copy the record to the parking topic (same key, bytes and headers, plus why), once Kafka acknowledged."""
        assert outcome.reason is not None
        headers = (
            *tuple(record.headers or ()),
            (PARK_REASON_HEADER, f"{outcome.reason}: {outcome.detail}".encode()),
            (PARK_SOURCE_HEADER, f"{record.topic}/{record.partition}/{record.offset}".encode()),
            (PARK_ATTEMPTS_HEADER, str(outcome.attempts).encode()),
        )
        parked = OutgoingRecord(self.destination.parking_topic, record.key or b"", record.value or b"", headers)
        await PARKING_RETRY.run(
            lambda: self.parking.produce((parked,), deadline_s=PARKING_DEADLINE_S),
            retry_on=lambda exc: isinstance(exc, ProduceUnavailable),
        )
        self._parked.inc()
        self.metrics.parked.labels(self.destination.name, outcome.reason).inc()
        log.warning(
            "destination %s: record %s/%d/%d parked (%s)",
            self.destination.name,
            record.topic,
            record.partition,
            record.offset,
            outcome.reason,
        )

    async def commit(self, *, force: bool, only: list[TopicPartition] | None = None) -> None:
        """Commit the done offsets that moved, at most every ``commit_interval_s`` unless ``force``."""
        now = self.clock()
        if not force and now - self._last_commit < self.commit_interval_s:
            return
        lanes = [self.lanes[tp] for tp in only if tp in self.lanes] if only is not None else self.lanes.values()
        offsets = {lane.tp: lane.done for lane in lanes if lane.done is not None and lane.done != lane.committed}
        self._last_commit = now
        if not offsets:
            return
        try:
            await self.consumer.commit(offsets)
        except KafkaError as exc:
            # Not committed: delivered again after a rebalance or restart (at least once).
            log.warning("destination %s: commit failed (%s)", self.destination.name, type(exc).__name__)
            return
        for tp, offset in offsets.items():
            self.lanes[tp].committed = offset

    async def release(self, revoked: list[TopicPartition]) -> None:
        """Stop the lanes of ``revoked`` partitions, commit what they finished and forget them (the next owner
        starts after the last committed record)."""
        tasks = [lane.task for tp in revoked if (lane := self.lanes.get(tp)) and lane.task and not lane.task.done()]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.commit(force=True, only=revoked)
        for tp in revoked:
            self.lanes.pop(tp, None)

    async def adopt(self, assigned: list[TopicPartition]) -> None:
        """A lane for each newly assigned partition, starting at the group's committed position (for the lag)."""
        for tp in assigned:
            if tp not in self.lanes:
                lane = self.lanes[tp] = Lane(tp=tp)
                with contextlib.suppress(KafkaError):
                    lane.done = lane.committed = await self.consumer.position(tp)

    def _measure(self) -> None:
        lag = 0
        oldest_ms: int | None = None
        for tp in self.consumer.assignment():
            lane = self.lanes.get(tp)
            high = self.consumer.highwater(tp)
            done = lane.done if lane is not None else None
            if high is not None and done is not None:
                lag += max(0, high - done)
            if lane is not None and lane.queue:
                ts = lane.queue[0].timestamp
                oldest_ms = ts if oldest_ms is None else min(oldest_ms, ts)
        self._lag.set(lag)
        self._oldest.set(0 if oldest_ms is None else max(0.0, self.wall_clock() - oldest_ms / 1000))
