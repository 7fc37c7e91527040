"""The reference the producer's partitioning is checked against: aiokafka's murmur2 picks exactly the partitions
Kafka's Java client picks. tests/integration/test_producer.py checks that librdkafka (``murmur2_random``) puts
every keyed record on the partition this reference gives."""

from __future__ import annotations

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("key", "partition"),
    [(b"", 681), (b"a", 524), (b"ab", 434), (b"abc", 107), (b"123456789", 566), (b"\x00 ", 742)],
)
def test_java_client_assignments(key: bytes, partition: int) -> None:
    # What Kafka's Java producer picks among 1,000 partitions (the values kafka-python and aiokafka test against).
    assert (murmur2(key) & 0x7FFFFFFF) % 1000 == partition
    assert DefaultPartitioner()(key, list(range(1000)), list(range(1000))) == partition
