"""Retention and GDPR at scale: with >= 1,000,000 archived events, measure
- erasure of one subject: time until the key is destroyed (target < 1 s), and until everything is deleted;
- retention deletion throughput over expired objects (target >= 5,000 objects/s), next to what the object store
  alone allows for the same deletes (listing and removing every version, no index work);
- retrieval of a 10,000-message conversation, decrypted and assembled (target <= 2 s).

Half the events are ten years old (expired under the default 7-year class), archived in objects of
``--old-object-records`` records (2,000, the archiver's default batch: the cost of expiring a record next to the
cost of archiving it is the figure that matters; 100 gives thousands of objects, to measure the deletion rate);
the other half is recent and includes one 10,000-message conversation. Everything goes through the real
pipeline: Kafka, one archiver process, S3, PostgreSQL.

    python -m bench.retention [--events 1000000] [--old-object-records 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import CpuMeter, demo_env, ensure_stack, start_module, wait_http, write_result
from devtools import pipeline
from devtools.broker import create_topic
from devtools.serving import free_port
from services.actions.access import open_access
from services.core.bucket import ArchiveBucket
from services.core.events import Event
from services.core.kafka import AckedProducer, OutgoingRecord
from services.core.settings import KafkaSettings
from services.governance.erasure import erase_subject
from services.governance.retention_run import CONCURRENT_CHUNKS, DELETE_BATCH, retention_run
from services.review.conversation import load_conversation

TEN_YEARS_AGO = int(time.time()) - 10 * 365 * 86400


def generate(count: int, start_ts: int, people: list[pipeline.Person], focus: pipeline.Person | None) -> list[Event]:
    bodies = []
    for i in range(count):
        person = focus if focus is not None and i % 50 == 0 else people[i % len(people)]
        wamid = f"wamid.RB{uuid.uuid4().hex}"
        bodies.append(pipeline.text_message(person, wamid, f"message {i} about order {i % 997}", start_ts + i))
    return pipeline.events_of(bodies)


async def produce_all(bootstrap: str, topic: str, events: list[Event]) -> None:
    producer = AckedProducer(KafkaSettings(bootstrap_servers=bootstrap, events_topic=topic), linger_ms=20)
    await producer.start()
    await producer.wait_connected(30)
    try:
        for start in range(0, len(events), 20_000):
            chunk = events[start : start + 20_000]
            await producer.produce([OutgoingRecord(topic, e.key(), e.to_json()) for e in chunk], deadline_s=300)
    finally:
        await producer.stop()


async def archive(env: dict[str, str], topic: str, dlq: str, prefix: str, total: int, batch: int) -> float:
    bootstrap = f"127.0.0.1:{env['WA_KAFKA_PORT']}"
    group, port = f"bench-ret-{uuid.uuid4().hex[:8]}", free_port()
    process = start_module(
        "services.archiver",
        {
            **env,
            "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
            "WA_ARCHIVER_KAFKA__DLQ_TOPIC": dlq,
            "WA_ARCHIVER_GROUP_ID": group,
            "WA_ARCHIVER_S3__PREFIX": prefix,
            "WA_ARCHIVER_PORT": str(port),
            "WA_ARCHIVER_LOG_LEVEL": "WARNING",
            "WA_ARCHIVER_FLUSH__MAX_RECORDS": str(batch),
            "WA_ARCHIVER_MAX_BUFFERED_RECORDS": str(max(batch, 2000)),
        },
        Path("/tmp") / f"{group}.log",
    )
    started = time.monotonic()
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await consumer.start()
        try:
            while time.monotonic() - started < 3600:
                done = sum([(await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(6)])
                if done >= total:
                    break
                await asyncio.sleep(1)
        finally:
            await consumer.stop()
    finally:
        process.terminate()
        process.wait(timeout=120)
    return time.monotonic() - started


async def store_delete_ceiling(bucket: ArchiveBucket, prefix: str, count: int = 4000) -> int:
    """What the object store alone allows: objects/s for listing and deleting every version of small objects
    with no index work, chunked and overlapped like a retention run. The retention figure is read against it."""
    keys = [f"{prefix}/ceiling/{i % 6}/{i:020d}.waarc" for i in range(count)]
    limit = asyncio.Semaphore(16)

    async def put(key: str) -> None:
        async with limit:
            await bucket.put(key, b"x" * 2048)

    await asyncio.gather(*(put(key) for key in keys))
    chunks = [keys[i : i + DELETE_BATCH] for i in range(0, len(keys), DELETE_BATCH)]
    slots = asyncio.Semaphore(CONCURRENT_CHUNKS)

    async def delete(chunk: list[str]) -> None:
        async with slots:
            await bucket.delete_permanently(chunk)

    started = time.monotonic()
    await asyncio.gather(*(delete(chunk) for chunk in chunks))
    return round(count / (time.monotonic() - started))


async def run(
    total: int, old_object_records: int = 2000, people_count: int = 5000, ceiling_objects: int = 4000
) -> dict[str, Any]:
    env = demo_env()
    bootstrap = f"127.0.0.1:{env['WA_KAFKA_PORT']}"
    waba, number = pipeline.digits(15), pipeline.digits(15)
    people = [pipeline.Person(waba, number, f"1777{i:07d}") for i in range(people_count)]
    focus = pipeline.Person(waba, number, "17779999999")
    victim = people[123 % people_count]
    prefix = f"bench/ret-{uuid.uuid4().hex[:8]}"
    figures: dict[str, Any] = {"events": total, "old_object_records": old_object_records}

    old_topic = await create_topic(bootstrap, partitions=6, prefix="bench-ret-old")
    new_topic = await create_topic(bootstrap, partitions=6, prefix="bench-ret-new")
    dlq = await create_topic(bootstrap, partitions=1, prefix="bench-ret-dlq")
    old = generate(total // 2, TEN_YEARS_AGO, people, None)
    await produce_all(bootstrap, old_topic, old)
    del old
    recent = generate(total - total // 2, int(time.time()) - 86400, people, focus)
    await produce_all(bootstrap, new_topic, recent)
    del recent
    old_seconds = await archive(env, old_topic, dlq, prefix, total // 2, old_object_records)
    figures["archive_old_seconds"] = round(old_seconds, 1)
    figures["archive_recent_seconds"] = round(await archive(env, new_topic, dlq, prefix, total - total // 2, 2000), 1)

    access = await open_access(pipeline.retention_settings(env, prefix))
    try:
        figures["indexed_events"] = await access.pool.fetchval(
            "SELECT count(*) FROM archived_events WHERE object_key LIKE $1", prefix + "/%"
        )
        started = time.monotonic()
        conversation = await load_conversation(
            access.pool,
            access.reader,
            access.pepper,
            contact=focus.wa_id,
            phone_number_id=focus.phone_number_id,
            actor="bench",
            reason="benchmark retrieval",
        )
        figures["retrieval_messages"] = len(conversation.messages)
        figures["retrieval_seconds"] = round(time.monotonic() - started, 3)

        started = time.monotonic()
        outcome = await erase_subject(
            access.pool,
            access.keyring,
            access.bucket,
            access.pepper,
            contact=victim.wa_id,
            phone_number_id=None,
            request_ref=f"bench-{uuid.uuid4().hex[:8]}",
            actor="bench",
        )
        figures["erasure_total_seconds"] = round(time.monotonic() - started, 3)
        figures["erasure_events_deleted"] = outcome.events_deleted
        figures["erasure_key_destroyed_seconds"] = round(outcome.seconds_to_key_destruction or 0, 3)
        figures["erasure_status"] = outcome.status
        meter = CpuMeter({"retention": os.getpid()})
        started = time.monotonic()
        report = await retention_run(access.pool, access.bucket, dry_run=False)
        elapsed = time.monotonic() - started
        meter.stop()
        # Where a deleted object's cost lies: the retention process, the object store, PostgreSQL.
        figures["retention_cpu"] = meter.per_unit(max(report.objects_deleted, 1))
        # Per expired record: what bench/run.py sets beside the archiver's CPU per archived record (target 0.10).
        figures["retention_cpu_per_event"] = meter.per_unit(max(report.events_deleted, 1))
        figures["retention_objects_deleted"] = report.objects_deleted
        figures["retention_events_deleted"] = report.events_deleted
        figures["retention_seconds"] = round(elapsed, 2)
        figures["retention_objects_per_s"] = round(report.objects_deleted / elapsed) if elapsed else None
        figures["store_delete_ceiling_objects_per_s"] = await store_delete_ceiling(
            access.bucket, prefix, ceiling_objects
        )
    finally:
        await access.close()
    figures["targets"] = {"erasure_key_destroyed_s": 1, "retention_objects_per_s": 5000, "retrieval_10k_s": 2}
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--old-object-records", type=int, default=2000, help="records per object of the old half")
    parser.add_argument("--people", type=int, default=5000, help="the people the messages are spread over")
    parser.add_argument(
        "--ceiling-objects", type=int, default=4000, help="small objects put and deleted for the store's ceiling"
    )
    args = parser.parse_args()
    ensure_stack()
    write_result("retention", asyncio.run(run(args.events, args.old_object_records, args.people, args.ceiling_objects)))


if __name__ == "__main__":
    main()
