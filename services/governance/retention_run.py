"""The retention run: delete objects whose every record has expired and none is on hold, then their index rows.

Contract of :func:`retention_run`:
- It selects objects, never single records: an object goes only when *every* record in it has expired and none
  is held. Candidates come from the objects' own expiry (the latest of their records', kept by the index
  writer), then objects with a held record are left out. The dry run selects exactly the same way and deletes
  nothing.
- Holds are checked again for each chunk right before it is deleted, under the holds lock (holds.py): a hold
  created while a run is going stops the deletion of what it covers, and its creation waits for chunks that
  checked before it existed.
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
from typing import NamedTuple

import asyncpg

from services.core.bucket import ArchiveBucket
from services.core.db import Connection
from services.core.identity import linked_subject_refs
from services.core.index import binary_keys, index_scans
from services.core.vocabulary import CONTACT_KINDS
from services.evidence.chain import GOVERNANCE_STREAM, Chain, Change, Deletion
from services.governance.holds import held_objects, holds_settled

log = logging.getLogger("wa_archive.retention")

DELETE_BATCH = 500  # objects per chunk: listed and deleted together, then their index rows in one transaction
# Chunks in flight at once: the S3 deletes of some overlap the index deletes of others. Measured on SeaweedFS
# (versioned bucket, 2 cores), 2,000 objects: 1 chunk of 1,000 at a time 307 objects/s; 4 of 500 with calls of
# 250 versions 1,193/s; more chunks or smaller calls were slower again.
CONCURRENT_CHUNKS = 4

EXPIRED_OBJECTS_SQL = "SELECT object_key FROM archive_objects WHERE expires_at <= $1 ORDER BY object_key"

# What counts as contact for a class anchored on the last contact: an exchange with the person, in either
# direction (not a delivery status, an account or template update).
LAST_CONTACT_KINDS = sorted(CONTACT_KINDS)

# The marked records of the candidate objects whose person was in contact after them, and when each is now due.
# The records of classes anchored on the last contact among the candidates, and the newest contact of each
# pseudonym asked (the (subject_ref, event_time) index answers each with one descent).
MARKED_SQL = (
    "SELECT object_key, subject_ref, event_time, expires_at FROM archived_events"
    " WHERE object_key = ANY($1::text[]) AND anchor_last_contact AND subject_ref IS NOT NULL"
)
LAST_CONTACT_SQL = """
SELECT p.subject_ref,
       (SELECT max(e.event_time) FROM archived_events e
         WHERE e.subject_ref = p.subject_ref AND e.kind = ANY($2::text[])) AS last_contact
