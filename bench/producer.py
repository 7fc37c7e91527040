"""The acknowledged producer on its own against the real Kafka: acknowledgement latency and CPU per produce() of
librdkafka (services/core/kafka.py) against the aiokafka producer it replaced, and what compression costs and
saves for the records ingest produces.

- latency: N sequential single-record produce() calls (ingest's call, one conversation after another), p50/p99
  of the time to the acknowledgement (acks=all) and CPU per call (``time.process_time``: every thread of this
  process, librdkafka's included); then the same records from 64 callers at once (ingest under load): CPU per
  record and records/s. The baseline is the aiokafka ``AckedProducer`` of before (copied below, with
  its memoising murmur2 partitioner), without compression as it ran.
- compression: for none, lz4 and zstd, 1-4 KB webhook envelopes made by the project's splitter (sequentially,
  one record per batch as at low load, and with 64 callers at once, where librdkafka batches), and ~1 MB ones:
  CPU per record while producing, bytes sent (librdkafka's ``tx_bytes`` statistic, requests included), bytes
  in the broker's log (the topic's segment files, when the broker is the local stack's), and CPU per record for
  an aiokafka consumer (the archiver's) to read them back.

    python -m bench.producer [--records 2000] [--runs 3] [--save]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError as AiokafkaError
from aiokafka.partitioner import DefaultPartitioner, murmur2

from bench.common import demo_env, machine, write_result
from devtools import pipeline
from devtools.samples import REPO_ROOT
from services.core.kafka import MAX_RECORD_BYTES, AckedProducer, OutgoingRecord, ProduceUnavailable
from services.core.settings import KafkaSettings

CODECS = ("none", "lz4", "zstd")


class Words:
    """Text for message bodies with roughly a natural language's statistics: 5,000 made-up words drawn with
    Zipf's law (the n-th most frequent word 1/n as often as the first), so that compression ratios are neither
    those of random bytes nor those of a short repeated vocabulary."""

    def __init__(self, rng: random.Random, vocabulary: int = 5000) -> None:
        letters = "abcdefghijklmnopqrstuvwxyzéàñ"
        self.rng = rng
        self.words = ["".join(rng.choices(letters, k=rng.randrange(1, 10))) for _ in range(vocabulary)]
        self.weights = list(itertools.accumulate(1 / rank for rank in range(1, vocabulary + 1)))

    def text(self, count: int) -> str:
        return " ".join(self.rng.choices(self.words, cum_weights=self.weights, k=count))


class Producer(Protocol):
    async def start(self) -> None: ...
    async def wait_connected(self, timeout_s: float) -> None: ...
    async def produce(self, records: Sequence[OutgoingRecord], *, deadline_s: float) -> None: ...
    async def stop(self) -> None: ...


# --- the baseline: services/core/kafka.py's AckedProducer before librdkafka (aiokafka), trimmed to its use here.


class MemoPartitioner:
    """murmur2 of the key as Kafka's Java client does, remembered per key (the baseline's partitioner)."""

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


class AiokafkaAckedProducer:
    """The aiokafka producer ingest used before, with its settings (acks=all, idempotent, linger 2 ms)."""

    def __init__(self, settings: KafkaSettings, *, linger_ms: int = 2) -> None:
        self._producer = AIOKafkaProducer(
            **settings.client_options(),
            acks="all",
            enable_idempotence=True,
            linger_ms=linger_ms,
            max_request_size=MAX_RECORD_BYTES,
            request_timeout_ms=30_000,
            partitioner=MemoPartitioner(),
        )

    async def start(self) -> None:
        await self._producer.start()

    async def wait_connected(self, timeout_s: float) -> None:
        return None

    async def produce(self, records: Sequence[OutgoingRecord], *, deadline_s: float) -> None:
        try:
            async with asyncio.timeout(deadline_s):
                pending = [
                    await self._producer.send(r.topic, r.value, key=r.key, headers=list(r.headers) or None)
                    for r in records
                ]
                if len(pending) == 1:
                    await pending[0]
                else:
                    await asyncio.gather(*pending)
        except TimeoutError:
            raise ProduceUnavailable("deadline") from None
        except AiokafkaError as exc:
            raise ProduceUnavailable(type(exc).__name__) from exc

    async def stop(self) -> None:
        await self._producer.stop()


# --- the producer under test, with a compression of choice and librdkafka's statistics.


class MeasuredProducer(AckedProducer):
    """The project's producer with ``compression`` instead of its own and librdkafka's statistics kept."""

    def __init__(self, settings: KafkaSettings, compression: str, *, linger_ms: int = 2) -> None:
        super().__init__(settings, linger_ms=linger_ms)
        self.compression = compression
        self.stats: dict[str, Any] = {}

    def _config(self) -> dict[str, Any]:
        return {
            **super()._config(),
            "compression.type": self.compression,
            "statistics.interval.ms": 100,
            "stats_cb": self._on_stats,
        }

    def _on_stats(self, text: str) -> None:
        self.stats = json.loads(text)

    async def fresh_stats(self) -> dict[str, Any]:
        """Statistics emitted after this call (they cover everything acknowledged before it)."""
        before = self.stats.get("ts", 0)
        for _ in range(100):
            await asyncio.sleep(0.05)
            if self.stats.get("ts", 0) > before:
                return self.stats
        raise RuntimeError("librdkafka emitted no statistics")


# --- records


def envelopes(count: int, rng: random.Random, words: Words) -> list[OutgoingRecord]:
    """1-4 KB envelopes of inbound text messages (the splitter's output, keys included): many people, a few
    business numbers, message bodies of random words."""
    numbers = [pipeline.Person.fresh() for _ in range(4)]
    bodies = []
    for i in range(count):
        business = numbers[i % len(numbers)]
        person = pipeline.Person(business.waba_id, business.phone_number_id, f"1650{rng.randrange(10**7):07d}")
        text = words.text(rng.randrange(60, 430))
        bodies.append(pipeline.text_message(person, f"wamid.BENCH{uuid.uuid4().hex}", text, 1_760_000_000 + i))
    return [OutgoingRecord("", e.key(), e.to_json()) for e in pipeline.events_of(bodies)]


def large_record(rng: random.Random, words: Words, size: int = 1024 * 1024) -> OutgoingRecord:
    """A ~1 MB JSON value: an update carrying many messages (ids, timestamps, text), as a history sync does."""
    messages: list[dict[str, Any]] = []
    length = 0
    while length < size:
        message = {
            "from": f"1650{rng.randrange(10**7):07d}",
            "id": f"wamid.HBgL{uuid.uuid4().hex}{uuid.uuid4().hex[:8]}",
            "timestamp": str(1_760_000_000 + rng.randrange(10**6)),
            "type": "text",
            "text": {"body": words.text(rng.randrange(5, 60))},
        }
        messages.append(message)
        length += len(orjson.dumps(message)) + 1
    value = orjson.dumps({"schema": 1, "kind": "unknown", "payload": {"history": [{"threads": messages}]}})
    return OutgoingRecord("", f"106540352242922:{rng.randrange(10**9)}".encode(), value)


async def create_topic(bootstrap: str, partitions: int, prefix: str) -> str:
    """A new topic configured like the production events topic (deploy/k8s: max.message.bytes 4 MiB; the local
    stack's broker default is 1 MB)."""
    topic = f"bench.{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        configs = {"max.message.bytes": str(MAX_RECORD_BYTES)}
        await admin.create_topics([NewTopic(topic, partitions, 1, topic_configs=configs)])
    finally:
        await admin.close()
    return topic


def on_topic(records: Sequence[OutgoingRecord], topic: str) -> list[OutgoingRecord]:
    return [OutgoingRecord(topic, r.key, r.value, r.headers) for r in records]


# --- measurements


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def sequential_latency(producer: Producer, records: Sequence[OutgoingRecord]) -> dict[str, float]:
    """Produce each record alone, one after the other; the latency and CPU of each call."""
    latencies: list[float] = []
    cpu = time.process_time()
    started = time.perf_counter()
    for record in records:
        t = time.perf_counter()
        await producer.produce((record,), deadline_s=10)
        latencies.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu
    return {
        "p50_ms": round(percentile(latencies, 0.50) * 1e3, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1e3, 3),
        "max_ms": round(max(latencies) * 1e3, 3),
        "mean_ms": round(statistics.fmean(latencies) * 1e3, 3),
        "cpu_us_per_produce": round(cpu / len(records) * 1e6, 1),
        "calls_per_s": round(len(records) / wall),
    }


async def concurrent(producer: Producer, records: Sequence[OutgoingRecord], callers: int) -> float:
    """``callers`` tasks producing single records at once (ingest under load); returns the wall time."""
    queue = iter(records)

    async def caller() -> None:
        for record in queue:
            await producer.produce((record,), deadline_s=30)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(callers)))
    return time.perf_counter() - started


