"""The real servers of the local stack do what the product relies on."""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from botocore.exceptions import ClientError
from mypy_boto3_s3 import S3Client

pytestmark = pytest.mark.integration


async def test_kafka_idempotent_producer_round_trip(kafka_bootstrap: str) -> None:
    topic = f"test.stack.{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, f"v{i}".encode(), key=b"k") for i in range(20)]
    finally:
        await producer.stop()
    assert [m.offset for m in sent] == list(range(20))

    consumer = AIOKafkaConsumer(
        bootstrap_servers=kafka_bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        batch = await consumer.getmany(tp, timeout_ms=10_000, max_records=100)
        values = [r.value for r in batch.get(tp, [])]
    finally:
        await consumer.stop()
    assert values == [f"v{i}".encode() for i in range(20)]


def test_s3_versioning_and_object_lock(s3_client: S3Client, demo_env: dict[str, str]) -> None:
    bucket = demo_env["WA_S3_ARCHIVE_BUCKET"]
    assert s3_client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    key = f"test/stack/{uuid.uuid4().hex}"

    first = s3_client.put_object(Bucket=bucket, Key=key, Body=b"one")
    second = s3_client.put_object(Bucket=bucket, Key=key, Body=b"two")
    assert first["VersionId"] != second["VersionId"]
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"two"
    old = s3_client.get_object(Bucket=bucket, Key=key, VersionId=first["VersionId"])
    assert old["Body"].read() == b"one"
    for version in (first["VersionId"], second["VersionId"]):
        s3_client.delete_object(Bucket=bucket, Key=key, VersionId=version)
    with pytest.raises(ClientError):
        s3_client.head_object(Bucket=bucket, Key=key)

    locked_key = f"test/stack/locked-{uuid.uuid4().hex}"
    until = datetime.now(UTC) + timedelta(seconds=30)
    locked = s3_client.put_object(
        Bucket=bucket,
        Key=locked_key,
        Body=b"worm",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=until,
    )
    with pytest.raises(ClientError) as refused:
        s3_client.delete_object(Bucket=bucket, Key=locked_key, VersionId=locked["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    assert s3_client.get_object(Bucket=bucket, Key=locked_key)["Body"].read() == b"worm"


def test_work_bucket_is_not_locked(s3_client: S3Client, demo_env: dict[str, str]) -> None:
    with pytest.raises(ClientError):
        s3_client.get_object_lock_configuration(Bucket=demo_env["WA_S3_WORK_BUCKET"])


async def test_postgres_round_trip(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as conn:
        await conn.execute("CREATE TEMP TABLE t (id int PRIMARY KEY, body bytea)")
        await conn.executemany("INSERT INTO t VALUES ($1, $2)", [(i, bytes([i])) for i in range(10)])
        rows = await conn.fetch("SELECT id, body FROM t ORDER BY id")
        version = await conn.fetchval("SHOW server_version_num")
    assert [(r["id"], r["body"]) for r in rows] == [(i, bytes([i])) for i in range(10)]
    assert int(version) >= 150000


async def test_prometheus_ready_and_scraping(prometheus_url: str) -> None:
    async with httpx.AsyncClient(base_url=prometheus_url, timeout=5) as client:
        assert (await client.get("/-/ready")).status_code == 200
        # Prometheus scrapes itself every 2 s: a sample of up{job="prometheus"} proves a live scrape.
        deadline = time.monotonic() + 20
        value = None
        while time.monotonic() < deadline:
            body = (await client.get("/api/v1/query", params={"query": 'up{job="prometheus"}'})).json()
            result = body["data"]["result"]
            if result:
                value = result[0]["value"][1]
                break
            await asyncio.sleep(0.5)
        rules = (await client.get("/api/v1/rules")).json()["data"]["groups"]
    assert value == "1"
    assert any(group["rules"] for group in rules), "deploy/prometheus/rules.yml was not loaded"


@pytest.mark.exclusive  # times a second `stack.sh up`: a busy machine would make it slow
def test_stack_up_twice_is_idempotent(repo_root: Path) -> None:
    started = time.monotonic()
    done = subprocess.run(
        [str(repo_root / "deploy" / "local" / "stack.sh"), "up"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    for part in ("postgres", "s3", "kafka", "prometheus"):
        assert f"{part} already running" in done.stderr
    assert elapsed < 15, f"a second `stack.sh up` took {elapsed:.1f}s"
