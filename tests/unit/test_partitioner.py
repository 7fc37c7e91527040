"""The memoising partitioner picks exactly the partitions Kafka's default (Java-compatible) partitioner picks."""

from __future__ import annotations

import random

import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.core.kafka import MemoPartitioner

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("partitions", [1, 3, 6, 12, 100])
def test_same_partition_as_the_default_partitioner_first_time_and_from_the_memo(partitions: int) -> None:
    rng = random.Random(partitions)
    keys = [f"{rng.randrange(10**14)}:{rng.randrange(10**11)}".encode() for _ in range(500)]
    keys += [b"", b"\x00", bytes(range(256)), "106540352242922:ñandú".encode()]
    all_partitions = list(range(partitions))
    default, memo = DefaultPartitioner(), MemoPartitioner()
    expected = [default(key, all_partitions, all_partitions) for key in keys]
    assert [memo(key, all_partitions, all_partitions) for key in keys] == expected
    assert [memo(key, all_partitions, all_partitions) for key in keys] == expected  # memoised this time


@pytest.mark.parametrize(
    ("key", "partition"),
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_java_client_assignments(key: bytes, partition: int) -> None:
    # What Kafka's Java producer picks among 1,000 partitions (the values kafka-python and aiokafka test against).
    memo = MemoPartitioner()
    assert memo(key, list(range(1000)), list(range(1000))) == partition
    assert memo(key, list(range(1000)), list(range(1000))) == partition


def test_the_memo_is_bounded() -> None:
    memo = MemoPartitioner(capacity=10)
    for n in range(35):
        memo(str(n).encode(), [0, 1, 2], [0, 1, 2])
        assert len(memo._hashes) <= 10


def test_records_without_a_key_go_to_an_available_partition() -> None:
    memo = MemoPartitioner()
    assert {memo(None, [0, 1, 2, 3], [2, 3]) for _ in range(50)} <= {2, 3}
    assert {memo(None, [0, 1], []) for _ in range(50)} <= {0, 1}
