"""`wa-archive verify`: objects per second and CPU per object, on an archive of N objects of the size a sealed
batch of 2,000 records has (2.1 MB, docs/ARCHIVE_FORMAT.md), each entered in the hash chain, in a bucket prefix and
a PostgreSQL schema of this run's own. The objects are random bytes: verify hashes stored bytes and never opens
them, so their content does not change its cost.

Reports objects/s, MB/s, this process's CPU per object (verify runs in it: its S3 threads and the hashing) and
what a 1,000,000-record archive (500 such objects) would take at that rate. Target (issue #25): such an archive
is verified in minutes, not hours.

    python -m bench.verify [--objects 200] [--object-mb 2.1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from typing import Any

import asyncpg
from pydantic import SecretStr

from bench.common import demo_env, ensure_stack, write_result
from services.core.bucket import ArchiveBucket
from services.core.schema import migrate_dsn
from services.core.settings import S3Settings
from services.evidence.chain import Chain, Change, ObjectDigest, archive_stream
from services.evidence.signing import fingerprint, load_private_key, new_private_key_text
from services.evidence.verify import verify_archive

RECORDS_PER_OBJECT = 2_000
WRITE_CONCURRENCY = 8


async def fill(bucket: ArchiveBucket, conn: asyncpg.Connection, objects: int, size: int) -> None:
    """Write ``objects`` objects of ``size`` random bytes, each entered in the chain as the archiver enters them
    (one entry per object, in six partition streams)."""
    limit = asyncio.Semaphore(WRITE_CONCURRENCY)
    chain = Chain(bucket)

    async def one(n: int) -> ObjectDigest:
        body = os.urandom(size)
        key = f"{bucket.settings.prefix}/bench.topic/{n % 6:05d}/{n:020d}.waarc"
        async with limit:
            await bucket.put(key, body)
        return ObjectDigest.of(key, body)

    digests = await asyncio.gather(*(one(n) for n in range(objects)))
    for n, digest in enumerate(digests):
        async with conn.transaction():
            await chain.append(conn, archive_stream("bench.topic", n % 6), Change(written=(digest,)))


async def run(objects: int, object_mb: float) -> dict[str, Any]:
    env = demo_env()
    owner = env["WA_MIGRATOR_PG__DSN"]
    schema, prefix = f"bench_verify_{uuid.uuid4().hex[:8]}", f"bench/verify-{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(owner)
    await admin.execute(f"CREATE SCHEMA {schema}")
    try:
        await migrate_dsn(f"{owner}?search_path={schema}")
        conn = await asyncpg.connect(f"{owner}?search_path={schema}")
        bucket = ArchiveBucket(
            S3Settings(
                endpoint_url=env["WA_RETENTION_S3__ENDPOINT_URL"],
                access_key=env["WA_RETENTION_S3__ACCESS_KEY"],
                secret_key=SecretStr(env["WA_RETENTION_S3__SECRET_KEY"]),
                bucket=env["WA_RETENTION_S3__BUCKET"],
                prefix=prefix,
            )
        )
        size = int(object_mb * 1e6)
        try:
            await fill(bucket, conn, objects, size)
            key = load_private_key(new_private_key_text())
            await Chain(bucket).write_checkpoint(conn, key)
        finally:
            await conn.close()
        trusted = {fingerprint(key.public_key()): key.public_key()}
        cpu_before, started = time.process_time(), time.monotonic()
        report = await verify_archive(bucket, trusted=trusted, settle_s=0)
        seconds, cpu = time.monotonic() - started, time.process_time() - cpu_before
        keys = [stored.key async for stored in bucket.list_objects(f"chain/{prefix}/")]
        keys += [stored.key async for stored in bucket.list_objects(f"{prefix}/")]
        await bucket.delete_permanently(keys)
    finally:
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    assert report.clean, report.to_json()
    per_second = report.objects_read / seconds
    million = 1_000_000 / RECORDS_PER_OBJECT
    return {
        "objects": report.objects,
        "object_bytes": size,
        "chain_entries": report.entries,
        "checkpoints": report.checkpoints,
        "seconds": round(seconds, 2),
        "objects_per_s": round(per_second, 1),
        "mb_per_s": round(report.bytes_read / 1e6 / seconds, 1),
        "cpu_ms_per_object": round(cpu * 1000 / report.objects_read, 2),
        "cpu_utilisation": round(cpu / seconds, 2),
        "one_million_records_minutes": round(million / per_second / 60, 1),
        "targets": {"one_million_records_minutes": 30},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--object-mb", type=float, default=2.1)
    args = parser.parse_args()
    ensure_stack()
    write_result("verify", asyncio.run(run(args.objects, args.object_mb)))


if __name__ == "__main__":
    main()
