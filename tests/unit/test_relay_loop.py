"""The relay's consumer loop (services/relay/relay.py) driven by the in-memory consumer double
(tests/helpers/local_consumer.py) and a scripted receiver: order per partition, commits only after delivery,
parking, the retry budget, backpressure and revoke, in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.core.events import Event
from services.core.http1 import NotSent
from services.core.journal import event_record, webhook_record
from services.core.kafka import OutgoingRecord
from services.ingest.outbound import outbound_event
from services.ingest.signature import sign
from services.relay.delivery import RECORD_POSITION, Backoff
from services.relay.metrics import RelayMetrics
from services.relay.relay import PARK_REASON_HEADER, PARK_SOURCE_HEADER, Destination, DestinationLoop
from tests.helpers.local_consumer import LocalConsumer, ManualClock

pytestmark = pytest.mark.unit

TOPIC = "wa.events.v1"
SECRET = b"meta-app-secret"
QUICK = Backoff(initial_s=0.001, max_s=0.004, jitter=0.0, budget_s=10.0)


@dataclass
class Receiver:
    """Answers ``status(position)``; a position in ``held`` waits for its event first. Records what it got."""

    status: Callable[[str], int | Exception] = lambda _position: 200
    held: dict[str, asyncio.Event] = field(default_factory=dict)
    got: list[str] = field(default_factory=list)
    attempts: int = 0

    async def post(self, body: bytes, headers: Mapping[str, str]) -> int:
        position = headers[RECORD_POSITION]
        self.attempts += 1
        if position in self.held:
            await self.held[position].wait()
        answer = self.status(position)
        if isinstance(answer, Exception):
            raise answer
        if 200 <= answer < 300:
            self.got.append(position)
        return answer


@dataclass
class Parking:
    parked: list[OutgoingRecord] = field(default_factory=list)

    async def produce(self, records: tuple[OutgoingRecord, ...], *, deadline_s: float) -> None:
        self.parked.extend(records)


def webhook(n: int) -> tuple[bytes, list[tuple[str, bytes]]]:
    raw = (
        b'{"object":"whatsapp_business_account","entry":[{"id":"1","changes":[{"field":"messages","value":{"n":%d}}]}]}'
        % n
    )
    record = webhook_record(TOPIC, "111", raw, signature=sign(raw, SECRET), received_at="2026-12-06T00:00:00.000Z")
    return raw, list(record.headers)


@dataclass
class Rig:
    consumer: LocalConsumer
    loop: DestinationLoop
    receiver: Receiver
    parking: Parking
    registry: CollectorRegistry

    def append(self, partition: int, count: int) -> None:
        for n in range(count):
            raw, headers = webhook(n)
            self.consumer.append(partition, raw, key=b"111", timestamp_ms=1_000, headers=headers)

    def committed(self) -> dict[int, int]:
        return {tp.partition: offset for tp, offset in self.consumer.offsets.items()}

    def sample(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, {"destination": "inbox", **labels}) or 0.0


async def until(condition: Callable[[], bool]) -> None:
    for _ in range(2_000):
        if condition():
            return
        await asyncio.sleep(0.001)
    raise AssertionError("condition not reached")


@contextlib.asynccontextmanager
async def running(
    receiver: Receiver, *, backoff: Backoff = QUICK, max_buffered_records: int = 100, partitions: int = 2
) -> AsyncIterator[Rig]:
    consumer = LocalConsumer(TOPIC, partitions, ManualClock())
    clock = ManualClock()  # the loop's own: only the backoff's waits move it

    async def sleep(seconds: float) -> None:  # the backoff's waits pass on the clock the retry budget is read on
        clock.advance(seconds)
        await asyncio.sleep(0)

    tps = [TopicPartition(TOPIC, p) for p in range(partitions)]
    consumer.assign(tps)
    registry = CollectorRegistry()
    parking = Parking()
    destination = Destination(
        name="inbox", url="http://x/", fields=frozenset(), secret=None, backoff=backoff, parking_topic="parked"
    )
    loop = DestinationLoop(
        consumer,
        destination,
        receiver,
        parking,
        RelayMetrics(registry),
        max_buffered_records=max_buffered_records,
        commit_interval_s=0.0,
        poll_timeout_ms=1,
        clock=clock,
        draw=lambda: 0.0,
        sleep=sleep,
    )
    await loop.adopt(tps)
    stop = asyncio.Event()
    rig = Rig(consumer, loop, receiver, parking, registry)
    task = asyncio.create_task(loop.run(stop))
    try:
        yield rig
    finally:
        for event in receiver.held.values():
            event.set()
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_each_partition_in_order_and_committed_only_once_delivered() -> None:
    gate = asyncio.Event()
    receiver = Receiver(held={f"{TOPIC}/0/1": gate})
    async with running(receiver) as rig:
        rig.append(0, 3)
        rig.append(1, 2)
        await until(lambda: rig.committed().get(1) == 2 and rig.committed().get(0) == 1)
        assert sorted(receiver.got) == [f"{TOPIC}/0/0", f"{TOPIC}/1/0", f"{TOPIC}/1/1"]
        await asyncio.sleep(0.01)
        assert rig.committed()[0] == 1, "offset 1 is in flight: nothing past it is committed"
        gate.set()
        await until(lambda: rig.committed() == {0: 3, 1: 2})
    by_partition = [p for p in receiver.got if p.startswith(f"{TOPIC}/0/")]
    assert by_partition == [f"{TOPIC}/0/{n}" for n in range(3)]
    assert rig.sample("wa_relay_deliveries_total", outcome="delivered") == 5
    assert rig.sample("wa_relay_lag_records") == 0


async def test_a_refused_record_is_parked_with_its_reason_and_the_lane_moves_on() -> None:
    receiver = Receiver(status=lambda position: 400 if position.endswith("/0/0") else 200)
    async with running(receiver) as rig:
        rig.append(0, 2)
        await until(lambda: rig.committed().get(0) == 2)
    (parked,) = rig.parking.parked
    raw, headers = webhook(0)
    assert (parked.topic, parked.key, parked.value) == ("parked", b"111", raw)
    named = dict(parked.headers)
    assert named[PARK_REASON_HEADER] == b"rejected: HTTP 400"
    assert named[PARK_SOURCE_HEADER] == f"{TOPIC}/0/0".encode()
    assert set(headers) <= set(parked.headers), "the journal record's own headers travel with it"
    assert receiver.got == [f"{TOPIC}/0/1"]
    assert rig.sample("wa_relay_parked_total", reason="rejected") == 1


@pytest.mark.parametrize(
    ("answer", "kind"),
    [
        pytest.param(503, "status_5xx", id="5xx"),
        pytest.param(429, "status_429", id="429"),
        pytest.param(NotSent("ConnectionRefusedError"), "connection", id="refused"),
    ],
)
async def test_a_failing_receiver_is_retried_then_parked_when_the_budget_is_spent(
    answer: int | Exception, kind: str
) -> None:
    receiver = Receiver(status=lambda _position: answer)
    budget = Backoff(initial_s=0.001, max_s=0.004, jitter=0.0, budget_s=0.02)
    async with running(receiver, backoff=budget) as rig:
        rig.append(0, 1)
        await until(lambda: rig.committed().get(0) == 1)
    (parked,) = rig.parking.parked
    assert dict(parked.headers)[PARK_REASON_HEADER].startswith(b"retry_budget_exhausted: ")
    assert receiver.attempts == 7  # waits of 1, 2, 4, 4, 4, 4 ms fit in the 20 ms budget; one more would not
    assert rig.sample("wa_relay_attempt_failures_total", kind=kind) == receiver.attempts


async def test_a_receiver_back_within_the_budget_gets_the_record_once() -> None:
    answers = iter([503, 503, 200])
    receiver = Receiver(status=lambda _position: next(answers))
    async with running(receiver) as rig:
        rig.append(0, 1)
        await until(lambda: rig.committed().get(0) == 1)
    assert (receiver.got, rig.parking.parked) == ([f"{TOPIC}/0/0"], [])


async def test_records_that_are_not_webhooks_are_skipped_and_committed() -> None:
    receiver = Receiver()
    async with running(receiver, partitions=1) as rig:
        report = event_record(TOPIC, _outbound_event())
        rig.consumer.append(0, report.value, key=report.key, headers=list(report.headers))
        rig.append(0, 1)
        await until(lambda: rig.committed().get(0) == 2)
    assert receiver.got == [f"{TOPIC}/0/1"]
    assert rig.sample("wa_relay_deliveries_total", outcome="skipped") == 1


async def test_a_partition_too_far_ahead_is_paused_until_its_lane_catches_up() -> None:
    gate = asyncio.Event()
    receiver = Receiver(held={f"{TOPIC}/0/0": gate})
    async with running(receiver, max_buffered_records=2, partitions=1) as rig:
        rig.append(0, 6)
        tp = TopicPartition(TOPIC, 0)
        await until(lambda: tp in rig.consumer.paused())
        gate.set()
        await until(lambda: rig.committed().get(0) == 6)
        assert tp not in rig.consumer.paused()
    assert receiver.got == [f"{TOPIC}/0/{n}" for n in range(6)]


async def test_a_revoked_partition_stops_and_commits_what_it_finished() -> None:
    gate = asyncio.Event()
    receiver = Receiver(held={f"{TOPIC}/0/1": gate})
    async with running(receiver) as rig:
        rig.consumer.subscribe([TOPIC], _Listener(rig.loop))
        rig.append(0, 3)
        await until(lambda: rig.committed().get(0) == 1 and receiver.attempts == 2)
        await rig.consumer.rebalance(revoked=[TopicPartition(TOPIC, 0)], assigned=[])
        assert TopicPartition(TOPIC, 0) not in rig.loop.lanes
        gate.set()
        await asyncio.sleep(0.01)
    assert rig.committed() == {0: 1}, "the next owner starts at the record that was in flight"
    assert receiver.got == [f"{TOPIC}/0/0"]


class _Listener:
    def __init__(self, loop: DestinationLoop) -> None:
        self.loop = loop

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.loop.release(revoked)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.loop.adopt(assigned)


def _outbound_event() -> Event:
    report = {"phone_number_id": "111", "request": {"to": "1"}, "response": {"messages": [{"id": "wamid.o"}]}}
    return outbound_event(orjson.dumps(report), received_at="2026-12-06T00:00:00.000Z")