def broker_log_dir() -> Path | None:
    """The local stack's Kafka log directory (deploy/local/stack.sh writes it into server.properties)."""
    properties = REPO_ROOT / ".stack" / "kafka" / "server.properties"
    if not properties.exists():
        return None
    for line in properties.read_text().splitlines():
        if line.startswith("log.dirs="):
            return Path(line.split("=", 1)[1].split(",")[0])
    return None


def log_bytes(topic: str, partitions: int) -> int | None:
    """Bytes of the topic's segment files: the record batches as the broker stores them (as produced)."""
    directory = broker_log_dir()
    if directory is None:
        return None
    total = 0
    for partition in range(partitions):
        folder = directory / f"{topic}-{partition}"
        if not folder.exists():
            return None
        total += sum(f.stat().st_size for f in folder.glob("*.log"))
    return total


async def consume_cpu(bootstrap: str, topic: str, partitions: int, expected: int) -> float:
    """CPU µs per record for an aiokafka consumer to fetch and decode the topic (decompression included)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        cpu = time.process_time()
        for _ in range(600):
            batch = await consumer.getmany(timeout_ms=200, max_records=10_000)
            seen += sum(len(records) for records in batch.values())
            if seen >= expected:
                break
        cpu = time.process_time() - cpu
    finally:
        await consumer.stop()
    if seen < expected:
        raise RuntimeError(f"{topic}: read {seen} of {expected} records")
    return cpu / seen * 1e6


async def measure_codec(
    bootstrap: str, codec: str, records: Sequence[OutgoingRecord], mode: str, callers: int = 64
) -> dict[str, Any]:
    """Produce ``records`` (sequentially or with ``callers`` at once) with ``codec``; CPU and bytes per record."""
    partitions = 3
    topic = await create_topic(bootstrap, partitions=partitions, prefix=f"bench-{codec}")
    warm = await create_topic(bootstrap, partitions=1, prefix="bench-warm")
    producer = MeasuredProducer(KafkaSettings(bootstrap_servers=bootstrap), codec)
    await producer.start()
    try:
        await producer.wait_connected(20)
        await producer.produce(on_topic(records[:1], warm), deadline_s=10)  # metadata, connections
        # The measured topic's metadata, before the window: one record of it, counted below.
        await producer.produce(on_topic(records[:1], topic), deadline_s=10)
        before = (await producer.fresh_stats())["tx_bytes"]
        measured = on_topic(records, topic)
        cpu = time.process_time()
        if mode == "sequential":
            for record in measured:
                await producer.produce((record,), deadline_s=30)
        else:
            await concurrent(producer, measured, callers)
        cpu = time.process_time() - cpu
        after = (await producer.fresh_stats())["tx_bytes"]
    finally:
        await producer.stop()
    count = len(records)
    value_bytes = sum(len(r.value) for r in records) / count
    stored = log_bytes(topic, partitions)
    return {
        "records": count,
        "value_bytes_per_record": round(value_bytes),
        "produce_cpu_us_per_record": round(cpu / count * 1e6, 1),
        "sent_bytes_per_record": round((after - before) / count),
        "log_bytes_per_record": round(stored / (count + 1)) if stored is not None else None,
        "log_ratio": round(stored / ((count + 1) * value_bytes), 3) if stored is not None else None,
        "consume_cpu_us_per_record": round(await consume_cpu(bootstrap, topic, partitions, count + 1), 1),
    }


async def latency_run(bootstrap: str, records: Sequence[OutgoingRecord]) -> dict[str, Any]:
    topic = await create_topic(bootstrap, partitions=3, prefix="bench-latency")
    settings = KafkaSettings(bootstrap_servers=bootstrap)
    contenders: list[tuple[str, Callable[[], Producer]]] = [
        ("aiokafka_none", lambda: AiokafkaAckedProducer(settings)),
        ("librdkafka_none", lambda: MeasuredProducer(settings, "none")),
        ("librdkafka", lambda: AckedProducer(settings)),  # the project's configuration (its compression)
    ]
    figures: dict[str, Any] = {}
    for name, make in contenders:
        producer = make()
        await producer.start()
        try:
            await producer.wait_connected(20)
            measured = on_topic(records, topic)
            for record in measured[:200]:  # warm-up: connections, metadata, code paths
                await producer.produce((record,), deadline_s=10)
            figures[name] = await sequential_latency(producer, measured)
            cpu = time.process_time()
            wall = await concurrent(producer, measured, 64)
            cpu = time.process_time() - cpu
            figures[name]["cpu_us_per_record_64_callers"] = round(cpu / len(measured) * 1e6, 1)
            figures[name]["records_per_s_64_callers"] = round(len(measured) / wall)
        finally:
            await producer.stop()
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    env = demo_env()
    bootstrap = f"127.0.0.1:{env['WA_KAFKA_PORT']}"
    rng = random.Random(args.seed)
    words = Words(rng)
    small = envelopes(args.records, rng, words)
    large = [large_record(rng, words) for _ in range(args.large)]
    figures: dict[str, Any] = {
        "records": args.records,
        "small_value_bytes": [min(len(r.value) for r in small), max(len(r.value) for r in small)],
        "large_value_bytes": round(statistics.fmean(len(r.value) for r in large)),
        "latency": [],
        "compression": [],
    }
    for _ in range(args.runs):
        figures["latency"].append(await latency_run(bootstrap, small))
        codecs: dict[str, Any] = {}
        for codec in CODECS:
            codecs[codec] = {
                "small_sequential": await measure_codec(bootstrap, codec, small, "sequential"),
                "small_64_callers": await measure_codec(bootstrap, codec, small, "concurrent"),
                "large_sequential": await measure_codec(bootstrap, codec, large, "sequential"),
            }
        figures["compression"].append(codecs)
    figures["summary"] = summary(figures)
    return figures


def summary(figures: dict[str, Any]) -> dict[str, Any]:
    """min-max over the runs of each figure."""

    def span(values: list[float]) -> str:
        low, high = min(values), max(values)
        return f"{low}" if low == high else f"{low}-{high}"

    out: dict[str, Any] = {"latency": {}, "compression": {}}
    for name in figures["latency"][0]:
        out["latency"][name] = {
            key: span([run[name][key] for run in figures["latency"]]) for key in figures["latency"][0][name]
        }
    for codec in CODECS:
        for workload in figures["compression"][0][codec]:
            keys = [k for k, v in figures["compression"][0][codec][workload].items() if v is not None]
            out["compression"][f"{codec}/{workload}"] = {
                key: span([run[codec][workload][key] for run in figures["compression"]]) for key in keys
            }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000, help="sequential produce() calls per contender")
    parser.add_argument("--large", type=int, default=40, help="~1 MB records per codec")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--save", action="store_true", help="also write bench/results/producer.json")
    args = parser.parse_args()
    figures = asyncio.run(run(args))
    if args.save:
        write_result("producer", figures)
    else:
        print(json.dumps({"benchmark": "producer", "machine": machine(), "figures": figures}, indent=2))


if __name__ == "__main__":
    main()
