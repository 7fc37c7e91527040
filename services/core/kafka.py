"""Kafka adapters: the acknowledged producer used by ingest (and by the archiver for dead letters).

Contract of :class:`AckedProducer`: :meth:`produce` returns only when the broker acknowledged every record with
``acks=all`` (idempotent producer, so a retried send never duplicates within a session). It raises
:class:`ProduceUnavailable` when the producer is not connected, when a send fails, or when the deadline passes;
the caller must then treat the whole batch as not acknowledged (ingest answers 503 and Meta retries; the
deterministic event ids make the records that did land deduplicate in the archive).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from services.core.retry import Attempt, DependencyUnavailable, RetryPolicy
from services.core.settings import KafkaSettings

log = logging.getLogger("wa_archive.kafka")

# Large enough for Meta's biggest single update (a POST is capped at ~3 MB); the topics are created with the
# same max.message.bytes (deploy/local/provision.py, deploy/k8s topics).
MAX_RECORD_BYTES = 4 * 1024 * 1024


class ProduceUnavailable(DependencyUnavailable):
    """Kafka did not acknowledge the batch (down, slow past the deadline, or refused a record)."""

    dependency = "kafka"


class MemoPartitioner:
    """Kafka's default partitioning — murmur2 of the key, as the Java client does, so a conversation lands where
    any other client would put it — with the hash remembered per key. aiokafka's murmur2 is pure Python (6 to 10 µs
    a record on ingest's hot path) and keys (``phone_number_id:wa_id``) repeat for every message of a
    conversation. At most ``capacity`` keys are kept; the memo is emptied when full."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._hashes: dict[bytes, int] = {}
        self._keyless = DefaultPartitioner()

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            return int(self._keyless(key, all_partitions, available))
        positive_hash = self._hashes.get(key)
        if positive_hash is None:
            if len(self._hashes) >= self.capacity:
                self._hashes.clear()
            positive_hash = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[positive_hash % len(all_partitions)]


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


class AckedProducer:
    """An idempotent ``acks=all`` producer that connects in the background and reports readiness."""

    def __init__(self, settings: KafkaSettings, *, linger_ms: int = 2, connect_retry_s: float = 1.0) -> None:
        self._settings = settings
        self._linger_ms = linger_ms
        self._connect_retry = RetryPolicy(initial_s=connect_retry_s, max_s=max(connect_retry_s, 5.0), jitter=0.2)
        self._producer: AIOKafkaProducer | None = None
        self._connector: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._producer is not None

    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            **self._settings.client_options(),
            acks="all",
            enable_idempotence=True,
            linger_ms=self._linger_ms,
            max_request_size=MAX_RECORD_BYTES,
            request_timeout_ms=30_000,
            partitioner=MemoPartitioner(),
        )

    async def start(self) -> None:
        """Start connecting; returns at once. :attr:`connected` turns true once the first connection succeeded."""
        self._connector = asyncio.create_task(self._connect_forever(), name="kafka-producer-connect")

    async def wait_connected(self, timeout_s: float) -> None:
        """Block until connected (used by tools and tests); raises ProduceUnavailable on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.connected:
            if asyncio.get_running_loop().time() > deadline:
                raise ProduceUnavailable(f"no Kafka connection to {self._settings.bootstrap_servers}")
            await asyncio.sleep(0.05)

    async def _connect_forever(self) -> None:
        async def connect() -> AIOKafkaProducer:
            producer = self._new_producer()
            try:
                await producer.start()
            except KafkaError:
                with contextlib.suppress(Exception):
                    await producer.stop()
                raise
            return producer

        def log_retry(attempt: Attempt) -> None:
            log.warning("kafka producer cannot connect yet (%s); retrying", type(attempt.error).__name__)

        # Until connected or stopped (stop() cancels this task).
        self._producer = await self._connect_retry.run(
            connect, retry_on=lambda exc: isinstance(exc, KafkaError), on_retry=log_retry
        )
        log.info("kafka producer connected to %s", self._settings.bootstrap_servers)

    async def produce(self, records: Sequence[OutgoingRecord], *, deadline_s: float) -> None:
        """Send every record concurrently and wait until all are acknowledged, or raise ProduceUnavailable."""
        producer = self._producer
        if producer is None:
            raise ProduceUnavailable("kafka producer not connected")
        try:
            async with asyncio.timeout(deadline_s):
                # send() only enqueues (it waits when the buffer is full); the returned futures resolve on ack.
                pending = [
                    await producer.send(r.topic, r.value, key=r.key, headers=list(r.headers) or None) for r in records
                ]
                if len(pending) == 1:  # ingest's usual case: no gathering future to build
                    await pending[0]
                else:
                    await asyncio.gather(*pending)
        except TimeoutError:
            raise ProduceUnavailable(
                f"kafka did not acknowledge {len(records)} record(s) within {deadline_s}s"
            ) from None
        except KafkaError as exc:
            raise ProduceUnavailable(f"kafka refused the batch: {type(exc).__name__}") from exc

    async def stop(self) -> None:
        """Flush what is in flight and close. Safe to call twice."""
        if self._connector is not None:
            self._connector.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._connector
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()
