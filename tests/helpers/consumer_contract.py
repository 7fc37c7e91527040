"""What the archiver's loop relies on from its consumer, as tests that the real consumer and the double both pass.

A test class inherits :class:`ConsumerContract` and provides the ``harness`` fixture: a consumer assigned
:data:`PARTITIONS` partitions of a topic of its own (and a group of its own, nothing committed), and a way to
produce to them. tests/integration/test_consumer_contract.py runs the contract once against Kafka on 127.0.0.1:9092
(AIOKafkaConsumer, a fresh topic per test); tests/unit/test_local_consumer.py against
tests/helpers/local_consumer.py, the double the unit tests of ArchiverLoop drive. Only the calls the loops make
(the archiver's and the relay's; and ``paused``, which their tests read) are in the contract.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata

PARTITIONS = 2
# A real poll returns what its fetches brought back so far: poll until the expected records are there, this many
# times at most (each poll waits up to POLL_MS when nothing is there).
POLLS = 100
POLL_MS = 100


class Produce(Protocol):
    async def __call__(self, partition: int, values: Sequence[bytes]) -> None: ...


@dataclass
class Harness:
    consumer: Any  # AIOKafkaConsumer, or the LocalConsumer double
    tps: list[TopicPartition]
    produce: Produce


async def consume(
    consumer: Any, expected: int, *, max_records: int = 1000
) -> tuple[dict[int, list[tuple[int, bytes]]], list[int]]:
    """Poll until ``expected`` records came back (bounded); (partition -> [(offset, value)], records per poll)."""
    got: dict[int, list[tuple[int, bytes]]] = {}
    per_poll: list[int] = []
    for _ in range(POLLS):
        fetched = await consumer.getmany(timeout_ms=POLL_MS, max_records=max_records)
        per_poll.append(sum(len(records) for records in fetched.values()))
        for tp, records in fetched.items():
            got.setdefault(tp.partition, []).extend((r.offset, r.value) for r in records)
        if sum(len(records) for records in got.values()) >= expected:
            break
    return got, per_poll


async def nothing_more(consumer: Any, polls: int = 3) -> dict[int, list[int]]:
    """What a few more polls return (offsets by partition): nothing, once a consumer has everything."""
    extra: dict[int, list[int]] = {}
    for _ in range(polls):
        for tp, records in (await consumer.getmany(timeout_ms=POLL_MS, max_records=1000)).items():
            extra.setdefault(tp.partition, []).extend(r.offset for r in records)
    return extra


class ConsumerContract:
    """The contract; ``harness`` is the subclass's fixture."""

    async def test_records_come_in_offset_order_and_at_most_max_records_a_poll(self, harness: Harness) -> None:
        first = [f"a{n}".encode() for n in range(7)]
        second = [f"b{n}".encode() for n in range(3)]
        await harness.produce(0, first)
        await harness.produce(1, second)
        got, per_poll = await consume(harness.consumer, 10, max_records=4)
        assert got == {0: list(enumerate(first)), 1: list(enumerate(second))}
        assert max(per_poll) <= 4
        assert await nothing_more(harness.consumer) == {}

    async def test_the_highwater_is_the_log_end_as_last_fetched(self, harness: Harness) -> None:
        tp = harness.tps[0]
        await harness.produce(0, [b"x"] * 5)
        await consume(harness.consumer, 5)
        assert harness.consumer.highwater(tp) == 5
        await harness.produce(0, [b"y"] * 2)
        got, _ = await consume(harness.consumer, 2)
        assert [offset for offset, _ in got[0]] == [5, 6]
        assert harness.consumer.highwater(tp) == 7

    async def test_a_paused_partition_yields_nothing_until_resumed_then_resumes_where_it_was(
        self, harness: Harness
    ) -> None:
        held, other = harness.tps
        harness.consumer.pause(held)
        assert harness.consumer.paused() == {held}
        await harness.produce(0, [b"held"] * 3)
        await harness.produce(1, [b"other"] * 3)
        got, _ = await consume(harness.consumer, 3)
        assert got == {1: [(n, b"other") for n in range(3)]}
        assert await nothing_more(harness.consumer) == {}
        harness.consumer.resume(held)
        assert harness.consumer.paused() == set()
        got, _ = await consume(harness.consumer, 3)
        assert got == {0: [(n, b"held") for n in range(3)]}
        assert other not in harness.consumer.paused()

    async def test_committed_is_the_last_offset_committed_per_partition(self, harness: Harness) -> None:
        first, second = harness.tps
        await harness.produce(0, [b"r"] * 6)
        await consume(harness.consumer, 6)
        assert await harness.consumer.committed(first) is None
        await harness.consumer.commit({first: OffsetAndMetadata(3, "")})
        assert await harness.consumer.committed(first) == 3
        assert await harness.consumer.committed(second) is None
        await harness.consumer.commit({first: OffsetAndMetadata(6, "")})
        assert await harness.consumer.committed(first) == 6

    @pytest.mark.parametrize("max_records", [1, 3])
    async def test_a_commit_does_not_move_the_position(self, harness: Harness, max_records: int) -> None:
        """Committing past what was consumed does not skip records, nor does committing behind re-deliver them:
        the loop commits a batch while the partition's next records are being fetched."""
        tp = harness.tps[0]
        await harness.produce(0, [f"{n}".encode() for n in range(6)])
        got, _ = await consume(harness.consumer, 2, max_records=max_records)
        consumed = len(got[0])
        await harness.consumer.commit({tp: OffsetAndMetadata(1, "")})
        rest, _ = await consume(harness.consumer, 6 - consumed)
        assert [offset for offset, _ in got[0] + rest[0]] == list(range(6))

    async def test_assignment_and_position(self, harness: Harness) -> None:
        """The relay's loop reads its partitions and, for the lag, where each one's next fetch starts."""
        first, second = harness.tps
        assert harness.consumer.assignment() == {first, second}
        assert await harness.consumer.position(first) == 0
        await harness.produce(0, [b"p"] * 4)
        await consume(harness.consumer, 4)
        assert await harness.consumer.position(first) == 4
        assert await harness.consumer.position(second) == 0
