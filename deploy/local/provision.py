"""Provision the local stack once its processes listen: Kafka topics, S3 buckets, the service database login.

Called by ``deploy/local/stack.sh up`` with the parts that were started. Each step retries until a deadline
(WA_READY_TIMEOUT, default 90 s) and then fails with a message naming the part and what did not answer.
Idempotent: existing topics and buckets are left as they are.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable

import asyncpg
import boto3
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import TopicAlreadyExistsError
from botocore.client import Config
from botocore.exceptions import ClientError

DEADLINE_S = float(os.environ.get("WA_READY_TIMEOUT", "90"))


def env(name: str) -> str:
    try:
        return os.environ[name]
    except KeyError:
        sys.exit(f"[provision] {name} is not set: source deploy/local/demo.env")


async def retry(part: str, step: Callable[[], Awaitable[None]]) -> None:
    deadline = time.monotonic() + DEADLINE_S
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            await step()
            return
        except Exception as exc:  # any failure before the deadline means "not ready yet"
            last = exc
            await asyncio.sleep(0.5)
    sys.exit(f"[provision] {part} not ready after {DEADLINE_S:.0f}s: {type(last).__name__}: {last}")


# One journal record is a whole webhook POST, up to ingest's 4 MiB body cap, plus the record batch around it:
# services.core.kafka.MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES (a unit test keeps them equal). Kafka's default
# stops at about 1 MB.
LARGE_RECORDS = {"max.message.bytes": str(4 * 1024 * 1024 + 64 * 1024)}


async def provision_kafka() -> None:
    bootstrap = f"127.0.0.1:{env('WA_KAFKA_PORT')}"
    partitions = int(env("WA_TOPIC_PARTITIONS"))
    retention_ms = env("WA_TOPIC_RETENTION_MS")
    topics = [
        # The events topic holds plaintext: its retention bounds how long erased data lingers (docs/GDPR.md).
        NewTopic(
            env("WA_EVENTS_TOPIC"),
            num_partitions=partitions,
            replication_factor=1,
            topic_configs={"retention.ms": retention_ms, "min.insync.replicas": "1", **LARGE_RECORDS},
        ),
        NewTopic(
            env("WA_DLQ_TOPIC"),
            num_partitions=1,
            replication_factor=1,
            topic_configs={"retention.ms": retention_ms, **LARGE_RECORDS},
        ),
    ]
    # The decisions about held sends (services/gateway/decisions.py): an approved one holds the send body, so the
    # journal's retention; keyed by business number, so as many partitions as the journal.
    topics.append(
        NewTopic(
            os.environ.get("WA_GATEWAY_DECISIONS_TOPIC", "wa.gateway.decisions.v1"),
            num_partitions=partitions,
            replication_factor=1,
            topic_configs={"retention.ms": retention_ms, "min.insync.replicas": "1", **LARGE_RECORDS},
        )
    )
    # A parking topic per relay destination (services/relay): the webhooks a destination could not take. They hold
    # plaintext too, so they keep the events topic's retention.
    topics += [
        NewTopic(
            destination.get("parking_topic") or f"wa-relay-{destination['name']}-parked",
            num_partitions=1,
            replication_factor=1,
            topic_configs={"retention.ms": retention_ms, **LARGE_RECORDS},
        )
        for destination in json.loads(os.environ.get("WA_RELAY_DESTINATIONS", "[]"))
    ]

    async def step() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        await admin.start()
        try:
            existing = set(await admin.list_topics())
            missing = [t for t in topics if t.name not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    await admin.create_topics(missing)
            # Topics made by an earlier version get today's settings (the whole set: alter_configs replaces).
            await admin.alter_configs(
                [ConfigResource(ConfigResourceType.TOPIC, t.name, configs=t.topic_configs) for t in topics]
            )
            # A topic is usable once its partitions have a leader.
            described = await admin.describe_topics([t.name for t in topics])
            for topic in described:
                if topic.get("error_code", 0) != 0 or not topic.get("partitions"):
                    raise RuntimeError(f"topic {topic.get('topic')} has no leader yet")
        finally:
            await admin.close()

    await retry("kafka", step)


async def provision_s3() -> None:
    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{env('WA_S3_PORT')}",
        aws_access_key_id=env("WA_S3_ACCESS_KEY"),
        aws_secret_access_key=env("WA_S3_SECRET_KEY"),
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )

    def ensure(bucket: str, *, object_lock: bool) -> None:
        try:
            client.head_bucket(Bucket=bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket", "NotFound"):
                raise
            # Object Lock can only be switched on at creation; it also turns versioning on.
            client.create_bucket(Bucket=bucket, ObjectLockEnabledForBucket=object_lock)
        if object_lock:
            config = client.get_object_lock_configuration(Bucket=bucket)
            if config["ObjectLockConfiguration"].get("ObjectLockEnabled") != "Enabled":
                raise RuntimeError(f"bucket {bucket} exists without Object Lock")

    async def step() -> None:
        await asyncio.to_thread(ensure, env("WA_S3_ARCHIVE_BUCKET"), object_lock=True)
        # Temporary and working files never live in a locked bucket (DESIGN.md §4).
        await asyncio.to_thread(ensure, env("WA_S3_WORK_BUCKET"), object_lock=False)
        # PostgreSQL's base backups and WAL (services/backups): no Object Lock, old backups are deleted when they
        # leave the recovery window.
        await asyncio.to_thread(ensure, env("WA_PGBACKUP_BUCKET"), object_lock=False)

    await retry("s3", step)


async def provision_postgres() -> None:
    async def step() -> None:
        conn = await asyncpg.connect(
            host="127.0.0.1",
            port=int(env("WA_PG_PORT")),
            user=env("WA_PG_USER"),
            password=env("WA_PG_PASSWORD"),
            database=env("WA_PG_DATABASE"),
            timeout=5,
        )
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    await retry("postgres", step)


async def main(parts: list[str]) -> None:
    steps = {"kafka": provision_kafka, "s3": provision_s3, "postgres": provision_postgres}
    await asyncio.gather(*(steps[p]() for p in parts if p in steps))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:] or ["kafka", "s3", "postgres"]))
