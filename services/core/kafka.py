"""Kafka adapters: the acknowledged producer used by ingest (and by the archiver for dead letters).

Contract of :class:`AckedProducer`: :meth:`produce` returns only when the broker acknowledged every record with
``acks=all`` (idempotent producer, so a retried send never duplicates within a session). It raises
:class:`ProduceUnavailable` when the producer is not connected, when a send fails, or when the deadline passes;
the caller must then treat the whole batch as not acknowledged (ingest answers 503 and Meta retries; the
deterministic event ids make the records that did land deduplicate in the archive).

The producer is librdkafka (confluent-kafka) behind a thin asyncio adapter: records are handed to librdkafka's
queue from the event loop, one thread of the producer's own serves librdkafka's callbacks (``poll``), and the
delivery reports of a :meth:`~AckedProducer.produce` call resolve its future on the loop with one wake-up per
call. Partitioning is ``murmur2_random``: a keyed record goes where Kafka's Java client (and aiokafka) put it, so
a conversation keeps its partition whichever client produced it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from services.core.retry import Attempt, DependencyUnavailable, RetryPolicy
from services.core.settings import KafkaSettings

log = logging.getLogger("wa_archive.kafka")
librdkafka_log = logging.getLogger("wa_archive.kafka.librdkafka")

# Large enough for Meta's biggest single update (a POST is capped at ~3 MB); the production topics have the same
# max.message.bytes (deploy/k8s), which a compressed JSON record of this size fits in.
MAX_RECORD_BYTES = 4 * 1024 * 1024
# What a record batch adds around one record of MAX_RECORD_BYTES: batch header (61 bytes), record framing,
# the key and the headers (a dead letter's reason is at most 500 bytes). librdkafka refuses a record larger than
# message.max.bytes before sending it; the broker checks the batch against the topic's max.message.bytes.
PROTOCOL_OVERHEAD_BYTES = 64 * 1024
# Chosen with bench/producer.py (1-4 KB envelopes, ~1 MB updates). In the broker's log lz4 keeps 0.76 of the
# bytes of a record alone in its batch (low load), 0.47 batched, 0.50 of a 1 MB update, for no CPU measurable on
# a 1-4 KB record (+2-3 ms on 1 MB); zstd keeps 0.56 / 0.33 / 0.31 for about 1.5 times lz4's producer CPU per
# batched record and twice on 1 MB. The consumers read lz4 with cramjam (aiokafka[lz4]).
COMPRESSION = "lz4"
# A record not acknowledged within this is failed by librdkafka (ingest's deadline is shorter: at most 15 s).
DELIVERY_TIMEOUT_MS = 30_000
# librdkafka's default queue is 1 GiB, twice ingest's memory limit: during an outage records of answered (503)
# requests wait in the queue until DELIVERY_TIMEOUT_MS; past this, produce() waits for room until its deadline.
QUEUE_MAX_KBYTES = 128 * 1024
# One metadata request of the background connection loop; stop() waits for one in flight at most this long.
METADATA_TIMEOUT_S = 2.0
# How long the serving thread blocks in poll() when nothing happens (a delivery report wakes it at once).
POLL_INTERVAL_S = 0.1
# How long produce() waits before retrying a record that did not fit in the full queue.
QUEUE_FULL_WAIT_S = 0.005
# stop(): the longest wait for records in flight before the rest is purged.
FLUSH_TIMEOUT_S = 10.0
# librdkafka repeats a connection failure every 50 ms to 1 s while Kafka is down: one line per kind and interval.
LOG_INTERVAL_S = 30.0


class ProduceUnavailable(DependencyUnavailable):
    """Kafka did not acknowledge the batch (down, slow past the deadline, or refused a record)."""

    dependency = "kafka"


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    topic: str
    key: bytes
    value: bytes
    headers: tuple[tuple[str, bytes], ...] = ()


def librdkafka_config(settings: KafkaSettings) -> dict[str, str | int | bool]:
    """The connection and security part of a librdkafka configuration: what
    :meth:`~services.core.settings.KafkaSettings.client_options` gives aiokafka, in librdkafka's keys. TLS
    verifies the broker's certificate and host name (librdkafka's default, as aiokafka's SSL context does) against
    ``ssl_cafile`` or, without one, the system's CA certificates (``probe``)."""
    config: dict[str, str | int | bool] = {
        "bootstrap.servers": settings.bootstrap_servers,
        "security.protocol": settings.security_protocol,
        "client.id": settings.client_id,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        config["ssl.ca.location"] = settings.ssl_cafile or "probe"
    if settings.uses_sasl and settings.sasl_mechanism:
        config["sasl.mechanism"] = settings.sasl_mechanism
        config["sasl.username"] = settings.sasl_username or ""
        config["sasl.password"] = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
    return config


def error_name(exc: BaseException) -> str:
    """A short name for a failure: librdkafka's error name (``_TRANSPORT``, ``MSG_SIZE_TOO_LARGE``) when it is
    one, else the exception's type."""
    if isinstance(exc, KafkaException) and exc.args and isinstance(exc.args[0], KafkaError):
        return exc.args[0].name()
    return type(exc).__name__


class _Throttle:
    """At most one log line per kind and interval; counts the lines it held back."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}
        self._lock = threading.Lock()

    def allow(self, kind: str) -> int | None:
        """None when a line of this kind was logged within the interval, else how many were held back since."""
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < self.interval_s:
                self._held[kind] = self._held.get(kind, 0) + 1
                return None
            self._last[kind] = now
            return self._held.pop(kind, 0)


class _LibrdkafkaLog:
    """librdkafka's own log lines (``logger`` in its configuration), into the project's logger tree instead of
    stderr, at most one per facility (``FAIL``, ``CONFWARN``, …) and interval."""

    def __init__(self, throttle: _Throttle) -> None:
        self._throttle = throttle

    def log(self, level: int, message: str, *args: Any) -> None:
        facility = str(args[0]) if args else "?"
        if facility == "FAIL":  # a connection failure: the error callback reports it too
            return
        held = self._throttle.allow(f"log:{facility}")
        if held is None:
            return
        text = message % args if args else message
        librdkafka_log.log(level, "%s%s", text, f" ({held} more like it held back)" if held else "")


class _Acks:
    """The delivery reports of one :meth:`AckedProducer.produce` call, counted down on the serving thread: the
    future is settled on the loop once, when the last record is acknowledged or the first one fails."""

    __slots__ = ("future", "left", "loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.left = count

    def __call__(self, error: KafkaError | None, _message: Message) -> None:
        # On the serving thread (librdkafka's callbacks), or on stop()'s flush once that thread has ended.
        if self.left <= 0:
            return  # settled already (a record failed)
        if error is None:
            self.left -= 1
            if self.left > 0:
                return
        else:
            self.left = 0
        # A closed loop (the caller is gone) has nobody to tell; an exception here would surface from poll().
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(_settle, self.future, error)


def _settle(future: asyncio.Future[None], error: KafkaError | None) -> None:
    if future.done():  # cancelled: the caller's deadline passed, or produce() gave up on an enqueue failure
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(ProduceUnavailable(f"kafka refused the batch: {error.name()}"))


class _Client:
    """One librdkafka producer and the thread that serves its callbacks until :meth:`close`."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.producer = Producer(config)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="kafka-producer-poll", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                self.producer.poll(POLL_INTERVAL_S)
            except Exception:  # a callback raised: log it, keep serving the others
                log.exception("kafka producer: a librdkafka callback failed")

    def close(self, flush_timeout_s: float) -> int:
        """Blocking (run it in a thread): end the serving thread, wait up to ``flush_timeout_s`` for the records
        in flight, purge the rest (their callers get ProduceUnavailable) and destroy the producer. Returns how many
        records were purged."""
        self._stopping.set()
        self._thread.join()
        left = self.producer.flush(flush_timeout_s)
        if left:
            self.producer.purge()
            self.producer.flush(0)  # serves the purged records' delivery reports
        self.producer.close()
        return left


class AckedProducer:
    """An idempotent ``acks=all`` producer that connects in the background and reports readiness.

    librdkafka connects lazily and reconnects by itself, so "connected" means a metadata request succeeded once;
    like before, it stays true through later outages (produce() then fails within its deadline). A fatal error of
    the idempotent producer (librdkafka refuses every record after one) replaces the librdkafka producer: not
    connected until the new one's metadata request succeeds."""

    def __init__(self, settings: KafkaSettings, *, linger_ms: int = 2, connect_retry_s: float = 1.0) -> None:
        self._settings = settings
        self._linger_ms = linger_ms
        self._connect_retry = RetryPolicy(initial_s=connect_retry_s, max_s=max(connect_retry_s, 5.0), jitter=0.2)
        self._throttle = _Throttle(LOG_INTERVAL_S)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: _Client | None = None
        self._connected = False
        self._connector: asyncio.Task[None] | None = None
        self._probe: asyncio.Future[object] | None = None
        self._replacing: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def connected(self) -> bool:
        return self._connected

    def _config(self) -> dict[str, Any]:
        """The librdkafka configuration of a new producer (a subclass may add to it: bench/producer.py does)."""
        return {
            **librdkafka_config(self._settings),
            "acks": "all",
            "enable.idempotence": True,
            "linger.ms": self._linger_ms,
            "message.max.bytes": MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES,
            "delivery.timeout.ms": DELIVERY_TIMEOUT_MS,
            "queue.buffering.max.kbytes": QUEUE_MAX_KBYTES,
            "compression.type": COMPRESSION,
            "partitioner": "murmur2_random",
            "error_cb": self._on_error,
            "logger": _LibrdkafkaLog(self._throttle),
        }

    async def start(self) -> None:
        """Start connecting; returns at once. :attr:`connected` turns true once the first connection succeeded."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        self._client = _Client(self._config())
        self._connector = asyncio.create_task(self._connect_forever(), name="kafka-producer-connect")

    async def wait_connected(self, timeout_s: float) -> None:
        """Block until connected (used by tools and tests); raises ProduceUnavailable on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        while not self.connected:
            if asyncio.get_running_loop().time() > deadline:
                raise ProduceUnavailable(f"no Kafka connection to {self._settings.bootstrap_servers}")
            await asyncio.sleep(0.05)

    async def _connect_forever(self) -> None:
        client = self._client
        assert client is not None

        async def connect() -> None:
            # The request runs on a worker thread, shielded: when stop() cancels this task it waits for the thread
            # to end before destroying the producer the thread uses.
            self._probe = asyncio.ensure_future(
                asyncio.to_thread(client.producer.list_topics, timeout=METADATA_TIMEOUT_S)
            )
            await asyncio.shield(self._probe)

        def log_retry(attempt: Attempt) -> None:
            log.warning("kafka producer cannot connect yet (%s); retrying", error_name(attempt.error))

        # Until connected or stopped (stop() cancels this task).
        await self._connect_retry.run(connect, retry_on=lambda exc: isinstance(exc, KafkaException), on_retry=log_retry)
        self._connected = True
        log.info("kafka producer connected to %s", self._settings.bootstrap_servers)

    def _on_error(self, error: KafkaError) -> None:
        """librdkafka's error callback (on the serving thread). Errors are informational (librdkafka retries and
        reconnects by itself) except a fatal one."""
        if error.fatal():
            log.error("kafka producer: fatal error %s: %s; replacing the producer", error.name(), error.str())
            if self._loop is not None:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(self._replace_after_fatal)
            return
        held = self._throttle.allow(f"error:{error.name()}")
        if held is not None:
            log.warning(
                "kafka producer: %s: %s%s",
                error.name(),
                error.str(),
                f" ({held} more like it held back)" if held else "",
            )

    def _replace_after_fatal(self) -> None:
        if self._stopping or self._replacing is not None or self._client is None:
            return
        self._connected = False
        self._replacing = asyncio.create_task(self._replace(), name="kafka-producer-replace")

    async def _replace(self) -> None:
        try:
            old = await self._retire_client(flush_timeout_s=0.0)
            if old and not self._stopping:
                self._client = _Client(self._config())
                self._connector = asyncio.create_task(self._connect_forever(), name="kafka-producer-connect")
        finally:
            self._replacing = None

    async def _retire_client(self, flush_timeout_s: float) -> _Client | None:
        """Stop connecting, wait for a metadata request in flight, then close the client (bounded by
        ``flush_timeout_s`` plus METADATA_TIMEOUT_S); returns the client closed, if there was one."""
        if self._connector is not None:
            connector, self._connector = self._connector, None
            connector.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await connector
        if self._probe is not None:
            probe, self._probe = self._probe, None
            with contextlib.suppress(Exception):
                await probe
        client, self._client = self._client, None
        if client is None:
            return None
        purged = await asyncio.to_thread(client.close, flush_timeout_s)
        if purged:
            log.warning("kafka producer closed with %d record(s) not acknowledged", purged)
        return client

    async def produce(self, records: Sequence[OutgoingRecord], *, deadline_s: float) -> None:
        """Send every record concurrently and wait until all are acknowledged, or raise ProduceUnavailable.

        A full librdkafka queue (BufferError) is waited out until the deadline, not failed at once."""
        client = self._client
        if client is None or not self._connected:
            raise ProduceUnavailable("kafka producer not connected")
        if not records:
            return
        producer = client.producer
        acks = _Acks(asyncio.get_running_loop(), len(records))
        try:
            async with asyncio.timeout(deadline_s):
                for r in records:
                    while True:
                        try:
                            producer.produce(r.topic, r.value, r.key, on_delivery=acks, headers=list(r.headers) or None)
                            break
                        except BufferError:  # the queue is full: wait for acknowledgements to make room
                            await asyncio.sleep(QUEUE_FULL_WAIT_S)
                await acks.future
        except TimeoutError:
            raise ProduceUnavailable(
                f"kafka did not acknowledge {len(records)} record(s) within {deadline_s}s"
            ) from None
        except KafkaException as exc:  # refused before sending: too large, unknown topic, fatal state
            raise ProduceUnavailable(f"kafka refused the batch: {error_name(exc)}") from exc
        finally:
            # Reports still to come find the future cancelled and are dropped.
            acks.future.cancel()

    async def stop(self) -> None:
        """Flush what is in flight (at most FLUSH_TIMEOUT_S; the rest is purged, its callers get
        ProduceUnavailable) and close. Safe to call twice."""
        self._stopping = True
        self._connected = False
        if self._replacing is not None:
            with contextlib.suppress(Exception):
                await self._replacing
        await self._retire_client(flush_timeout_s=FLUSH_TIMEOUT_S)
