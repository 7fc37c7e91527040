"""The acknowledged producer (librdkafka) against the real Kafka: what it acknowledges is in the topic as sent
(headers, the largest record, the partition Kafka's Java client would choose), and every way of not being
acknowledged — Kafka unreachable, a record too large, a topic that never answers, a full queue past the deadline —
is ProduceUnavailable within the deadline."""

from __future__ import annotations

import asyncio
import os
import threading
import time
import uuid
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import murmur2
from confluent_kafka import KafkaError

from services.core.kafka import (
    MAX_RECORD_BYTES,
    PROTOCOL_OVERHEAD_BYTES,
    AckedProducer,
    OutgoingRecord,
    ProduceUnavailable,
)
from services.core.settings import KafkaSettings

pytestmark = pytest.mark.integration


async def new_topic(bootstrap: str, partitions: int = 3, configs: dict[str, str] | None = None) -> str:
    topic = f"test.producer.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs or {})])
    finally:
        await admin.close()
    return topic


async def consume(bootstrap: str, topic: str, partitions: int, expected: int) -> list[Any]:
    """The first ``expected`` records of the topic (aiokafka ConsumerRecords: partition, key, value, headers)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=2 * MAX_RECORD_BYTES,
        fetch_max_bytes=4 * MAX_RECORD_BYTES,
    )
    await consumer.start()
    found: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for _ in range(100):
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
            if len(found) >= expected:
                break
    finally:
        await consumer.stop()
    return found


async def connected_producer(bootstrap: str, **options: Any) -> AckedProducer:
    producer = AckedProducer(KafkaSettings(bootstrap_servers=bootstrap), **options)
    await producer.start()
    await producer.wait_connected(20)
    return producer


def java_partition(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner for a keyed record (Java client, aiokafka): positive murmur2 modulo count."""
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


@pytest.mark.parametrize("partitions", [5, 12])
async def test_a_keyed_record_lands_where_the_java_client_puts_it(kafka_bootstrap: str, partitions: int) -> None:
    topic = await new_topic(kafka_bootstrap, partitions)
    keys = [f"106540352242922:1650555{n:04d}".encode() for n in range(40)]
    # b"": an empty key is hashed like any other (the dead-letter topic gets one for a record without a key).
    keys += [b"", b"a", b"ab", b"abc", b"123456789", b"\x00 ", "106540352242922:ñandú".encode(), bytes(range(1, 256))]
    producer = await connected_producer(kafka_bootstrap)
    try:
        await producer.produce([OutgoingRecord(topic, key, key) for key in keys], deadline_s=10)
    finally:
        await producer.stop()
    records = await consume(kafka_bootstrap, topic, partitions, len(keys))
    assert len(records) == len(keys)
    assert {r.key: r.partition for r in records} == {key: java_partition(key, partitions) for key in keys}
    assert len({r.partition for r in records}) > 1


async def test_headers_keys_and_values_round_trip(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, 1)
    headers = (
        ("wa-dlq-reason", b"postgres refused: CharacterNotInRepertoireError"),
        ("wa-source", b"wa.events.v1/2/4711"),
        ("wa-source", b"a second value under the same name"),
        ("empty", b""),
        ("binary", bytes(range(256))),
        ("ünïcode-name", "ñandú".encode()),
    )
    sent = [
        OutgoingRecord(topic, b"106540352242922:16505551234", b'{"schema":1}', headers),
        OutgoingRecord(topic, b"106540352242922:", b"no headers"),
        OutgoingRecord(topic, b"k", b""),
    ]
    producer = await connected_producer(kafka_bootstrap)
    try:
        await producer.produce(sent, deadline_s=10)
    finally:
        await producer.stop()
    records = await consume(kafka_bootstrap, topic, 1, len(sent))
    assert [(r.key, r.value, tuple(r.headers)) for r in records] == [(s.key, s.value, s.headers) for s in sent]


