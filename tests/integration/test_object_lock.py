"""Object Lock on the write path: an object the archiver writes under a retention mode cannot be deleted or
replaced before its retain-until date (the store refuses), and retention reports it as locked, keeping its rows.

GOVERNANCE mode, one day: the test bucket of the local stack is versioned with Object Lock, as production is.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from botocore.exceptions import ClientError
from mypy_boto3_s3 import S3Client

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from services.actions.access import open_access
from services.core.index import binary_key
from services.governance.retention_run import delete_chunk

pytestmark = pytest.mark.integration


async def test_a_locked_object_cannot_be_deleted_or_replaced_and_retention_reports_it(
    kafka_bootstrap: str, demo_env: dict[str, str], pg_pool: asyncpg.Pool, s3_client: S3Client
) -> None:
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="lock")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="lock-dlq")
    prefix = f"test/lock-{uuid.uuid4().hex[:8]}"
    settings = pipeline.archiver_settings(demo_env, topic, dlq, prefix)
    settings.s3.object_lock_mode = "GOVERNANCE"
    settings.s3.object_lock_days = 1
    person = Person.fresh()
    events = pipeline.events_of([pipeline.text_message(person, "wamid.LOCK", "keep me", 1_700_000_000)])
    await pipeline.produce(kafka_bootstrap, topic, events)
    async with pipeline.running_archiver(settings):
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
    key: str = await pg_pool.fetchval(
        "SELECT object_key FROM archived_events WHERE event_id = $1", binary_key(events[0].event_id)
    )
    bucket = settings.s3.bucket

    retention = s3_client.get_object_retention(Bucket=bucket, Key=key)["Retention"]
    assert retention.get("Mode") == "GOVERNANCE"
    until = retention.get("RetainUntilDate")
    assert until is not None
    assert timedelta(hours=23) < until - datetime.now(UTC) <= timedelta(days=1, minutes=5)
    indexed_until = await pg_pool.fetchval("SELECT retain_until FROM archive_objects WHERE object_key = $1", key)
    assert abs((indexed_until - until).total_seconds()) < 2, "the index knows the object's lock date"

    [version] = [v for v in s3_client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"] if v["Key"] == key]
    original = s3_client.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
    # Deleting the locked version is refused.
    with pytest.raises(ClientError) as refused:
        s3_client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])
    assert refused.value.response["Error"]["Code"] == "AccessDenied"
    # Writing the key again cannot replace it: the locked version stays, byte for byte.
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"tampered")
    kept = s3_client.get_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])["Body"].read()
    assert hashlib.sha256(kept).digest() == hashlib.sha256(original).digest()

    # Retention deleting the object (the chunk step of a run, on this object alone: a whole run at a far future
    # date would expire every other test's objects too): the store refuses, the run counts it, the rows stay.
    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        outcome = await delete_chunk(access.pool, access.bucket, [key])
    finally:
        await access.close()
    assert (outcome.objects_deleted, outcome.objects_locked) == (0, 1)
    assert await pg_pool.fetchval("SELECT count(*) FROM archived_events WHERE object_key = $1", key) == 1
    versions = s3_client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", [])
    assert version["VersionId"] in {v["VersionId"] for v in versions if v["Key"] == key}