FROM unnest($1::bytea[]) AS p(subject_ref)
"""


@dataclass(kw_only=True)
class RetentionReport:
    run_id: str
    dry_run: bool
    started_at: datetime
    candidates: list[str] = field(default_factory=list)
    objects_deleted: int = 0
    objects_locked: int = 0
    objects_held: int = 0  # candidates a hold created during the run kept
    events_deleted: int = 0
    events_by_class: dict[str, int] = field(default_factory=dict)
    # Expired by their own time, kept because their person was in contact since (classes anchored on it).
    objects_deferred: int = 0
    # Open erasure requests the (real) run processed, by the status they reached.
    erasures: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {
            "run_id": self.run_id,
            "dry_run": self.dry_run,
            "started_at": self.started_at.isoformat(),
            "objects": len(self.candidates),
            "objects_deleted": self.objects_deleted,
            "objects_locked": self.objects_locked,
            "objects_held": self.objects_held,
            "objects_deferred": self.objects_deferred,
            "events_deleted": self.events_deleted,
            "events_by_class": self.events_by_class,
            "erasures": self.erasures,
        }


class Deferral(NamedTuple):
    """A record of a class anchored on the last contact, not due before ``due``: its person wrote since."""

    object_key: str
    subject_ref: bytes
    due: datetime


async def defer_for_later_contact(
    conn: Connection, candidates: list[str], now: datetime, *, dry_run: bool
) -> tuple[list[str], int]:
    """Of the expired ``candidates``, leave out the objects holding a record of a class anchored on the last
    contact whose person has been in contact since, so that it is not due yet; a real run moves those records' and
    objects' expiry on (it only ever grows), so they are not candidates again before then. Returns (the candidates
    still due, how many objects were deferred)."""
    if not candidates:
        return candidates, 0
    async with index_scans(conn):
        marked = await conn.fetch(MARKED_SQL, candidates)
        if not marked:
            return candidates, 0
        # A person's last contact under any of their identifiers: an old record under their phone number is
        # renewed by a message they sent since under their business-scoped user id.
        linked = await linked_subject_refs(conn, {row["subject_ref"].hex() for row in marked})
        every = sorted({ref for refs in linked.values() for ref in refs})
        contacts = await conn.fetch(LAST_CONTACT_SQL, binary_keys(every), LAST_CONTACT_KINDS)
    latest = {row["subject_ref"].hex(): row["last_contact"] for row in contacts if row["last_contact"]}
    later: list[Deferral] = []
    for record in marked:
        seen = [latest[ref] for ref in linked[record["subject_ref"].hex()] if ref in latest]
        last_contact = max(seen, default=None)
        if last_contact is not None and last_contact > record["event_time"]:
            due = last_contact + (record["expires_at"] - record["event_time"])
            if due > now:
                later.append(Deferral(record["object_key"], record["subject_ref"], due))
    if not later:
        return candidates, 0
    due_by_object: dict[str, datetime] = {}
    for deferral in later:
        due_by_object[deferral.object_key] = max(deferral.due, due_by_object.get(deferral.object_key, deferral.due))
    if not dry_run:
        async with conn.transaction():
            await conn.execute(
                "UPDATE archived_events e SET expires_at = greatest(e.expires_at, u.due)"
                " FROM unnest($1::text[], $2::bytea[], $3::timestamptz[]) AS u(object_key, subject_ref, due)"
                " WHERE e.object_key = u.object_key AND e.subject_ref = u.subject_ref AND e.anchor_last_contact",
                [d.object_key for d in later],
                [d.subject_ref for d in later],
                [d.due for d in later],
            )
            await conn.execute(
                "UPDATE archive_objects o SET expires_at = greatest(o.expires_at, u.due)"
                " FROM unnest($1::text[], $2::timestamptz[]) AS u(object_key, due) WHERE o.object_key = u.object_key",
                list(due_by_object),
                list(due_by_object.values()),
            )
    return [key for key in candidates if key not in due_by_object], len(due_by_object)


async def expired_objects(conn: Connection, now: datetime) -> list[str]:
    """Objects whose every record has expired at ``now`` and none is held, in key order."""
    candidates = [row["object_key"] for row in await conn.fetch(EXPIRED_OBJECTS_SQL, now)]
    held = await held_objects(conn, candidates)
    return [key for key in candidates if key not in held]


@dataclass
class ChunkOutcome:
    objects_deleted: int
    objects_locked: int
    objects_held: int
    events_by_class: dict[str, int]


async def delete_chunk(
    pool: asyncpg.Pool, bucket: ArchiveBucket, chunk: list[str], *, chain: Chain | None = None
) -> ChunkOutcome:
    """Delete a chunk of expired objects, then their media objects and rows, unless a hold created since the
    selection covers them. Refused objects keep their rows and media for the next run. What was deleted enters the
    hash chain (``chain``, default the bucket's) with why — each object's retention classes and expiry — in the
    transaction that deletes the rows: a crash before it leaves the rows, so the next run selects the objects again,
    finds them gone and records them then."""
    chain = chain or Chain(bucket, can_list=True)
    async with pool.acquire() as conn, holds_settled(conn), index_scans(conn):
        held = await held_objects(conn, chunk)
        gone, refused = await bucket.delete_permanently([key for key in chunk if key not in held])
        media = {
            row["media_key"]: row["object_key"]
            for row in await conn.fetch(
                "SELECT m.object_key AS media_key, e.object_key FROM archived_media m JOIN archived_events e"
                " USING (event_id) WHERE e.object_key = ANY($1::text[]) AND m.object_key IS NOT NULL",
                gone,
            )
        }
        media_keys = sorted(media)
        media_gone: list[str] = []
        for start in range(0, len(media_keys), DELETE_BATCH):
            deleted_media, _locked = await bucket.delete_permanently(media_keys[start : start + DELETE_BATCH])
            media_gone += deleted_media
        why = {
            row["object_key"]: (tuple(sorted(c for c in row["classes"] if c)), row["expires_at"])
            for row in await conn.fetch(
                "SELECT o.object_key, o.expires_at, array_agg(DISTINCT e.retention_class) AS classes"
                " FROM archive_objects o LEFT JOIN archived_events e USING (object_key)"
                " WHERE o.object_key = ANY($1::text[]) GROUP BY o.object_key, o.expires_at",
                gone,
            )
        }
        async with conn.transaction():
            deletions = [_retention_deletion(key, why.get(key)) for key in gone]
            deletions += [_retention_deletion(key, why.get(media[key])) for key in media_gone]
            if deletions:
                await chain.append(conn, GOVERNANCE_STREAM, Change(deleted=tuple(sorted(deletions))))
            await conn.execute(
                "DELETE FROM archived_media m USING archived_events e "
                "WHERE m.event_id = e.event_id AND e.object_key = ANY($1::text[])",
                gone,
            )
            await conn.execute("DELETE FROM keyword_index WHERE object_key = ANY($1::text[])", gone)
            removed = await conn.fetch(
                "WITH gone AS (DELETE FROM archived_events WHERE object_key = ANY($1::text[])"
                " RETURNING retention_class) SELECT retention_class, count(*) AS n FROM gone GROUP BY retention_class",
                gone,
            )
            await conn.execute("DELETE FROM archive_objects WHERE object_key = ANY($1::text[])", gone)
    return ChunkOutcome(len(gone), len(refused), len(held), {row["retention_class"]: int(row["n"]) for row in removed})


def _retention_deletion(key: str, why: tuple[tuple[str, ...], datetime | None] | None) -> Deletion:
    classes, expired = why or ((), None)
    return Deletion(
        key=key,
        cause="retention",
        retention_classes=classes,
        expired_at=None if expired is None else expired.astimezone(UTC).isoformat(),
    )


async def retention_run(
    pool: asyncpg.Pool,
    bucket: ArchiveBucket,
    *,
    dry_run: bool,
    now: datetime | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> RetentionReport:
    now = now or datetime.now(UTC)
    report = RetentionReport(run_id=str(uuid.uuid4()), dry_run=dry_run, started_at=now)
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO retention_runs (run_id, dry_run, status) VALUES ($1::uuid, $2, 'running')",
            report.run_id,
            dry_run,
        )
        report.candidates = await expired_objects(conn, now)
        report.candidates, report.objects_deferred = await defer_for_later_contact(
            conn, report.candidates, now, dry_run=dry_run
        )
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
            chain = Chain(bucket, can_list=True)  # one per run: its first append catches up with the bucket
            done = 0

            async def one(chunk: list[str]) -> None:
                nonlocal done
                async with limit:
                    outcome = await delete_chunk(pool, bucket, chunk, chain=chain)
                report.objects_deleted += outcome.objects_deleted
                report.objects_locked += outcome.objects_locked
                report.objects_held += outcome.objects_held
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
