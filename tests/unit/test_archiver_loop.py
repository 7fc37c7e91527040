"""ArchiverLoop (services/archiver/consumer.py) over the consumer double, with a manual clock and a writer whose
writes the test holds and releases: commit order, backpressure, revoke, drain and abandon, without a broker.

The double (tests/helpers/local_consumer.py) passes the same contract tests as the real consumer
(tests/helpers/consumer_contract.py), so what these tests prove of the loop holds on Kafka for those calls.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.archiver.batching import FlushPolicy
from services.archiver.consumer import ArchiverLoop, Rebalance
from services.archiver.metrics import ArchiverMetrics
from services.archiver.sealing import RawRecord
from tests.helpers.local_consumer import LocalConsumer, ManualClock

pytestmark = pytest.mark.unit

TOPIC = "wa.events.v1"
P0, P1 = TopicPartition(TOPIC, 0), TopicPartition(TOPIC, 1)
MAX_RECORDS = 3  # a batch closes at three records...
MAX_AGE_S = 1.0  # ...or one second after its first record arrived
MAX_BUFFERED = 4  # a partition is paused past four records buffered behind a write in flight
POLL_MS = 200


@dataclass
class Durable:
    partition: int
    offsets: list[int]
    commits_before: int  # how many commits the consumer had made when this write returned


@dataclass
class HeldWriter:
    """The loop's BatchSink: records each write, holds a partition's writes while :meth:`hold` is in force, fails
    a partition's writes after :meth:`fail`."""

    consumer: LocalConsumer
    started: list[tuple[int, list[int]]] = field(default_factory=list)
    durable: list[Durable] = field(default_factory=list)
    gates: dict[int, asyncio.Event] = field(default_factory=dict)
    failing: set[int] = field(default_factory=set)

    def hold(self, partition: int) -> None:
        self.gates[partition] = asyncio.Event()

    def release(self, partition: int) -> None:
        self.gates.pop(partition).set()

    def fail(self, partition: int) -> None:
        self.failing.add(partition)

    async def write(self, partition: int, raw: Sequence[RawRecord]) -> object:
        offsets = [record.offset for record in raw]
        self.started.append((partition, offsets))
        gate = self.gates.get(partition)
        if gate is not None:
            await gate.wait()
        if partition in self.failing:
            raise ConnectionError("S3 is down")
        self.durable.append(Durable(partition, offsets, len(self.consumer.commits)))
        return None


