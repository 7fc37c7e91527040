"""The retention run: delete objects whose every record has expired and none is on hold, then their index rows.

Contract of :func:`retention_run`:
- It selects objects, never single records: an object goes only when *every* record in it has expired and none
  is held. The dry run selects with exactly the same query and deletes nothing.
- Deletion removes every version of an object (the bucket is versioned for Object Lock: a plain delete would
  only add a delete marker and keep the data), in batched DeleteObjects calls. A key the bucket refuses (Object
  Lock still running) is kept, with its rows, and counted; the next run tries again.
- Index rows are deleted after their object, in the same batch; a crash in between leaves rows pointing at a
  deleted object, which the next run removes (the object is selected again, its delete is a no-op). The run is
  therefore idempotent and resumable.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import asyncpg

from services.core.bucket import ArchiveBucket
from services.retention.holds import HELD_ROW_SQL

log = logging.getLogger("wa_archive.retention")

DELETE_BATCH = 1000  # objects per chunk: one listing and (about) one DeleteObjects call
# Chunks in flight at once: S3 deletes of one overlap the index deletes of another.
CONCURRENT_CHUNKS = 4

EXPIRED_OBJECTS_SQL = f"""
SELECT o.object_key FROM archive_objects o
WHERE NOT EXISTS (
    SELECT 1 FROM archived_events e
    WHERE e.object_key = o.object_key
      AND (e.expires_at IS NULL OR e.expires_at > $1 OR {HELD_ROW_SQL}))
ORDER BY o.object_key
"""  # noqa: S608 — HELD_ROW_SQL is a constant


@dataclass
class RetentionReport:
    run_id: str
    dry_run: bool
    started_at: datetime
    candidates: list[str] = field(default_factory=list)
    objects_deleted: int = 0
    objects_locked: int = 0
    events_deleted: int = 0
    events_by_class: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "objects": len(self.candidates),
            "objects_deleted": self.objects_deleted,
            "objects_locked": self.objects_locked,
            "events_deleted": self.events_deleted,
            "events_by_class": self.events_by_class,
        }


async def expired_objects(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, now: datetime) -> list[str]:
    rows = await conn.fetch(EXPIRED_OBJECTS_SQL, now)
    return [row["object_key"] for row in rows]


@dataclass
class ChunkOutcome:
    objects_deleted: int
    objects_locked: int
    events_by_class: dict[str, int]


async def delete_chunk(pool: asyncpg.Pool, bucket: ArchiveBucket, chunk: list[str]) -> ChunkOutcome:
    """Delete up to 1,000 expired objects, then their media objects and rows. Refused objects keep their rows
    and media for the next run."""
    gone, refused = await bucket.delete_permanently(chunk)
    async with pool.acquire() as conn:
        media_keys = [
            row["object_key"]
            for row in await conn.fetch(
                "SELECT m.object_key FROM archived_media m JOIN archived_events e USING (event_id) "
                "WHERE e.object_key = ANY($1::text[]) AND m.object_key IS NOT NULL",
                gone,
            )
        ]
    for start in range(0, len(media_keys), DELETE_BATCH):
        await bucket.delete_permanently(media_keys[start : start + DELETE_BATCH])
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "DELETE FROM archived_media m USING archived_events e "
            "WHERE m.event_id = e.event_id AND e.object_key = ANY($1::text[])",
            gone,
        )
        removed = await conn.fetch(
            "WITH gone AS (DELETE FROM archived_events WHERE object_key = ANY($1::text[]) RETURNING retention_class) "
            "SELECT retention_class, count(*) AS n FROM gone GROUP BY retention_class",
            gone,
        )
        await conn.execute("DELETE FROM archive_objects WHERE object_key = ANY($1::text[])", gone)
    return ChunkOutcome(len(gone), len(refused), {row["retention_class"]: int(row["n"]) for row in removed})


async def retention_run(
    pool: asyncpg.Pool,
    bucket: ArchiveBucket,
    *,
    dry_run: bool,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RetentionReport:
    now = now or datetime.now(UTC)
    report = RetentionReport(str(uuid.uuid4()), dry_run, now)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO retention_runs (run_id, dry_run, status) VALUES ($1::uuid, $2, 'running')",
            report.run_id,
            dry_run,
        )
        report.candidates = await expired_objects(conn, now)
        if dry_run:  # a real run counts what it deletes
            counts = await conn.fetch(
                "SELECT retention_class, count(*) AS n FROM archived_events WHERE object_key = ANY($1::text[]) "
                "GROUP BY retention_class",
                report.candidates,
            )
            report.events_by_class = {row["retention_class"]: int(row["n"]) for row in counts}
    try:
        if not dry_run:
            chunks = [report.candidates[i : i + DELETE_BATCH] for i in range(0, len(report.candidates), DELETE_BATCH)]
            limit = asyncio.Semaphore(CONCURRENT_CHUNKS)
            done = 0

            async def one(chunk: list[str]) -> None:
                nonlocal done
                async with limit:
                    outcome = await delete_chunk(pool, bucket, chunk)
                report.objects_deleted += outcome.objects_deleted
                report.objects_locked += outcome.objects_locked
                for name, count in outcome.events_by_class.items():
                    report.events_by_class[name] = report.events_by_class.get(name, 0) + count
                    report.events_deleted += count
                done += len(chunk)
                if progress is not None:
                    progress(done, len(report.candidates))

            await asyncio.gather(*(one(chunk) for chunk in chunks))
    except Exception as exc:
        async with pool.acquire() as conn:
            await conn.execute(
                "UPDATE retention_runs SET status = 'failed', finished_at = now(), error = $2 WHERE run_id = $1::uuid",
                report.run_id,
                type(exc).__name__,
            )
        raise
    async with pool.acquire() as conn:
        await conn.execute(
            "UPDATE retention_runs SET status = 'succeeded', finished_at = now(), objects_deleted = $2,"
            " objects_locked = $3, events_deleted = $4 WHERE run_id = $1::uuid",
            report.run_id,
            report.objects_deleted,
            report.objects_locked,
            report.events_deleted,
        )
    return report
