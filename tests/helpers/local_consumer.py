"""An in-memory double of the Kafka consumer calls the archiver's loop makes, driven by a manual clock.

:class:`~services.archiver.consumer.ArchiverLoop` calls six methods of ``AIOKafkaConsumer``: ``getmany``,
``pause``, ``resume``, ``commit``, ``committed`` and ``highwater``; the group coordinator calls its
:class:`~services.archiver.consumer.Rebalance` listener. :class:`LocalConsumer` implements those (and ``paused``,
``assign``, ``subscribe`` for the tests) over per-partition lists, so the loop's backpressure, revoke, drain and
commit order are tested in milliseconds and deterministically. tests/helpers/consumer_contract.py holds the tests
both this double and the real consumer pass (tests/unit/test_local_consumer.py,
tests/integration/test_consumer_contract.py), so the double cannot drift from the real thing on those calls.
Model: arroyo's ``backends/local`` and ``tests/backends/mixins.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata


@dataclass
class ManualClock:
    """A monotonic clock that moves only when told (ArchiverLoop's ``clock``)."""

    now: float = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class LocalConsumer:
    """One topic's partitions in memory, consumed as AIOKafkaConsumer consumes them.

    - ``getmany`` returns the records of assigned, unpaused partitions from each one's position, in offset order,
      at most ``max_records`` in all; with nothing to return it moves the clock by ``timeout_ms`` (the time a real
      poll would have waited) and yields to the event loop, so a loop under test keeps turning.
    - ``highwater`` is a partition's log end as of its last fetch (None before one); ``committed`` the last
      committed offset (None before a commit).
    - ``commit`` records each offset in :attr:`commits` (in call order) and refuses a partition that is not
      assigned (CommitFailedError, as the coordinator refuses a commit after a rebalance), or every commit while
      :attr:`refuse_commits` is set.
    - :meth:`rebalance` calls the listener as the coordinator does: ``on_partitions_revoked`` (awaited, while no
      poll returns) before the partitions go, ``on_partitions_assigned`` after the new ones are assigned.
    """

    def __init__(self, topic: str, partitions: int, clock: ManualClock) -> None:
        self.topic = topic
        self.clock = clock
        self.logs: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {
            TopicPartition(topic, p): [] for p in range(partitions)
        }
        self.assigned: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.highwaters: dict[TopicPartition, int] = {}
        self.offsets: dict[TopicPartition, int] = {}
        self.commits: list[tuple[int, int]] = []  # (partition, offset), in the order they were committed
        self.polls = 0
        self.refuse_commits = False
        self._paused: set[TopicPartition] = set()
        self._listener: ConsumerRebalanceListener | None = None
        self._rebalancing = asyncio.Lock()

    # ---------------------------------------------------------------- what the tests do to it
    def append(
        self,
        partition: int,
        value: bytes,
        *,
        key: bytes | None = None,
        timestamp_ms: int = 0,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> int:
        """A record produced to ``partition``; returns its offset."""
        log = self.logs[TopicPartition(self.topic, partition)]
        size = len(value)
        record = ConsumerRecord(self.topic, partition, len(log), timestamp_ms, 0, key, value, None, 0, size, headers)
        log.append(record)
        return len(log) - 1

    def assign(self, partitions: Iterable[TopicPartition]) -> None:
        for tp in partitions:
            self.assigned.add(tp)
            self.positions.setdefault(tp, self.offsets.get(tp, 0))

    def subscribe(self, topics: Sequence[str], listener: ConsumerRebalanceListener) -> None:
        assert list(topics) == [self.topic]
        self._listener = listener

    async def rebalance(self, *, revoked: Sequence[TopicPartition], assigned: Sequence[TopicPartition]) -> None:
        async with self._rebalancing:
            if self._listener is not None:
                await self._listener.on_partitions_revoked(list(revoked))
            for tp in revoked:
                self.assigned.discard(tp)
                self._paused.discard(tp)
                self.positions.pop(tp, None)
            self.assign(assigned)
            if self._listener is not None:
                await self._listener.on_partitions_assigned(list(assigned))

    # ---------------------------------------------------------------- AIOKafkaConsumer's calls
    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        async with self._rebalancing:
            self.polls += 1
            budget = max_records if max_records is not None else 2**31
            fetched: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]] = {}
            for tp in sorted(partitions or self.assigned):
                if tp not in self.assigned or tp in self._paused:
                    continue
                log = self.logs[tp]
                self.highwaters[tp] = len(log)
                start = self.positions[tp]
                records = log[start : start + budget]
                if records:
                    fetched[tp] = records
                    self.positions[tp] = start + len(records)
                    budget -= len(records)
        if not fetched:
            self.clock.advance(timeout_ms / 1000)
        await asyncio.sleep(0)
        return fetched

    def pause(self, *partitions: TopicPartition) -> None:
        self._paused.update(tp for tp in partitions if tp in self.assigned)

    def resume(self, *partitions: TopicPartition) -> None:
        self._paused.difference_update(partitions)

    def paused(self) -> set[TopicPartition]:
        return set(self._paused)

    async def commit(self, offsets: Mapping[TopicPartition, OffsetAndMetadata | int]) -> None:
        if self.refuse_commits or any(tp not in self.assigned for tp in offsets):
            raise CommitFailedError("the partitions are no longer assigned to this consumer")
        await asyncio.sleep(0)
        for tp, meta in offsets.items():
            offset = meta if isinstance(meta, int) else meta.offset
            self.offsets[tp] = offset
            self.commits.append((tp.partition, offset))

    async def committed(self, partition: TopicPartition) -> int | None:
        return self.offsets.get(partition)

    def highwater(self, partition: TopicPartition) -> int | None:
        return self.highwaters.get(partition)

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    async def position(self, partition: TopicPartition) -> int:
        return self.positions[partition]

    def __getattr__(self, name: str) -> Any:
        # A call the loop starts making that this double does not model fails the test, loudly.
        raise AttributeError(f"LocalConsumer does not model AIOKafkaConsumer.{name}: add it, and to the contract")
