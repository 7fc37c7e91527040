"""The archive bucket: plain S3 calls through boto3 (portable to AWS S3, SeaweedFS, MinIO, Ceph RGW).

boto3 is synchronous; every call runs in a worker thread so the event loop keeps consuming. Errors are split
into the two kinds the archiver acts on: :class:`StorageUnavailable` (network, 5xx, throttling — retry, do not
commit) and anything else, which is a bug or a misconfiguration and propagates.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, EndpointConnectionError

from services.core.settings import S3Settings

if TYPE_CHECKING:  # the stubs are a development dependency; the image does not have them
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
DELETE_OBJECTS_MAX = 1000  # keys (versions) one DeleteObjects call takes

TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "503",
        "500",
        "502",
        "504",
        "Throttling",
    }
)


class StorageUnavailable(Exception):
    """The object store did not take or give the object this time; retrying later may succeed."""


@dataclass(frozen=True, slots=True)
class StoredObject:
    key: str
    size: int
    last_modified: datetime


def make_s3_client(settings: S3Settings) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key.get_secret_value() if settings.secret_key else None,
        config=Config(
            s3={"addressing_style": "path"},
            max_pool_connections=settings.max_pool_connections,
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, EndpointConnectionError | ConnectionError):
        return True
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        return error.get("Code", "") in TRANSIENT_CODES or status >= 500
    return isinstance(exc, BotoCoreError)


class ArchiveBucket:
    def __init__(self, settings: S3Settings, client: S3Client | None = None) -> None:
        self.settings = settings
        self.name = settings.bucket
        self.client = client or make_s3_client(settings)

    def retain_until(self, now: datetime) -> datetime | None:
        """When Object Lock is configured: the retention date of an object written at ``now``."""
        if not self.settings.object_lock_mode:
            return None
        return now + timedelta(days=self.settings.object_lock_days)

    async def put(self, key: str, body: bytes, *, now: datetime | None = None) -> datetime | None:
        """Write (or overwrite — keys are deterministic) one object; returns its Object Lock retain-until date."""
        until = self.retain_until(now or datetime.now(UTC))

        def call() -> None:
            if until is not None and self.settings.object_lock_mode:
                self.client.put_object(
                    Bucket=self.name,
                    Key=key,
                    Body=body,
                    ObjectLockMode=self.settings.object_lock_mode,
                    ObjectLockRetainUntilDate=until,
                )
            else:
                self.client.put_object(Bucket=self.name, Key=key, Body=body)

        await self._run(call)
        return until

    async def get(self, key: str) -> bytes:
        def call() -> bytes:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

        return await self._run(call)

    async def delete_permanently(self, keys: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """Remove every version of each key, delete markers included, so no data stays behind as a noncurrent
        version (the bucket is versioned, as Object Lock requires). Returns (keys gone, {key: error code}); a
        version still under Object Lock is reported (``AccessDenied``), not raised. A key with no version left
        counts as gone, so a repeated call is a no-op."""
        wanted = sorted(set(keys))

        def call() -> tuple[list[str], dict[str, str]]:
            versions = self._versions_of(wanted)
            errors: dict[str, str] = {}
            for start in range(0, len(versions), DELETE_OBJECTS_MAX):
                batch = versions[start : start + DELETE_OBJECTS_MAX]
                answer = self.client.delete_objects(
                    Bucket=self.name,
                    Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in batch], "Quiet": True},
                )
                errors.update({e["Key"]: e.get("Code", "Error") for e in answer.get("Errors", []) if "Key" in e})
            return [key for key in wanted if key not in errors], errors

        return await self._run(call)

    def _versions_of(self, sorted_keys: list[str]) -> list[tuple[str, str]]:
        """(key, version id) of every version and delete marker of the keys, listed per folder from the first
        wanted key to the last (ListObjectVersions pages of 1,000)."""
        by_folder: dict[str, list[str]] = {}
        for key in sorted_keys:
            by_folder.setdefault(key.rpartition("/")[0] + "/", []).append(key)
        found: list[tuple[str, str]] = []
        for folder, folder_keys in by_folder.items():
            wanted, last = set(folder_keys), folder_keys[-1]
            # Listing starts after the marker: the first key minus its last character sorts just before it.
            key_marker, version_marker = folder_keys[0][:-1], ""
            while True:
                if version_marker:
                    page = self.client.list_object_versions(
                        Bucket=self.name, Prefix=folder, KeyMarker=key_marker, VersionIdMarker=version_marker
                    )
                else:
                    page = self.client.list_object_versions(Bucket=self.name, Prefix=folder, KeyMarker=key_marker)
                entries = [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
                found.extend((e["Key"], e["VersionId"]) for e in entries if e.get("Key") in wanted and "VersionId" in e)
                if not page.get("IsTruncated") or any(e.get("Key", "") > last for e in entries):
                    break
                key_marker, version_marker = page.get("NextKeyMarker", ""), page.get("NextVersionIdMarker", "")
        return found

    async def list_objects(self, prefix: str) -> AsyncIterator[StoredObject]:
        """Every current object under ``prefix``, page by page (ListObjectsV2)."""
        token: str | None = None
        while True:

            def page(token: str | None = token) -> tuple[list[StoredObject], str | None]:
                kwargs: dict[str, object] = {"Bucket": self.name, "Prefix": prefix, "MaxKeys": 1000}
                if token:
                    kwargs["ContinuationToken"] = token
                answer = self.client.list_objects_v2(**kwargs)  # type: ignore[arg-type]
                found = [
                    StoredObject(o["Key"], o.get("Size", 0), o.get("LastModified", datetime.now(UTC)))
                    for o in answer.get("Contents", [])
                ]
                return found, answer.get("NextContinuationToken") if answer.get("IsTruncated") else None

            found, token = await self._run(page)
            for item in found:
                yield item
            if token is None:
                return

    async def _run(self, call: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(call)
        except (ClientError, BotoCoreError) as exc:
            if _is_transient(exc):
                raise StorageUnavailable(f"s3 unavailable: {type(exc).__name__}") from exc
            raise
