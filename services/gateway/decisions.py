"""The gateway's consumer of decisions about held sends (topic ``wa.gateway.decisions.v1``, key phone_number_id,
produced by the action layer when a ``send`` approval request is approved, rejected or expires).

Guarantees:
- Records are carried out one at a time, in offset order per partition (a number's decisions keep their order).
- **At most once per send id.** An approved send's record is committed after its ``send_attempt`` is journaled and
  before it is forwarded (:meth:`services.gateway.app.GatewayApp.carry_out`): a crash in between leaves the send
  archived with outcome unknown, never sent twice. A decision produced twice (a replay, an action layer that
  retried) is recognised by its send id and skipped: on every assignment the consumer reads its partitions from
  the beginning and learns, without acting, the send ids of the records below the group's committed offset; it
  remembers those it carries out itself. The topic's retention (longer than any hold) bounds what it reads.
- A record that is not a decision is logged (the reason, never its content), counted and committed: retrying
  cannot change it. A Kafka failure before the commit is retried with backoff (nothing was sent).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from services.core.retry import RetryPolicy, Stopped, sleep_until_stopped
from services.gateway.held import HeldDecision, InvalidDecision, parse_decision
from services.gateway.metrics import GatewayMetrics
from services.gateway.settings import GatewaySettings

log = logging.getLogger("wa_archive.gateway.decisions")

Commit = Callable[[], Awaitable[None]]
CarryOut = Callable[[HeldDecision, Commit], Awaitable[None]]

# Kafka away (at start, or while journaling before a commit): tried again until it answers or the gateway stops.
KAFKA_RETRY = RetryPolicy(initial_s=0.5, max_s=10.0, jitter=0.2)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, consumer: DecisionConsumer) -> None:
        self.owner = consumer

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        for tp in revoked:
            self.owner.learn_until.pop(tp, None)

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        await self.owner.adopt(assigned)


class DecisionConsumer:
    def __init__(
        self,
        settings: GatewaySettings,
        carry_out: CarryOut,
        metrics: GatewayMetrics,
        *,
        retry: RetryPolicy = KAFKA_RETRY,
    ) -> None:
        self.settings = settings
        self._retry = retry
        self._carry_out = carry_out
        self._metrics = metrics
        self._stop = asyncio.Event()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None
        # Offsets below which a partition's records were carried out already (the group's committed offset at
        # assignment): read to learn their send ids, not acted on.
        self.learn_until: dict[TopicPartition, int] = {}
        self.done: set[str] = set()
        self.started = asyncio.Event()

    async def start(self) -> None:
        self._consumer = AIOKafkaConsumer(
            **self.settings.kafka.client_options(),
            group_id=self.settings.decisions_group,
            # Commits are the consumer's own, each before the send it covers leaves (module docstring).
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self._consumer.subscribe([self.settings.decisions_topic], listener=_Rebalance(self))
        self._task = asyncio.create_task(self._run(), name="gateway-decisions")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._task, 15)
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), 10)

    async def adopt(self, assigned: list[TopicPartition]) -> None:
        assert self._consumer is not None
        for tp in assigned:
            committed = await self._consumer.committed(tp)
            self.learn_until[tp] = committed or 0
            await self._consumer.seek_to_beginning(tp)

    async def _run(self) -> None:
        assert self._consumer is not None
        consumer = self._consumer
        try:
            await KAFKA_RETRY.run(
                consumer.start,
                retry_on=lambda exc: True,  # aiokafka raises several unrelated types when the broker is away
                on_retry=lambda attempt: log.warning("decisions: kafka not reachable (%s)", type(attempt.error)),
                sleep=sleep_until_stopped(self._stop),
            )
        except Stopped:
            return
        self.started.set()
        while not self._stop.is_set():
            batch = await consumer.getmany(timeout_ms=500, max_records=100)
            for tp, records in batch.items():
                for record in records:
                    try:
                        await self.handle(tp, record.offset, record.value)
                    except Stopped:
                        return

    async def handle(self, tp: TopicPartition, offset: int, value: bytes | None) -> None:
        """Carry out one record (module docstring): learned only below ``learn_until``, skipped and committed when
        invalid or a duplicate, else handed to ``carry_out`` with a commit of ``offset + 1``. A failure before that
        commit is tried again with backoff; after it, never (the send may have left). Raises Stopped when the
        consumer stops while waiting to try again."""
        assert self._consumer is not None
        learning = offset < self.learn_until.get(tp, 0)
        try:
            decision = parse_decision(value)
        except InvalidDecision as exc:
            if not learning:
                log.warning("decisions: record %s/%d skipped: %s", tp.topic, offset, exc)
                self._metrics.decisions.labels("invalid").inc()
                await self._commit(tp, offset)
            return
        if learning:
            self.done.add(decision.send_id)
            return
        if decision.send_id in self.done:
            log.info("decisions: send %s was decided already: record %d skipped", decision.send_id, offset)
            self._metrics.decisions.labels("duplicate").inc()
            await self._commit(tp, offset)
            return
        committed = False

        async def commit() -> None:
            nonlocal committed
            await self._commit(tp, offset)
            committed = True

        sleep = sleep_until_stopped(self._stop)
        retry = 0
        while True:
            try:
                await self._carry_out(decision, commit)
                break
            except Exception as exc:
                if committed:
                    # Past the commit the send may have left: never tried again.
                    log.exception("decisions: send %s failed after its commit: not tried again", decision.send_id)
                    break
                retry += 1
                delay = self._retry.delay(retry)
                log.warning("decisions: send %s not carried out (%s); retrying in %.1fs", decision.send_id,
                            type(exc).__name__, delay)  # fmt: skip
                await sleep(delay)
        self.done.add(decision.send_id)

    async def _commit(self, tp: TopicPartition, offset: int) -> None:
        assert self._consumer is not None
        offsets: dict[TopicPartition, Any] = {tp: offset + 1}
        await self._consumer.commit(offsets)
