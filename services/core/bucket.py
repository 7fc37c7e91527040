"""The archive bucket: plain S3 calls through boto3 (portable to AWS S3, SeaweedFS, MinIO, Ceph RGW).

boto3 is synchronous; every call runs in a worker thread so the event loop keeps consuming. Errors are split
into the kinds the archiver acts on: :class:`StorageUnavailable` (network, 5xx, throttling — retry, do not
commit), :class:`StorageRefused` (a 4xx that says the request itself is unacceptable — a key or body the store
will never take — so retrying cannot help), and anything else (access denied, no such bucket: a misconfiguration
that a person must fix, retried meanwhile), which propagates as boto3 raised it.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.client import Config
from botocore.exceptions import BotoCoreError, ClientError, ConnectionError, EndpointConnectionError

from services.core.retry import DataRefused, DependencyUnavailable
from services.core.settings import S3Settings

if TYPE_CHECKING:  # the stubs are a development dependency; the image does not have them
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
DELETE_OBJECTS_MAX = 1000  # keys (versions) one DeleteObjects call takes
# Versions per DeleteObjects call when deleting many: smaller calls run side by side. On SeaweedFS (versioned
# bucket, 2 cores) 1,000 versions took 1.40 s in one call, 0.77 s as four calls of 250 at once.
DELETE_CALL_VERSIONS = 250

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


# 4xx answers that are about access or configuration (credentials, bucket, Object Lock, a conflict with another
# writer), not about the request's data: every request would fail the same way until a person fixes it, so
# they are retried and alerted on, never dead-lettered.
CONFIGURATION_CODES = frozenset(
    {
        "AccessDenied",
        "AllAccessDisabled",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "ExpiredToken",
        "InvalidToken",
        "NoSuchBucket",
        "InvalidBucketState",
        "OperationAborted",
        "AccountProblem",
        "RequestTimeTooSkewed",
        "MissingSecurityHeader",
        "ObjectLockConfigurationNotFoundError",
    }
)


class StorageUnavailable(DependencyUnavailable):
    """The object store did not take or give the object this time; retrying later may succeed."""

    dependency = "s3"


class StorageRefused(DataRefused):
    """The object store refused the request for what it carries (a 4xx such as InvalidArgument, KeyTooLongError,
    EntityTooLarge): the same request will be refused again."""

    dependency = "s3"


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


def _is_refusal(exc: Exception) -> bool:
    if not isinstance(exc, ClientError):
        return False
    code = exc.response.get("Error", {}).get("Code", "")
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return 400 <= status < 500 and status not in (401, 403, 404, 408, 409, 429) and code not in CONFIGURATION_CODES


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
        # boto3 is synchronous: calls run in threads of their own, as many as the client's connection pool
        # (the event loop's default executor has cpu+4 threads, shared with everything else).
        self._threads = ThreadPoolExecutor(max_workers=settings.max_pool_connections, thread_name_prefix="s3")

    def retain_until(self, now: datetime) -> datetime | None:
        """When Object Lock is configured: the retention date of an object written at ``now``."""
        if not self.settings.object_lock_mode:
            return None
        return now + timedelta(days=self.settings.object_lock_days)

    async def put(self, key: str, body: bytes, *, now: datetime | None = None, locked: bool = True) -> datetime | None:
        """Write (or overwrite — keys are deterministic) one object; returns its Object Lock retain-until date.
        ``locked=False`` writes it without Object Lock whatever the settings: an object an erasure must be able to
        delete at once (a key's copy, services/core/key_copies.py)."""
        until = self.retain_until(now or datetime.now(UTC)) if locked else None

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

    async def put_file(self, key: str, path: Path) -> None:
        """Write the file at ``path`` as ``key``, without Object Lock (the work bucket's files are deleted when
        they expire), read from disk in parts as it is sent (boto3's managed transfer: multipart past 8 MiB), so
        a large export is never held in memory whole."""
        await self._run(partial(self.client.upload_file, str(path), self.name, key))

    async def delete_current(self, keys: Sequence[str]) -> dict[str, str]:
        """Delete the current object of each key (an unversioned bucket: the work bucket); returns {key: error
        code} of those the store refused. A key already gone is not an error."""
        errors: dict[str, str] = {}
        for start in range(0, len(keys), DELETE_OBJECTS_MAX):
            batch = list(keys[start : start + DELETE_OBJECTS_MAX])

            def call(batch: list[str] = batch) -> dict[str, str]:
                answer = self.client.delete_objects(
                    Bucket=self.name, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )
                return {e["Key"]: e.get("Code", "Error") for e in answer.get("Errors", []) if "Key" in e}

            errors |= await self._run(call)
        return errors

    async def get(self, key: str) -> bytes:
        def call() -> bytes:
            return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

        return await self._run(call)

    async def sha256(self, key: str, *, piece_bytes: int = 1024 * 1024) -> tuple[int, str]:
        """The size and hex SHA-256 of ``key``'s current bytes, read and hashed in a worker thread (one GET, never
        held whole): what verifying the archive against its hash chain reads of each object."""

        def call() -> tuple[int, str]:
            body = self.client.get_object(Bucket=self.name, Key=key)["Body"]
            digest, size = hashlib.sha256(), 0
            try:
                while piece := body.read(piece_bytes):
                    digest.update(piece)
                    size += len(piece)
            finally:
                body.close()
            return size, digest.hexdigest()

        return await self._run(call)

    async def start_upload(self, key: str, *, now: datetime | None = None) -> str:
        """Begin a multipart upload of ``key`` (Object Lock as :meth:`put` sets it); returns its upload id. The
        object exists only once :meth:`complete_upload` succeeds; until then nothing of it is readable."""
        until = self.retain_until(now or datetime.now(UTC))

        def call() -> str:
            if until is not None and self.settings.object_lock_mode:
                answer = self.client.create_multipart_upload(
                    Bucket=self.name,
                    Key=key,
                    ObjectLockMode=self.settings.object_lock_mode,
                    ObjectLockRetainUntilDate=until,
                )
            else:
                answer = self.client.create_multipart_upload(Bucket=self.name, Key=key)
            return answer["UploadId"]

        return await self._run(call)

    async def upload_part(self, key: str, upload_id: str, number: int, body: bytes) -> str:
        """Upload part ``number`` (1-based; every part but the last at least 5 MiB, S3's minimum); returns its
        ETag for :meth:`complete_upload`."""

        def call() -> str:
            return self.client.upload_part(Bucket=self.name, Key=key, UploadId=upload_id, PartNumber=number, Body=body)[
                "ETag"
            ]

        return await self._run(call)

    async def complete_upload(self, key: str, upload_id: str, etags: Sequence[str]) -> None:
        """Make the object of the parts (``etags`` in part order) current under ``key``."""

        def call() -> None:
            self.client.complete_multipart_upload(
                Bucket=self.name,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": [{"PartNumber": n, "ETag": e} for n, e in enumerate(etags, start=1)]},
            )

        await self._run(call)

    async def abort_upload(self, key: str, upload_id: str) -> None:
        """Drop an unfinished upload and its parts (best effort: a bucket lifecycle rule
        ``AbortIncompleteMultipartUpload`` collects what a crash leaves behind)."""

        def call() -> None:
            self.client.abort_multipart_upload(Bucket=self.name, Key=key, UploadId=upload_id)

        await self._run(call)

    async def stream(self, key: str, *, piece_bytes: int = 256 * 1024) -> tuple[int, AsyncIterator[bytes]]:
        """The size of ``key`` and its bytes in pieces of at most ``piece_bytes``, read as they are consumed (one
        GET; each piece read in a worker thread): what reading a large object needs without holding it. The GET
        is made here, so a missing object or an outage raises before anything is consumed; the body is closed
        when the iterator is exhausted, closed or garbage-collected."""

        def call() -> tuple[int, Any]:
            answer = self.client.get_object(Bucket=self.name, Key=key)
            return int(answer["ContentLength"]), answer["Body"]

        size, body = await self._run(call)

        async def pieces() -> AsyncIterator[bytes]:
            try:
                while piece := await self._run(partial(body.read, piece_bytes)):
                    yield piece
            finally:
                body.close()

        return size, pieces()

    async def delete_permanently(self, keys: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        """Remove every version of each key, delete markers included, so no data stays behind as a noncurrent
        version (the bucket is versioned, as Object Lock requires). Returns (keys gone, {key: error code}); a
        version still under Object Lock is reported (``AccessDenied``), not raised. A key with no version left
        counts as gone, so a repeated call is a no-op. Folders are listed, and versions deleted, by several
        calls at once: a versioned delete costs the store far more than the round trip."""
        wanted = sorted(set(keys))
        by_folder: dict[str, list[str]] = {}
        for key in wanted:
            by_folder.setdefault(key.rpartition("/")[0] + "/", []).append(key)
        listed = await asyncio.gather(
            *(
                self._run(partial(self._versions_in_folder, folder, folder_keys))
                for folder, folder_keys in by_folder.items()
            )
        )
        versions = [version for found in listed for version in found]
        answers = await asyncio.gather(
            *(
                self._run(partial(self._delete_versions, versions[start : start + DELETE_CALL_VERSIONS]))
                for start in range(0, len(versions), DELETE_CALL_VERSIONS)
            )
        )
        errors = {key: code for answer in answers for key, code in answer.items()}
        return [key for key in wanted if key not in errors], errors

    def _delete_versions(self, versions: list[tuple[str, str]]) -> dict[str, str]:
        answer = self.client.delete_objects(
            Bucket=self.name,
            Delete={"Objects": [{"Key": k, "VersionId": v} for k, v in versions], "Quiet": True},
        )
        return {e["Key"]: e.get("Code", "Error") for e in answer.get("Errors", []) if "Key" in e}

    def _versions_in_folder(self, folder: str, folder_keys: list[str]) -> list[tuple[str, str]]:
        """(key, version id) of every version and delete marker of the (sorted) keys of one folder, listed from
        the first to the last (ListObjectVersions pages of 1,000)."""
        found: list[tuple[str, str]] = []
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
                return found
            key_marker, version_marker = page.get("NextKeyMarker", ""), page.get("NextVersionIdMarker", "")

    async def first_object(self, prefix: str) -> str | None:
        """The first key under ``prefix`` in the listing's order (one ListObjectsV2 call of one key), or None."""

        def call() -> str | None:
            contents = self.client.list_objects_v2(Bucket=self.name, Prefix=prefix, MaxKeys=1).get("Contents", [])
            return contents[0]["Key"] if contents else None

        return await self._run(call)

    async def list_objects(self, prefix: str, *, start_after: str = "") -> AsyncIterator[StoredObject]:
        """Every current object under ``prefix`` (those whose key sorts after ``start_after``, when given), in key
        order, page by page (ListObjectsV2)."""
        token: str | None = None
        while True:

            def page(token: str | None = token) -> tuple[list[StoredObject], str | None]:
                kwargs: dict[str, object] = {"Bucket": self.name, "Prefix": prefix, "MaxKeys": 1000}
                if token:
                    kwargs["ContinuationToken"] = token
                elif start_after:
                    kwargs["StartAfter"] = start_after
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
            return await asyncio.get_running_loop().run_in_executor(self._threads, call)
        except (ClientError, BotoCoreError) as exc:
            if _is_transient(exc):
                raise StorageUnavailable(f"s3 unavailable: {type(exc).__name__}") from exc
            if _is_refusal(exc):
                code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
                raise StorageRefused(f"s3 refused the request: {code or type(exc).__name__}") from exc
            raise