def json_value(size: int) -> bytes:
    """A JSON document of exactly ``size`` bytes shaped like a large update (what ingest produces)."""
    messages = [
        {"id": f"wamid.{uuid.uuid4().hex}", "text": {"body": f"message number {n}"}} for n in range(size // 100)
    ]
    value = orjson.dumps({"payload": {"messages": messages}, "pad": ""})
    value = orjson.dumps({"payload": {"messages": messages}, "pad": "x" * (size - len(value))})
    assert len(value) == size
    return value


@pytest.mark.parametrize(
    ("topic_max_bytes", "kind"),
    [
        # Incompressible: the topic must leave room for the batch around the record.
        pytest.param(MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES, "random", id="random bytes"),
        # JSON, under the production topics' max.message.bytes (deploy/k8s): compression makes the room.
        pytest.param(MAX_RECORD_BYTES, "json", id="json, production topic limit"),
    ],
)
async def test_a_record_of_max_record_bytes_is_acknowledged_and_read_back_intact(
    kafka_bootstrap: str, topic_max_bytes: int, kind: str
) -> None:
    value = os.urandom(MAX_RECORD_BYTES) if kind == "random" else json_value(MAX_RECORD_BYTES)
    topic = await new_topic(kafka_bootstrap, 1, {"max.message.bytes": str(topic_max_bytes)})
    record = OutgoingRecord(topic, b"106540352242922:16505551234", value, (("wa-source", b"big"),))
    producer = await connected_producer(kafka_bootstrap)
    try:
        await producer.produce([record], deadline_s=20)
    finally:
        await producer.stop()
    records = await consume(kafka_bootstrap, topic, 1, 1)
    assert len(records) == 1
    assert records[0].value == value
    assert records[0].key == record.key
    assert tuple(records[0].headers) == record.headers


async def test_a_record_larger_than_librdkafka_accepts_is_refused_at_once(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, 1)
    producer = await connected_producer(kafka_bootstrap)
    try:
        started = time.monotonic()
        too_large = OutgoingRecord(topic, b"k", os.urandom(MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES + 1))
        with pytest.raises(ProduceUnavailable, match="MSG_SIZE_TOO_LARGE"):
            await producer.produce([too_large], deadline_s=10)
        assert time.monotonic() - started < 2
        await producer.produce([OutgoingRecord(topic, b"k", b"still fine")], deadline_s=10)
    finally:
        await producer.stop()


async def test_kafka_unreachable_is_unavailable_within_the_deadline_and_never_connected() -> None:
    producer = AckedProducer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), connect_retry_s=0.1)
    started = time.monotonic()
    await producer.start()
    assert time.monotonic() - started < 0.5  # start() does not wait for Kafka
    try:
        with pytest.raises(ProduceUnavailable):
            await producer.wait_connected(1.0)
        started = time.monotonic()
        with pytest.raises(ProduceUnavailable, match="not connected"):
            await producer.produce([OutgoingRecord("wa.events.v1", b"k", b"v")], deadline_s=1.0)
        assert time.monotonic() - started < 1.0
        assert not producer.connected
    finally:
        started = time.monotonic()
        await producer.stop()
        await producer.stop()
    assert time.monotonic() - started < 4  # a metadata request in flight is waited for, bounded
    assert not producer.connected


async def test_stop_is_safe_twice_and_without_start(kafka_bootstrap: str) -> None:
    never_started = AckedProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    await never_started.stop()
    await never_started.stop()

    topic = await new_topic(kafka_bootstrap, 1)
    producer = await connected_producer(kafka_bootstrap)
    await producer.produce([OutgoingRecord(topic, b"k", b"before stop")], deadline_s=10)
    await producer.stop()
    await producer.stop()
    assert not producer.connected
    with pytest.raises(ProduceUnavailable, match="not connected"):
        await producer.produce([OutgoingRecord(topic, b"k", b"after stop")], deadline_s=1)
    assert [r.value for r in await consume(kafka_bootstrap, topic, 1, 1)] == [b"before stop"]


