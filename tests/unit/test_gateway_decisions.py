"""The gateway's decisions consumer (services/gateway/decisions.py) over an in-memory double of the one Kafka call it
makes per record (``commit``): what is carried out, what is learned, skipped or tried again, and that nothing is
tried again once its offset is committed (the send may have left). The real broker runs the same consumer in
tests/integration/test_gateway_held.py."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from aiokafka import TopicPartition
from prometheus_client import CollectorRegistry

from services.core.retry import RetryPolicy
from services.gateway.decisions import Commit, DecisionConsumer
from services.gateway.held import HeldDecision
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit

TP = TopicPartition("wa.gateway.decisions.v1", 0)


class Consumer:
    """The double: records the offsets committed."""

    def __init__(self) -> None:
        self.commits: list[int] = []

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        self.commits.append(offsets[TP])


def record(send_id: str, decision: str = "approved") -> bytes:
    return orjson.dumps(
        {
            "version": 1,
            "send_id": send_id,
            "message_id": f"wamid.{send_id}",
            "phone_number_id": "1065",
            "waba_id": "1022",
            "decision": decision,
            "reason": None,
            "request": {"to": "1", "type": "text", "text": {"body": "x"}} if decision == "approved" else None,
            "request_id": "r",
            "decided_at": "2026-12-07T02:00:00.000Z",
        }
    )


class CarryOut:
    """Commits, then fails ``fail_after`` times (after the commit) or ``fail_before`` times (before it)."""

    def __init__(self, *, fail_before: int = 0, fail_after: int = 0) -> None:
        self.calls: list[str] = []
        self.fail_before, self.fail_after = fail_before, fail_after

    async def __call__(self, decision: HeldDecision, commit: Commit) -> None:
        self.calls.append(decision.send_id)
        if self.fail_before:
            self.fail_before -= 1
            raise RuntimeError("kafka away before the commit")
        await commit()
        if self.fail_after:
            self.fail_after -= 1
            raise RuntimeError("the send's answer failed after the commit")


def consumer(carry_out: CarryOut) -> tuple[DecisionConsumer, Consumer, CollectorRegistry]:
    registry = CollectorRegistry()
    loop = DecisionConsumer(
        GatewaySettings(), carry_out, GatewayMetrics(registry), retry=RetryPolicy(initial_s=0, max_s=0)
    )
    double = Consumer()
    loop._consumer = double  # the one call the loop makes per record
    return loop, double, registry


def count(registry: CollectorRegistry, result: str) -> Any:
    return registry.get_sample_value("wa_gateway_decisions_total", {"result": result})


async def test_a_decision_is_carried_out_once_and_a_replay_of_it_skipped() -> None:
    carry_out = CarryOut()
    loop, double, registry = consumer(carry_out)
    await loop.handle(TP, 0, record("a"))
    await loop.handle(TP, 1, record("b", "rejected"))
    await loop.handle(TP, 2, record("a"))  # produced twice
    assert carry_out.calls == ["a", "b"]
    assert double.commits == [1, 2, 3]
    assert count(registry, "duplicate") == 1


async def test_what_the_group_committed_before_is_learned_not_done() -> None:
    carry_out = CarryOut()
    loop, double, registry = consumer(carry_out)
    loop.learn_until[TP] = 2  # the group's committed offset at assignment
    await loop.handle(TP, 0, record("a"))
    await loop.handle(TP, 1, b"not json")  # invalid, below the committed offset: neither counted nor committed
    await loop.handle(TP, 2, record("a"))  # the same send id decided again: skipped
    await loop.handle(TP, 3, record("c", "expired"))
    assert carry_out.calls == ["c"]
    assert double.commits == [3, 4]
    assert count(registry, "invalid") is None


async def test_a_record_that_is_not_a_decision_is_committed_and_counted() -> None:
    carry_out = CarryOut()
    loop, double, registry = consumer(carry_out)
    await loop.handle(TP, 7, b'{"version": 1, "decision": "maybe"}')
    assert (carry_out.calls, double.commits, count(registry, "invalid")) == ([], [8], 1)


async def test_a_failure_before_the_commit_is_tried_again() -> None:
    carry_out = CarryOut(fail_before=2)
    loop, double, _ = consumer(carry_out)
    await loop.handle(TP, 0, record("a"))
    assert (carry_out.calls, double.commits) == (["a", "a", "a"], [1])


async def test_nothing_is_tried_again_once_committed() -> None:
    carry_out = CarryOut(fail_after=1)
    loop, double, _ = consumer(carry_out)
    await loop.handle(TP, 0, record("a"))
    await loop.handle(TP, 1, record("a"))
    assert (carry_out.calls, double.commits) == (["a"], [1, 2])
