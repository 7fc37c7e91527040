"""Archiver throughput: a topic pre-filled with N realistic webhook POSTs as ingest journals them (one record per
POST, one event each, several people and business numbers), one
archiver process against the real stack, timed until every offset is committed; and, in the same run, a raw
aiokafka consume loop over the same topic as the ratio's denominator.

Prints events/s end to end, objects written, PUTs/s, the archiver's RSS before the drain (its floor) and its peak
(VmHWM), CPU per event (its own user + system time, steadier than wall-clock rates on a shared machine) and the ratio
to the raw loop. The peak varies from run to run on a shared machine (±50 MB while it climbed through the drain, a
slower drain peaking higher; docs/OPERATIONS.md, "Archiver memory sizing"): compare several runs, interleaved.
Targets (issue #4): >= 20,000 events/s, <= 200 MB RSS.

    python -m bench.archiver [--events 200000] [--partitions 6]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import (
    CpuMeter,
    demo_env,
    ensure_stack,
    peak_rss_mb,
    rss_mb,
    start_module,
    wait_http,
    write_result,
)
from devtools import pipeline
from devtools.broker import committed_offsets, create_topic
from devtools.serving import free_port
from services.core.events import decode_webhook, webhook_scope
from services.core.journal import webhook_record
from services.core.kafka import AckedProducer
from services.core.settings import KafkaSettings


def realistic_bodies(count: int, people: int = 2000, numbers: int = 4) -> list[bytes]:
    """``count`` webhook POSTs of one event each (a message, or a status every fourth), as Meta sends them."""
    persons = [pipeline.Person.fresh() for _ in range(numbers)]
    business = [(p.waba_id, p.phone_number_id) for p in persons]
    bodies = []
    for i in range(count):
        waba, number = business[i % numbers]
        person = pipeline.Person(waba, number, f"1650{i % people:07d}")
        wamid = f"wamid.BENCH{uuid.uuid4().hex}"
        if i % 4 == 3:
            bodies.append(pipeline.status(person, wamid, "delivered", 1_760_000_000 + i))
        else:
            bodies.append(
                pipeline.text_message(
                    person, wamid, f"Hello, about my order #{i}: when does it ship?", 1_760_000_000 + i
                )
            )
    return bodies


async def prefill(bootstrap: str, topic: str, bodies: list[bytes]) -> float:
    """The events topic as ingest leaves it: one journal record per POST, keyed by its business number."""
    producer = AckedProducer(KafkaSettings(bootstrap_servers=bootstrap, events_topic=topic), linger_ms=20)
    await producer.start()
    await producer.wait_connected(30)
    started = time.monotonic()
    try:
        for start in range(0, len(bodies), 10_000):
            records = [
                webhook_record(
                    topic,
                    webhook_scope(decode_webhook(body))[0],
                    body,
                    signature="sha256=bench",
                    received_at="2026-12-01T00:00:00.000Z",
                )
                for body in bodies[start : start + 10_000]
            ]
            await producer.produce(records, deadline_s=120)
    finally:
        await producer.stop()
    return time.monotonic() - started


async def raw_consume(bootstrap: str, topic: str, partitions: int, total: int) -> float:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        started = time.monotonic()
        while seen < total:
            batch = await consumer.getmany(timeout_ms=1000, max_records=5000)
            seen += sum(len(records) for records in batch.values())
        return time.monotonic() - started
    finally:
        await consumer.stop()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    return sum((await committed_offsets(bootstrap, group, topic, partitions)).values())


async def run(events_count: int, partitions: int, *, module: str = "services.archiver") -> dict[str, Any]:
    env = demo_env()
    bootstrap = f"127.0.0.1:{env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=partitions, prefix="bench-archiver")
    dlq = await create_topic(bootstrap, partitions=1, prefix="bench-dlq")
    bodies = realistic_bodies(events_count)
    events = pipeline.events_of(bodies)
    assert len(events) == len(bodies), "one event per POST: committed offsets count events"
    prefill_s = await prefill(bootstrap, topic, bodies)
    raw_s = await raw_consume(bootstrap, topic, partitions, len(events))

    group, prefix, port = f"bench-{uuid.uuid4().hex[:8]}", f"bench/{uuid.uuid4().hex[:8]}", free_port()
    process = start_module(
        module,
        {
            **env,
            "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
            "WA_ARCHIVER_KAFKA__DLQ_TOPIC": dlq,
            "WA_ARCHIVER_GROUP_ID": group,
            "WA_ARCHIVER_S3__PREFIX": prefix,
            "WA_ARCHIVER_PORT": str(port),
            "WA_ARCHIVER_LOG_LEVEL": "WARNING",
        },
        Path("/tmp") / f"bench-archiver-{group}.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        # The floor under the drain: imports, settings and clients, nothing consumed yet.
        before_drain = rss_mb(process.pid)
        meter = CpuMeter({"archiver": process.pid, "benchmark": os.getpid()})
        started = time.monotonic()
        deadline = started + 900
        done = 0
        while time.monotonic() < deadline:
            done = await committed(bootstrap, group, topic, partitions)
            if done >= len(events):
                break
            await asyncio.sleep(0.25)
        elapsed = time.monotonic() - started
        meter.stop()
        peak = peak_rss_mb(process.pid)
    finally:
        process.terminate()
        process.wait(timeout=120)
    cpu = meter.per_unit(len(events), load_generator="benchmark")
    pool = await asyncpg.connect(env["WA_ARCHIVER_PG__DSN"])
    try:
        objects = await pool.fetchval("SELECT count(*) FROM archive_objects WHERE object_key LIKE $1", prefix + "/%")
        indexed = await pool.fetchval("SELECT count(*) FROM archived_events WHERE object_key LIKE $1", prefix + "/%")
    finally:
        await pool.close()
    return {
        "events": len(events),
        "partitions": partitions,
        "committed": done,
        "indexed": indexed,
        "prefill_events_per_s": round(len(events) / prefill_s),
        "archiver_seconds": round(elapsed, 2),
        "archiver_events_per_s": round(len(events) / elapsed),
        "objects_written": objects,
        "puts_per_s": round(objects / elapsed, 1),
        "archiver_peak_rss_mb": round(peak, 1),
        "archiver_rss_before_drain_mb": round(before_drain, 1),
        # CPU per event of the archiver (all its threads), of each server of the stack and of the whole machine:
        # steadier than wall-clock rates on a shared machine, and the machine's total bounds the rate.
        "cpu": cpu,
        "archiver_cpu_us_per_event": cpu["cpu_us_per_unit"]["archiver"],
        "archiver_cpu_utilisation": round(cpu["cpu_us_per_unit"]["archiver"] * len(events) / 1e6 / elapsed, 2),
        "raw_consume_events_per_s": round(len(events) / raw_s),
        "ratio_to_raw_consume": round(raw_s / elapsed, 3),
        "targets": {"events_per_s": 20000, "peak_rss_mb": 200},
    }


async def alternate(events_count: int, rounds: int, baseline_module: str) -> dict[str, Any]:
    """The archiver's CPU per event with a feature (``services.archiver``) and without it (``baseline_module``, an
    archiver built without that feature), the runs alternating (with, without, with, without …) so that a drift of
    the machine hits both: ``with`` and ``without`` (µs per event, one per round) and the overhead of the medians in
    per cent."""
    with_feature: list[float] = []
    without: list[float] = []
    for _ in range(rounds):
        with_feature.append((await run(events_count, 6))["archiver_cpu_us_per_event"])
        without.append((await run(events_count, 6, module=baseline_module))["archiver_cpu_us_per_event"])
    base, featured = statistics.median(without), statistics.median(with_feature)
    return {"with": with_feature, "without": without, "overhead_percent": round((featured - base) / base * 100, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    ensure_stack()
    write_result("archiver", asyncio.run(run(args.events, args.partitions)))


if __name__ == "__main__":
    main()
