"""The archive bucket against the real S3 server: permanent deletion on a versioned (Object Lock) bucket."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from mypy_boto3_s3 import S3Client

from devtools import pipeline
from services.core.bucket import ArchiveBucket

pytestmark = pytest.mark.integration


def versions_of(s3: S3Client, bucket: str, prefix: str) -> dict[str, int]:
    """Versions plus delete markers per key under the prefix (every page)."""
    found: dict[str, int] = {}
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for entry in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]:
            found[entry["Key"]] = found.get(entry["Key"], 0) + 1
    return found


async def test_delete_permanently_removes_every_version_and_nothing_else(
    demo_env: dict[str, str], s3_client: S3Client
) -> None:
    prefix = f"test/bucket-{uuid.uuid4().hex[:8]}"
    bucket = ArchiveBucket(pipeline.s3_settings(demo_env, prefix, "RETENTION"))
    name = bucket.name
    folder_a, folder_b = f"{prefix}/t/00000", f"{prefix}/t/00001"
    # More than one listing page (1,000) in folder a; kept keys interleaved with the deleted ones.
    keys_a = [f"{folder_a}/{n:020d}.wacx" for n in range(1_100)]
    keys_b = [f"{folder_b}/{n:020d}.wacx" for n in range(3)]
    for key in keys_a + keys_b:
        s3_client.put_object(Bucket=name, Key=key, Body=b"v1")
    for key in keys_a[:5] + keys_b[:1]:  # replays overwrite: a second version
        s3_client.put_object(Bucket=name, Key=key, Body=b"v2")
    s3_client.delete_object(Bucket=name, Key=keys_b[1])  # already deleted the old way: a marker over a version
    doomed = [k for i, k in enumerate(keys_a) if i % 3 != 1] + keys_b + [f"{folder_b}/never-written.wacx"]
    kept = [k for i, k in enumerate(keys_a) if i % 3 == 1]

    gone, refused = await bucket.delete_permanently(doomed)

    assert refused == {}
    assert set(gone) == set(doomed)
    left = versions_of(s3_client, name, prefix + "/")
    assert set(left) == set(kept)  # no version and no delete marker of a deleted key stays
    assert left == {k: 2 if k in keys_a[:5] else 1 for k in kept}  # their versions untouched
    assert await bucket.delete_permanently(doomed) == (sorted(set(doomed)), {})  # a repeat is a no-op


async def test_a_locked_version_is_refused_and_kept(demo_env: dict[str, str], s3_client: S3Client) -> None:
    prefix = f"test/bucket-{uuid.uuid4().hex[:8]}"
    bucket = ArchiveBucket(pipeline.s3_settings(demo_env, prefix, "RETENTION"))
    locked, free = f"{prefix}/t/00000/locked.wacx", f"{prefix}/t/00000/free.wacx"
    s3_client.put_object(
        Bucket=bucket.name,
        Key=locked,
        Body=b"x",
        ObjectLockMode="GOVERNANCE",
        ObjectLockRetainUntilDate=datetime.now(UTC) + timedelta(days=1),
    )
    s3_client.put_object(Bucket=bucket.name, Key=free, Body=b"y")

    gone, refused = await bucket.delete_permanently([locked, free])

    assert gone == [free]
    assert set(refused) == {locked}
    assert set(versions_of(s3_client, bucket.name, prefix + "/")) == {locked}
