"""The consumer double passes the consumer contract (tests/helpers/consumer_contract.py), as the real one does."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from tests.helpers.consumer_contract import PARTITIONS, ConsumerContract, Harness
from tests.helpers.local_consumer import LocalConsumer, ManualClock

pytestmark = pytest.mark.unit


class TestLocalConsumer(ConsumerContract):
    @pytest.fixture
    def harness(self) -> Harness:
        consumer = LocalConsumer("events", PARTITIONS, ManualClock())
        tps = sorted(consumer.logs)
        consumer.assign(tps)

        async def produce(partition: int, values: Sequence[bytes]) -> None:
            for value in values:
                consumer.append(partition, value)

        return Harness(consumer, tps, produce)


def test_an_empty_poll_moves_the_clock_by_its_timeout() -> None:
    """How the loop's batches age in the unit tests: each empty poll is the time a real one would have waited."""
    clock = ManualClock()
    consumer = LocalConsumer("events", 1, clock)
    consumer.assign(consumer.logs)

    async def polls() -> None:
        await consumer.getmany(timeout_ms=200)
        consumer.append(0, b"x")
        await consumer.getmany(timeout_ms=200)

    asyncio.run(polls())
    assert clock() == pytest.approx(0.2)


async def test_a_call_it_does_not_model_fails_loudly() -> None:
    consumer = LocalConsumer("events", 1, ManualClock())
    with pytest.raises(AttributeError, match=r"does not model AIOKafkaConsumer\.seek"):
        consumer.seek(sorted(consumer.logs)[0], 0)