async def test_a_record_never_acknowledged_is_unavailable_at_the_deadline(kafka_bootstrap: str) -> None:
    # The local broker creates no topic implicitly: librdkafka keeps the record queued, waiting for the topic.
    producer = await connected_producer(kafka_bootstrap)
    try:
        started = time.monotonic()
        with pytest.raises(ProduceUnavailable, match=r"within 1\.0s"):
            await producer.produce([OutgoingRecord(f"test.missing.{uuid.uuid4().hex}", b"k", b"v")], deadline_s=1.0)
        assert 0.9 < time.monotonic() - started < 1.5
        topic = await new_topic(kafka_bootstrap, 1)
        await producer.produce([OutgoingRecord(topic, b"k", b"v")], deadline_s=10)  # the producer is still fine
    finally:
        await producer.stop()


class TinyQueueProducer(AckedProducer):
    """Room for one record in librdkafka's queue, and a long linger: the second record meets a full queue."""

    def _config(self) -> dict[str, Any]:
        return {**super()._config(), "queue.buffering.max.messages": 1, "linger.ms": 100}


async def test_a_full_queue_is_waited_out_until_the_deadline(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, 1)
    producer = TinyQueueProducer(KafkaSettings(bootstrap_servers=kafka_bootstrap))
    await producer.start()
    try:
        await producer.wait_connected(20)
        records = [OutgoingRecord(topic, b"k", f"record {n}".encode()) for n in range(5)]
        started = time.monotonic()
        await producer.produce(records, deadline_s=10)
        assert time.monotonic() - started > 0.3  # one record per linger: it waited for room, several times

        started = time.monotonic()
        with pytest.raises(ProduceUnavailable, match=r"within 0\.25s"):
            await producer.produce(records, deadline_s=0.25)
        assert time.monotonic() - started < 0.6
    finally:
        await producer.stop()
    values = [r.value for r in await consume(kafka_bootstrap, topic, 1, 5)]
    assert values[:5] == [r.value for r in records]  # in order; the timed-out call may have landed some too


async def test_concurrent_callers_are_each_acknowledged(kafka_bootstrap: str) -> None:
    # Ingest: one produce() per request, many requests at once.
    topic = await new_topic(kafka_bootstrap, 3)
    producer = await connected_producer(kafka_bootstrap)
    sent = [OutgoingRecord(topic, f"106540352242922:{n % 17}".encode(), f"v{n}".encode()) for n in range(300)]
    try:
        await asyncio.gather(*(producer.produce((record,), deadline_s=10) for record in sent))
        await producer.produce(sent[:50], deadline_s=10)  # and a batch of many records in one call
    finally:
        await producer.stop()
    records = await consume(kafka_bootstrap, topic, 3, 350)
    assert sorted(r.value for r in records) == sorted([s.value for s in sent] + [s.value for s in sent[:50]])


async def test_a_fatal_error_replaces_the_librdkafka_producer(kafka_bootstrap: str) -> None:
    topic = await new_topic(kafka_bootstrap, 1)
    producer = await connected_producer(kafka_bootstrap)
    try:
        # As librdkafka reports it: the error callback, on a thread of its own.
        fatal = KafkaError(KafkaError._FATAL, "test: the idempotent producer is fenced", fatal=True)
        thread = threading.Thread(target=producer._on_error, args=(fatal,))
        thread.start()
        thread.join()
        for _ in range(100):
            if not producer.connected:
                break
            await asyncio.sleep(0.01)
        assert not producer.connected
        await producer.wait_connected(20)
        await producer.produce([OutgoingRecord(topic, b"k", b"after the replacement")], deadline_s=10)
    finally:
        await producer.stop()
    assert [r.value for r in await consume(kafka_bootstrap, topic, 1, 1)] == [b"after the replacement"]
