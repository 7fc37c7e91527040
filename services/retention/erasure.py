"""Erasure (GDPR Art. 17) by crypto-shredding, then deletion of what can be deleted.

Order of :func:`erase_subject`, and why:
1. Record the request (its one-month deadline is tracked from the first time it is seen).
2. If a legal hold covers the person, stop: the request is ``blocked`` and says by which case (Art. 17(3)(e)).
3. In one transaction: destroy every DEK of the person, put them on the suppression list and record every
   pseudonym of the person as erased now. From the commit on, every copy of their records — in every object,
   object version, WORM-locked object and backup — is unreadable, and the archiver drops (never re-seals) any
   record of theirs from before it that arrives again (an in-flight batch, a replay, a Meta redelivery). This is
   the step the law cares about, and it takes milliseconds.
4. Delete what can be deleted: objects that hold only this person's records (an Object Lock may refuse: the
   data is unreadable anyway and the object goes when the lock expires), their media objects, their index and
   alias rows.
5. Record a proof without personal data: request ref, time, pseudonyms, key ids destroyed, counts.
Repeating a completed request is harmless and returns the stored proof.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import orjson

from services.core.bucket import DELETE_OBJECTS_MAX, ArchiveBucket, StorageUnavailable
from services.core.index import binary_keys, index_scans
from services.core.keyring import Keyring, record_erasure
from services.retention.holds import holds_covering, holds_settled
from services.retention.subjects import Connection, resolve_subject_refs, write_audit

log = logging.getLogger("wa_archive.retention")

# Art. 12(3): without undue delay and in any event within one month of receipt.
ERASURE_DEADLINE = timedelta(days=30)


@dataclass
class ErasureOutcome:
    request_ref: str
    status: str  # completed | blocked
    subject_refs: list[str]
    keys_destroyed: list[str] = field(default_factory=list)
    blocked_by: list[str] = field(default_factory=list)
    objects_deleted: int = 0
    objects_locked: int = 0
    events_deleted: int = 0
    key_destroyed_at: str | None = None
    # From the start of the call to the commit that destroyed the keys (the moment the data became unreadable).
    seconds_to_key_destruction: float | None = None

    def proof(self) -> dict[str, Any]:
        return {
            "request_ref": self.request_ref,
            "status": self.status,
            "subject_refs": self.subject_refs,
            "keys_destroyed": self.keys_destroyed,
            "key_destroyed_at": self.key_destroyed_at,
            "objects_deleted": self.objects_deleted,
            "objects_locked": self.objects_locked,
            "events_deleted": self.events_deleted,
            "blocked_by_cases": self.blocked_by,
        }


async def erase_subject(
    pool: asyncpg.Pool,
    keyring: Keyring,
    bucket: ArchiveBucket,
    pepper: bytes,
    *,
    contact: str,
    phone_number_id: str | None,
    request_ref: str,
    actor: str,
    now: datetime | None = None,
) -> ErasureOutcome:
    now = now or datetime.now(UTC)
    started = time.monotonic()
    async with pool.acquire() as conn:
        existing = await conn.fetchrow("SELECT status, proof FROM erasure_requests WHERE request_ref = $1", request_ref)
        if existing is not None and existing["status"] == "completed":
            proof = orjson.loads(existing["proof"])
            return ErasureOutcome(request_ref, "completed", proof["subject_refs"], proof["keys_destroyed"])
        refs = await resolve_subject_refs(conn, pepper, contact, phone_number_id)
        await conn.execute(
            "INSERT INTO erasure_requests (request_ref, subject_refs, received_at, deadline_at, status) "
            "VALUES ($1, $2::text[], $3, $4, 'pending') ON CONFLICT (request_ref) DO NOTHING",
            request_ref,
            refs,
            now,
            now + ERASURE_DEADLINE,
        )
        # From the hold check to the shredding, no hold can be created (it waits): a hold either blocks this
        # erasure or is created after the keys are gone.
        async with holds_settled(conn):
            holds = await holds_covering(conn, refs)
            outcome = ErasureOutcome(request_ref, "completed", refs)
            if holds:
                outcome.status = "blocked"
                outcome.blocked_by = sorted({h.case_ref for h in holds})
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE erasure_requests SET status = 'blocked', blocked_by = $2::text[]"
                        " WHERE request_ref = $1",
                        request_ref,
                        [h.hold_id for h in holds],
                    )
                    await write_audit(
                        conn,
                        actor=actor,
                        action="erasure.blocked",
                        reason=request_ref,
                        details={"holds": [h.hold_id for h in holds], "subjects": len(refs)},
                    )
                return outcome

            # Step 3: crypto-shredding, all keys of the person in one transaction.
            async with conn.transaction():
                for ref in refs:
                    dek_id = await keyring.shred(conn, ref, request_ref)
                    if dek_id is not None:
                        outcome.keys_destroyed.append(dek_id)
                # Final: the archiver drops, never re-seals, any record of theirs from before this moment.
                await record_erasure(conn, refs, request_ref)
                await write_audit(
                    conn,
                    actor=actor,
                    action="erasure.keys_destroyed",
                    reason=request_ref,
                    details={"keys": outcome.keys_destroyed, "subjects": len(refs)},
                )
        outcome.key_destroyed_at = datetime.now(UTC).isoformat()
        outcome.seconds_to_key_destruction = time.monotonic() - started

        # Step 4: delete what can be deleted.
        # Objects holding only this person's records: the objects of their rows (index on subject_ref), then
        # those without a record of anyone else (index on object_key). A record without a subject (an account
        # update) is someone else's.
        async with index_scans(conn):
            sole_objects = await conn.fetch(
                "SELECT k.object_key FROM (SELECT DISTINCT object_key FROM archived_events"
                " WHERE subject_ref = ANY($1::bytea[])) k WHERE NOT EXISTS (SELECT 1 FROM archived_events e"
                " WHERE e.object_key = k.object_key AND (e.subject_ref IS NULL OR e.subject_ref <> ALL($1::bytea[])))",
                binary_keys(refs),
            )
        media_objects = await conn.fetch(
            "SELECT object_key FROM archived_media WHERE subject_ref = ANY($1::bytea[]) AND object_key IS NOT NULL",
            binary_keys(refs),
        )
    keys = [r["object_key"] for r in sole_objects] + [r["object_key"] for r in media_objects]
    gone: list[str] = []  # objects whose every version is deleted; locked ones keep their archive_objects row
    for start in range(0, len(keys), DELETE_OBJECTS_MAX):
        chunk = keys[start : start + DELETE_OBJECTS_MAX]
        try:
            deleted_keys, refused = await bucket.delete_permanently(chunk)
        except StorageUnavailable:
            log.warning(
                "erasure %s: object store unavailable; the keys are destroyed, objects stay for retention", request_ref
            )
            outcome.objects_locked += len(chunk)
            continue
        gone.extend(deleted_keys)
        outcome.objects_deleted += len(deleted_keys)
        outcome.objects_locked += len(refused)
    async with pool.acquire() as conn, conn.transaction():
        deleted = await conn.fetchval(
            "WITH gone AS (DELETE FROM archived_events WHERE subject_ref = ANY($1::bytea[]) RETURNING 1) "
            "SELECT count(*) FROM gone",
            binary_keys(refs),
        )
        outcome.events_deleted = int(deleted or 0)
        await conn.execute("DELETE FROM archived_media WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs))
        await conn.execute(
            "DELETE FROM subject_aliases WHERE subject_ref = ANY($1::text[]) OR alias_ref = ANY($1::text[])", refs
        )
        await conn.execute(
            "DELETE FROM archive_objects o WHERE o.object_key = ANY($1::text[]) "
            "AND NOT EXISTS (SELECT 1 FROM archived_events e WHERE e.object_key = o.object_key)",
            gone,
        )
        await conn.execute(
            "UPDATE erasure_requests SET status = 'completed', completed_at = now(), proof = $2::jsonb "
            "WHERE request_ref = $1",
            request_ref,
            orjson.dumps(outcome.proof()).decode(),
        )
        await write_audit(conn, actor=actor, action="erasure.completed", reason=request_ref, details=outcome.proof())
    return outcome


async def pending_erasures(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> tuple[int, float]:
    """(number of requests not completed, age in seconds of the oldest) — for the deadline metric."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, coalesce(extract(epoch FROM now() - min(received_at)), 0) AS age "
        "FROM erasure_requests WHERE status <> 'completed'"
    )
    assert row is not None
    return int(row["n"]), float(row["age"])


@dataclass(frozen=True, slots=True)
class ErasureRequest:
    """An erasure request as tracked against its deadline (``holds``: how many holds blocked it, 0 if none)."""

    request_ref: str
    status: str
    received_at: datetime
    deadline_at: datetime
    completed_at: datetime | None
    holds: int

    def to_json(self) -> dict[str, Any]:
        return {
            "request_ref": self.request_ref,
            "status": self.status,
            "received_at": self.received_at.isoformat(),
            "deadline_at": self.deadline_at.isoformat(),
            "completed_at": self.completed_at.isoformat() if self.completed_at else None,
            "holds": self.holds,
        }


async def erasure_requests(conn: Connection) -> list[ErasureRequest]:
    """Every erasure request, oldest first."""
    rows = await conn.fetch(
        "SELECT request_ref, status, received_at, deadline_at, completed_at, cardinality(blocked_by) AS holds "
        "FROM erasure_requests ORDER BY received_at"
    )
    return [ErasureRequest(**dict(row)) for row in rows]
