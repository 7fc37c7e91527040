"""The real broker as the tests and the benchmarks use it: a fresh topic per run, reading a topic back from its
start, and the offsets a consumer group committed."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.core.kafka import MAX_RECORD_BYTES, PROTOCOL_OVERHEAD_BYTES


async def create_topic(bootstrap: str, partitions: int = 3, prefix: str = "t") -> str:
    topic = f"test.{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        large = {"max.message.bytes": str(MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES)}
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=large)]
        )
    finally:
        await admin.close()
    return topic


@contextlib.asynccontextmanager
async def topic_from_start(bootstrap: str, topic: str, partitions: int) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less consumer assigned every partition of ``topic``, positioned at the beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, expected: int, partitions: int = 3) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first ``expected`` records of every partition (bounded wait)."""
    found: list[tuple[bytes, bytes]] = []
    async with topic_from_start(bootstrap, topic, partitions) as consumer:
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend((r.key, r.value) for r in records)
            if len(found) >= expected:
                break
    return found


async def read_records(
    bootstrap: str, topic: str, expected: int, partitions: int = 3
) -> list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]:
    """(key, value, headers) of the first ``expected`` records of every partition (bounded wait)."""
    found: list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]] = []
    async with topic_from_start(bootstrap, topic, partitions) as consumer:
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend((r.key, r.value, tuple(r.headers or ())) for r in records)
            if len(found) >= expected:
                break
    return found


async def read_to_end(
    bootstrap: str, topic: str, partitions: int = 3
) -> list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]:
    """(key, value, headers) of every record up to the log end as it is when called (bounded wait).

    Unlike :func:`read_topic` it does not stop at an expected count, so a record that should not be there is
    read too.
    """
    found: list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]] = []
    async with topic_from_start(bootstrap, topic, partitions) as consumer:
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        for _ in range(300):
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                return found
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend((r.key, r.value, tuple(r.headers or ())) for r in records)
    raise AssertionError(f"{topic}: only {len(found)} records read, short of the log end {ends}")


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offset per partition (0 where nothing was committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The log-end offset per partition (what a caught-up group has committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()
