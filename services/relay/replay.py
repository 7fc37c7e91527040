"""Replaying a destination's parked records once it is fixed (``wa-archive relay parked|replay DEST``).

The relay parks a record its destination refused for good or kept failing (services/relay/relay.py): the record's
bytes and journal headers are copied to the destination's parking topic (``wa-relay-<name>-parked``) with why
(``wa-relay-reason``), where it came from (``wa-relay-source``) and how often it was tried. Replaying delivers
those records again, once the receiver or the destination's settings are fixed:

- **The same delivery as the relay's**: the bytes exactly as Meta signed them, Meta's ``X-Hub-Signature-256`` or the
  destination's own signature (services/relay/delivery.py), and the *journal* position of the original
  (``X-Wa-Archive-Record``), so a receiver that got it after all drops the replay as a duplicate.
- **In order, at least once**: one record at a time per partition, in offset order (a parking topic has one
  partition: kafka-topics.yaml, provision.py). A record that fails with a status that may change is retried with
  the destination's backoff within ``retry_budget_s``; a refusal, a spent budget or a record that cannot be signed
  for the destination stops the run there (exit status 1): nothing after it is delivered out of order.
- **Progress of its own**: each delivered record's offset is committed at once in the consumer group
  ``wa-relay-<name>-replay`` (neither the destination's group nor its lag is touched), so a second run starts
  after what the first delivered. ``--from``/``--to`` narrow a run to parking offsets (inclusive) and never move
  the group back: a record already replayed is not delivered twice, and records a run's ``--from`` passed over
  are behind the group's position once it delivers: later runs leave them (a decision to skip them). A run ends
  at the parking topic's end as it was when the run started. Run one replay of a destination at a time (the
  partitions are assigned, not balanced).
- **No personal data** in what it lists or logs: offsets, times, reasons, journal positions, counts. Never a body.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from aiokafka import AIOKafkaConsumer, TopicPartition

from services.core.http1 import RequestFailed
from services.core.journal import header_value
from services.core.settings import KafkaSettings
from services.relay.delivery import delivery_headers, judge_status
from services.relay.relay import (
    PARK_ATTEMPTS_HEADER,
    PARK_REASON_HEADER,
    PARK_SOURCE_HEADER,
    Client,
    Destination,
)

log = logging.getLogger("wa_archive.relay")

REPLAY_GROUP_SUFFIX: Final = "-replay"
POLL_TIMEOUT_MS: Final = 1000
# A broker that answers no fetch for this long while records are known to wait is an error, not an empty topic.
READ_DEADLINE_S: Final = 30.0

# Why a run stopped before the end of its window (closed set: it is printed and logged).
StopKind = Literal["rejected", "retry_budget_exhausted", "unsigned"]


class ParkingTopicMissing(Exception):
    """The destination's parking topic does not exist (or this principal may not describe it)."""


def replay_group(group_prefix: str, destination: str) -> str:
    """The consumer group keeping a destination's replay progress: beside, never the same as, its delivery group."""
    return f"{group_prefix}{destination}{REPLAY_GROUP_SUFFIX}"


@dataclass(frozen=True, slots=True, kw_only=True)
class ParkedRecord:
    """What an operator may see of a parked record: where it is, when it was parked, why; never its body."""

    partition: int
    offset: int
    parked_at_ms: int
    reason: str
    source: str  # the journal position of the original: topic/partition/offset
    attempts: int | None
    replayed: bool  # the replay group is past it


def describe_parked(
    partition: int, offset: int, timestamp_ms: int, headers: Sequence[tuple[str, bytes]] | None, committed: int | None
) -> ParkedRecord:
    """A parked record's listing row from its Kafka coordinates and headers; ``committed``: the replay group's
    position on its partition (None: never replayed). Headers that are missing or not text read as ``?``."""

    def text(name: str) -> str:
        value = header_value(headers, name)
        return value.decode("utf-8", "replace") if value is not None else "?"

    attempts = text(PARK_ATTEMPTS_HEADER)
    return ParkedRecord(
        partition=partition,
        offset=offset,
        parked_at_ms=timestamp_ms,
        reason=text(PARK_REASON_HEADER),
        source=text(PARK_SOURCE_HEADER),
        attempts=int(attempts) if attempts.isdigit() else None,
        replayed=committed is not None and offset < committed,
    )


def replay_window(
    *, low: int, high: int, committed: int | None, from_offset: int | None, to_offset: int | None
) -> range:
    """The parking offsets of one partition a run delivers: from the replay group's position (or the oldest record
    kept), raised to ``from_offset``, up to ``to_offset`` inclusive and the partition's end ``high`` (exclusive) as
    the run found it. Never below the group's position: what was replayed is not replayed again."""
    start = max(low, committed if committed is not None else low, from_offset if from_offset is not None else low)
    stop = high if to_offset is None else min(high, to_offset + 1)
    return range(start, max(start, stop))


@dataclass(frozen=True, slots=True, kw_only=True)
class Stop:
    partition: int
    offset: int
    kind: StopKind
    detail: str  # a status, an error class, counts: never a body


@dataclass(slots=True, kw_only=True)
class ReplayReport:
    destination: str
    dry_run: bool
    delivered: list[int] = field(default_factory=list)  # parking offsets, in order (would be, on a dry run)
    already_replayed: int = 0  # records of the topic before the group's position
    stopped: Stop | None = None

    @property
    def exit_status(self) -> int:
        """0: the whole window was delivered (or nothing waited); 1: the run stopped at a record (``stopped``)."""
        return 0 if self.stopped is None else 1