@dataclass
class Rig:
    clock: ManualClock
    consumer: LocalConsumer
    writer: HeldWriter
    loop: ArchiverLoop
    registry: CollectorRegistry
    stop: asyncio.Event
    task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.loop.run(self.stop))

    async def stopped(self) -> None:
        """Stop the loop as the service does: the run ends, then the drain."""
        self.stop.set()
        assert self.task is not None
        await self.task
        await self.loop.drain()

    def produce(self, partition: int, count: int) -> list[int]:
        return [self.consumer.append(partition, f"r{n}".encode(), timestamp_ms=1) for n in range(count)]

    def counted(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


async def until(condition: Callable[[], bool], turns: int = 2000) -> None:
    """Let the loop and its writes run until ``condition`` holds (each poll of the double yields once)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = ManualClock()
    consumer = LocalConsumer(TOPIC, 2, clock)
    registry = CollectorRegistry()
    writer = HeldWriter(consumer)
    loop = ArchiverLoop(
        consumer,
        writer,
        ArchiverMetrics(registry),
        policy=FlushPolicy(max_records=MAX_RECORDS, max_bytes=1 << 20, max_age_s=MAX_AGE_S),
        max_poll_records=100,
        max_buffered_records=MAX_BUFFERED,
        poll_timeout_ms=POLL_MS,
        clock=clock,
    )
    consumer.subscribe([TOPIC], Rebalance(loop))
    await consumer.rebalance(revoked=[], assigned=[P0, P1])
    rig = Rig(clock, consumer, writer, loop, registry, asyncio.Event())
    yield rig
    for gate in writer.gates.values():
        gate.set()
    if rig.task is not None and not rig.task.done():
        rig.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(rig.task, 5)
    await loop.abandon()


# ---------------------------------------------------------------------------------------------- commit order
async def test_each_batch_is_committed_as_last_offset_plus_one_after_its_write_returned(rig: Rig) -> None:
    rig.produce(0, 7)
    rig.start()
    await until(lambda: (0, 7) in rig.consumer.commits)
    # Two full batches, then the seventh record alone once its batch is a second old (the empty polls' time).
    assert [offsets for _, offsets in rig.writer.started] == [[0, 1, 2], [3, 4, 5], [6]]
    assert rig.consumer.commits == [(0, 3), (0, 6), (0, 7)]
    # Every commit came after its write was durable, and before the next one's: in order, one at a time.
    assert [(d.offsets[-1] + 1, d.commits_before) for d in rig.writer.durable] == [(3, 0), (6, 1), (7, 2)]
    assert rig.clock() >= MAX_AGE_S


async def test_nothing_is_committed_while_the_write_is_in_flight(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, 3)
    rig.start()
    await until(lambda: rig.writer.started == [(0, [0, 1, 2])])
    turns = rig.consumer.polls
    await until(lambda: rig.consumer.polls >= turns + 20)  # the loop keeps polling; the write is still held
    assert rig.consumer.commits == []
    assert await rig.consumer.committed(P0) is None
    rig.writer.release(0)
    await until(lambda: rig.consumer.commits == [(0, 3)])


async def test_one_write_at_a_time_per_partition_and_partitions_side_by_side(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, 6)
    rig.produce(1, 3)
    rig.start()
    await until(lambda: (1, 3) in rig.consumer.commits)
    # Partition 1 was written and committed while partition 0's first write was held; 0's second batch waits.
    assert rig.writer.started == [(0, [0, 1, 2]), (1, [0, 1, 2])]
    rig.writer.release(0)
    await until(lambda: (0, 6) in rig.consumer.commits)
    assert [offset for partition, offset in rig.consumer.commits if partition == 0] == [3, 6]


async def test_a_failed_write_stops_the_loop_and_nothing_after_it_is_committed(rig: Rig) -> None:
    rig.writer.fail(0)
    rig.produce(0, 6)
    rig.start()
    assert rig.task is not None
    with pytest.raises(RuntimeError, match="a write of partition 0 failed"):
        await asyncio.wait_for(rig.task, 5)
    assert rig.consumer.commits == []
    assert rig.writer.durable == []


async def test_a_refused_commit_is_not_fatal_and_the_next_batch_is_committed(rig: Rig) -> None:
    """A commit refused (the group rebalanced) loses nothing: the data is durable and idempotent."""
    rig.consumer.refuse_commits = True
    rig.produce(0, 3)
    rig.start()
    await until(lambda: len(rig.writer.durable) == 1)
    await until(lambda: rig.loop.partitions[P0].inflight is None)
    rig.consumer.refuse_commits = False
    rig.produce(0, 3)
    await until(lambda: rig.consumer.commits == [(0, 6)])
    assert rig.task is not None
    assert not rig.task.done()


# ---------------------------------------------------------------------------------------------- backpressure
async def test_a_partition_is_paused_past_the_buffer_behind_its_write_and_resumed_after(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, MAX_RECORDS + MAX_BUFFERED)
    rig.produce(1, 3)
    rig.start()
    await until(lambda: P0 in rig.consumer.paused())
    assert rig.consumer.paused() == {P0}  # the other partition keeps flowing
    await until(lambda: (1, 3) in rig.consumer.commits)
    # While paused, records produced to it stay in the log: the loop's buffer does not grow.
    rig.produce(0, 5)
    turns = rig.consumer.polls
    await until(lambda: rig.consumer.polls >= turns + 10)
    batch = rig.loop.partitions[P0].batch
    assert batch is not None
    assert len(batch) == MAX_BUFFERED
    assert rig.consumer.positions[P0] == MAX_RECORDS + MAX_BUFFERED

    rig.writer.release(0)
    await until(lambda: P0 not in rig.consumer.paused())
    await until(lambda: (0, MAX_RECORDS + MAX_BUFFERED + 5) in rig.consumer.commits)
    assert rig.counted("wa_archiver_backpressure_seconds_total") > 0


async def test_below_the_buffer_limit_nothing_is_paused(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, MAX_RECORDS + MAX_BUFFERED - 1)
    rig.start()
    await until(lambda: rig.consumer.positions[P0] == MAX_RECORDS + MAX_BUFFERED - 1)
    turns = rig.consumer.polls
    await until(lambda: rig.consumer.polls >= turns + 10)
    assert rig.consumer.paused() == set()


# ---------------------------------------------------------------------------------------------- revoke
async def test_on_revoke_the_write_in_flight_is_finished_and_committed_and_the_buffer_dropped(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, 5)  # [0, 1, 2] in flight, [3, 4] buffered behind it
    rig.start()
    await until(lambda: rig.consumer.positions[P0] == 5 and rig.writer.started == [(0, [0, 1, 2])])

    rebalance = asyncio.create_task(rig.consumer.rebalance(revoked=[P0], assigned=[]))
    for _ in range(5):  # the rebalance begins (a poll under way may finish first)
        await asyncio.sleep(0)
    turns = rig.consumer.polls
    for _ in range(50):
        await asyncio.sleep(0)
    assert not rebalance.done(), "the revoke waits for the write in flight"
    assert rig.consumer.polls == turns, "and no poll returns while it waits"
    rig.writer.release(0)
    await asyncio.wait_for(rebalance, 5)

    # The write in flight was committed while the partition was still ours; the buffered records were dropped,
    # never written nor committed: the partition's next owner consumes them from offset 3.
    assert rig.consumer.commits == [(0, 3)]
    assert P0 not in rig.loop.partitions
    await rig.stopped()
    assert rig.writer.started == [(0, [0, 1, 2])]
    assert rig.consumer.commits == [(0, 3)]


async def test_records_fetched_just_before_a_revoke_are_not_buffered(rig: Rig) -> None:
    rig.produce(0, 3)
    late = list(rig.consumer.logs[P0])
    await rig.consumer.rebalance(revoked=[P0], assigned=[])
    rig.loop._buffer({P0: late})  # a fetch that returned as the partition went
    assert P0 not in rig.loop.partitions
    rig.produce(1, 3)
    rig.start()
    await until(lambda: rig.consumer.commits == [(1, 3)])
    assert [partition for partition, _ in rig.writer.started] == [1]


async def test_a_partition_assigned_again_is_consumed_from_its_committed_offset(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, 5)
    rig.start()
    await until(lambda: rig.consumer.positions[P0] == 5)
    revoke = asyncio.create_task(rig.consumer.rebalance(revoked=[P0], assigned=[]))
    await asyncio.sleep(0)
    rig.writer.release(0)
    await asyncio.wait_for(revoke, 5)
    await rig.consumer.rebalance(revoked=[], assigned=[P0])
    await until(lambda: (0, 5) in rig.consumer.commits)
    assert [offsets for partition, offsets in rig.writer.started if partition == 0] == [[0, 1, 2], [3, 4]]
    assert rig.consumer.commits == [(0, 3), (0, 5)]


# ---------------------------------------------------------------------------------------------- drain, abandon
async def test_drain_writes_and_commits_everything_buffered_also_behind_a_write_in_flight(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, 7)  # [0, 1, 2] in flight; [3, 4, 5, 6] behind it, more than one batch
    rig.produce(1, 2)  # buffered, too young and too few to close on their own
    rig.start()
    await until(lambda: rig.consumer.positions[P0] == 7 and rig.consumer.positions[P1] == 2)
    rig.stop.set()
    assert rig.task is not None
    await rig.task
    assert rig.clock() < MAX_AGE_S, "stopped before any batch could close by age"
    drain = asyncio.create_task(rig.loop.drain())
    await asyncio.sleep(0)
    rig.writer.release(0)
    await asyncio.wait_for(drain, 5)
    assert [offset for partition, offset in rig.consumer.commits if partition == 0] == [3, 6, 7]
    assert [offset for partition, offset in rig.consumer.commits if partition == 1] == [2]
    assert [d.offsets for d in rig.writer.durable if d.partition == 1] == [[0, 1]]
    assert rig.counted("wa_archiver_flushes_total", reason="drain") == 3


async def test_drain_writes_a_buffer_of_more_than_two_batches_behind_a_write_in_flight(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, MAX_RECORDS + 3 * MAX_RECORDS)  # pausing is at MAX_BUFFERED: fetch it all before holding
    rig.loop.max_buffered_records = 100
    rig.start()
    await until(lambda: rig.consumer.positions[P0] == 4 * MAX_RECORDS)
    rig.stop.set()
    assert rig.task is not None
    await rig.task
    drain = asyncio.create_task(rig.loop.drain())
    await asyncio.sleep(0)
    rig.writer.release(0)
    await asyncio.wait_for(drain, 5)
    assert rig.consumer.commits[-1] == (0, 4 * MAX_RECORDS)


async def test_abandon_cancels_the_writes_still_retrying_and_commits_nothing_of_them(rig: Rig) -> None:
    rig.writer.hold(0)
    rig.produce(0, 3)
    rig.produce(1, 3)
    rig.start()
    await until(lambda: (1, 3) in rig.consumer.commits)
    rig.stop.set()
    assert rig.task is not None
    await rig.task
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(rig.loop.drain(), 0.05)  # a dependency is down: the grace period runs out
    await rig.loop.abandon()
    assert rig.consumer.commits == [(1, 3)]
    assert all(state.inflight is None for state in rig.loop.partitions.values())
