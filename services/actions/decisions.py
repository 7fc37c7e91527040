"""The decision records of held messages, to the send gateway: a Kafka producer the action layer starts only when
a decision is first published (an operator's CLI run that never decides one never connects to Kafka).

Contract of :meth:`DecisionPublisher.publish`: it returns once Kafka acknowledged the record with ``acks=all``
(the project's idempotent producer, services/core/kafka.py), and raises :class:`DecisionNotPublished` (409, a
refusal every adapter shows with its words) when Kafka is down, slow past the deadline, or refuses the record;
the caller then leaves the request undecided (services/actions/held_sends.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any, ClassVar, Final

from services.core.kafka import AckedProducer, OutgoingRecord, ProduceUnavailable
from services.core.refusals import ActionRefused
from services.core.settings import KafkaSettings
from services.governance.held_sends import record_bytes

# The first connection of a process (a CLI run, a console that published nothing yet), then each record: within
# what an operator waits for after pressing Approve.
CONNECT_S: Final = 5.0
DEADLINE_S: Final = 10.0


class DecisionNotPublished(ActionRefused):
    """Kafka did not acknowledge the decision record: nothing was decided, the request still waits; try again.
    A refusal (a client error, as every refusal is) in the request's current state: 409, as a decision that
    cannot be taken now."""

    http_status: ClassVar[int] = 409
    exit_code: ClassVar[int] = 2
    kind = "kafka"


class DecisionPublisher:
    """Publishes decision records on ``topic`` (keyed by business number, services/governance/held_sends.py)."""

    def __init__(self, settings: KafkaSettings, topic: str, *, connect_s: float = CONNECT_S) -> None:
        self.settings = settings
        self.topic = topic
        self.connect_s = connect_s
        self._producer: AckedProducer | None = None
        self._starting = asyncio.Lock()

    async def _started(self) -> AckedProducer:
        async with self._starting:
            if self._producer is None:
                producer = AckedProducer(self.settings)
                await producer.start()
                self._producer = producer
        return self._producer

    async def publish(self, record: Mapping[str, Any]) -> None:
        """Publish one decision record and wait for its acknowledgement (module docstring)."""
        key, value = record_bytes(record)
        try:
            producer = await self._started()
            await producer.wait_connected(self.connect_s)
            await producer.produce([OutgoingRecord(self.topic, key, value)], deadline_s=DEADLINE_S)
        except ProduceUnavailable as exc:
            raise DecisionNotPublished(
                f"Kafka did not acknowledge the decision ({exc}): nothing was decided and the message is still "
                "held; try again when Kafka is back"
            ) from None

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None