async def _topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    # The consumer's public partitions_for_topic reads the metadata cached at start, which names no topic yet: ask
    # the cluster afresh (what consumer.topics() does, keeping the partitions it drops).
    metadata = await consumer._client.fetch_all_metadata()
    numbers = metadata.partitions_for_topic(topic)
    if not numbers:
        raise ParkingTopicMissing(f"parking topic {topic} does not exist (or may not be described)")
    return [TopicPartition(topic, p) for p in sorted(numbers)]


def _consumer(kafka: KafkaSettings, group: str) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        **kafka.client_options(), group_id=group, enable_auto_commit=False, auto_offset_reset="earliest"
    )


async def _records(consumer: AIOKafkaConsumer, tp: TopicPartition, window: range) -> AsyncIterator[Any]:
    """The records of ``window`` on ``tp``, in offset order (an async iterator); gaps (compaction, aborted
    transactions) are skipped."""
    if not window:
        return
    consumer.seek(tp, window.start)
    deadline = time.monotonic() + READ_DEADLINE_S
    while True:
        batch = await consumer.getmany(tp, timeout_ms=POLL_TIMEOUT_MS)
        records = batch.get(tp, [])
        if not records:
            if await consumer.position(tp) >= window.stop:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"no record of {tp.topic}/{tp.partition} read for {READ_DEADLINE_S:.0f} s")
            continue
        deadline = time.monotonic() + READ_DEADLINE_S
        for record in records:
            if record.offset >= window.stop:
                return
            yield record
        if records[-1].offset + 1 >= window.stop:
            return


async def list_parked(kafka: KafkaSettings, topic: str, group: str) -> list[ParkedRecord]:
    """Every record the parking topic holds, oldest first per partition, marked replayed or not by ``group``.
    Raises ParkingTopicMissing; Kafka errors propagate."""
    consumer = _consumer(kafka, group)
    await consumer.start()
    try:
        tps = await _topic_partitions(consumer, topic)
        consumer.assign(tps)
        lows = await consumer.beginning_offsets(tps)
        highs = await consumer.end_offsets(tps)
        listing: list[ParkedRecord] = []
        for tp in tps:
            committed = await consumer.committed(tp)
            async for record in _records(consumer, tp, range(lows[tp], highs[tp])):
                row = describe_parked(tp.partition, record.offset, record.timestamp, record.headers, committed)
                listing.append(row)
        return listing
    finally:
        await consumer.stop()


async def replay_parked(
    kafka: KafkaSettings,
    destination: Destination,
    client: Client,
    group: str,
    *,
    from_offset: int | None = None,
    to_offset: int | None = None,
    dry_run: bool = False,
    retry_budget_s: float = 60.0,
    clock: Callable[[], float] = time.monotonic,
    draw: Callable[[], float] = random.random,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> ReplayReport:
    """Deliver the destination's parked records of the window (see the module's docstring) and commit each one
    delivered in ``group``; on a dry run, only say which would be delivered. Returns at the window's end or at the
    first record that cannot be delivered (``report.stopped``; everything before it is committed). Raises
    ParkingTopicMissing; a Kafka error propagates (what was delivered is committed: a next run resumes after it)."""
    report = ReplayReport(destination=destination.name, dry_run=dry_run)
    consumer = _consumer(kafka, group)
    await consumer.start()
    try:
        tps = await _topic_partitions(consumer, destination.parking_topic)
        consumer.assign(tps)
        lows = await consumer.beginning_offsets(tps)
        highs = await consumer.end_offsets(tps)
        for tp in tps:
            committed = await consumer.committed(tp)
            if committed is not None:
                report.already_replayed += max(0, min(committed, highs[tp]) - lows[tp])
            window = replay_window(
                low=lows[tp], high=highs[tp], committed=committed, from_offset=from_offset, to_offset=to_offset
            )
            async for record in _records(consumer, tp, window):
                if dry_run:
                    report.delivered.append(record.offset)
                    continue
                stop = await deliver_parked(
                    destination, client, record, retry_budget_s, clock=clock, draw=draw, sleep=sleep
                )
                if stop is not None:
                    report.stopped = stop
                    return report
                await consumer.commit({tp: record.offset + 1})
                report.delivered.append(record.offset)
        return report
    finally:
        await consumer.stop()


async def deliver_parked(
    destination: Destination,
    client: Client,
    record: Any,
    retry_budget_s: float,
    *,
    clock: Callable[[], float],
    draw: Callable[[], float],
    sleep: Callable[[float], Awaitable[None]],
) -> Stop | None:
    """POST one parked record as the relay would have; None once the destination took it (2xx), else why not."""
    source = header_value(record.headers, PARK_SOURCE_HEADER)
    # The original's journal position, so that a receiver that got the original drops this as a duplicate.
    position = source.decode("latin-1") if source else f"{record.topic}/{record.partition}/{record.offset}"
    headers = delivery_headers(record.value or b"", record.headers, secret=destination.secret, position=position)
    if headers is None:
        return Stop(
            partition=record.partition,
            offset=record.offset,
            kind="unsigned",
            detail="no Meta signature and the destination has no secret of its own",
        )
    backoff = destination.backoff
    first = clock()
    attempts = 0
    while True:
        attempts += 1
        try:
            status = await client.post(record.value or b"", headers)
        except RequestFailed as exc:  # a timeout (TimedOut) or a connection failure
            retry, detail = True, type(exc).__name__
        else:
            answer = judge_status(status)
            if answer.delivered:
                return None
            retry, detail = answer.retry, f"HTTP {status}"
        if not retry:
            return Stop(partition=record.partition, offset=record.offset, kind="rejected", detail=detail)
        wait = backoff.delay(attempts, draw())
        if clock() - first + wait > retry_budget_s:
            return Stop(
                partition=record.partition,
                offset=record.offset,
                kind="retry_budget_exhausted",
                detail=f"{attempts} attempts, last: {detail}",
            )
        await sleep(wait)
