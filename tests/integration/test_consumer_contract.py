"""The real consumer passes the consumer contract (tests/helpers/consumer_contract.py): what the archiver's loop
relies on, and what the double its unit tests drive (tests/helpers/local_consumer.py) does, holds for
AIOKafkaConsumer against Kafka on 127.0.0.1:9092, with a topic and a group of its own per test."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from devtools.broker import create_topic
from tests.helpers.consumer_contract import PARTITIONS, ConsumerContract, Harness

pytestmark = pytest.mark.integration


class TestKafkaConsumer(ConsumerContract):
    @pytest.fixture
    async def harness(self, kafka_bootstrap: str) -> AsyncIterator[Harness]:
        topic = await create_topic(kafka_bootstrap, partitions=PARTITIONS, prefix="contract")
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        # As the archiver's consumer: a group, manual commits, the earliest offset when none was committed.
        consumer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap,
            group_id=f"contract-{uuid.uuid4().hex[:10]}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all")
        await consumer.start()
        await producer.start()
        consumer.assign(tps)

        async def produce(partition: int, values: Sequence[bytes]) -> None:
            for value in values:
                await producer.send_and_wait(topic, value, partition=partition)

        try:
            yield Harness(consumer, tps, produce)
        finally:
            await producer.stop()
            await consumer.stop()
