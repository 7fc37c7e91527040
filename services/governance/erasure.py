"""Erasure (GDPR Art. 17) by crypto-shredding, then deletion of what can be deleted, as a tracked request.

A request moves through ``received → blocked (a hold) → in_progress → completed``, or ends ``refused`` with its
legal ground; ``extended`` is a request still waiting whose deadline was extended (Art. 12(3)). Every transition
is audited with its actor. A blocked request resumes by itself when the last hold that blocked it is released
(the release action processes it at once) and the scheduled retention run processes every open request, so a
request interrupted by a crash is finished by the next run.

Order of :func:`carry_out`, and why:
1. If a legal hold covers the person, stop: the request is ``blocked`` and says by which case (Art. 17(3)(e)).
2. In one transaction: mark the request ``in_progress``, destroy every DEK of the person, put them on the
   suppression list and record every pseudonym of the person as erased now. From the commit on, every copy of
   their records — in every object, object version, WORM-locked object and backup — is unreadable, and the
   archiver drops (never re-seals) any record of theirs from before it that arrives again (an in-flight batch, a
   replay, a Meta redelivery). This is the step the law cares about, and it takes milliseconds.
3. Delete what can be deleted: objects that hold only this person's records (an Object Lock may refuse: the
   data is unreadable anyway and the object goes when the lock expires), their media objects, their index and
   alias rows.
4. Record a proof without personal data: request ref, time, pseudonyms, key ids destroyed, counts.
Every step is idempotent, so running it again after a crash finishes the job. Repeating a completed request is
harmless and returns the stored proof; a refused request stays refused.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal

import asyncpg
import orjson
from botocore.exceptions import BotoCoreError, ClientError

from services.core.audit import write_audit
from services.core.bucket import DELETE_OBJECTS_MAX, ArchiveBucket, StorageUnavailable
from services.core.db import Connection, ConnectionOrPool
from services.core.identity import expand_subject_refs, resolve_subject_refs
from services.core.index import binary_keys, index_scans
from services.core.key_copies import CopiesRemain, KeyCopies
from services.core.keyring import Keyring, record_erasure
from services.core.refusals import InvalidRequest, NotFound
from services.core.retry import DataRefused, DependencyUnavailable
from services.evidence.chain import GOVERNANCE_STREAM, Chain, Change, Deletion, KeysDestroyed
from services.governance.cases import delete_notes_of
from services.governance.erasure_log import ErasureLog, ErasureRecord
from services.governance.holds import holds_covering, holds_settled

log = logging.getLogger("wa_archive.retention")

# Art. 12(3): without undue delay and in any event within one month of receipt; extendable once by two further
# months where necessary, the person being told why within the first month.
ERASURE_DEADLINE: Final = timedelta(days=30)
ERASURE_EXTENSION: Final = timedelta(days=60)

ErasureStatus = Literal["received", "blocked", "in_progress", "completed", "refused", "extended"]
OPEN_STATUSES: Final[tuple[ErasureStatus, ...]] = ("received", "blocked", "extended", "in_progress")
EXTENSION_REASON_MAX = 500
# Session advisory locks per request (hashtext of the ref in this namespace): one processor at a time.
ERASURE_LOCK_NAMESPACE: Final = 0x7761_6572  # "waer"


class ErasureError(InvalidRequest):
    """The request cannot make this transition (refused, completed, already extended, past its deadline…)."""


class UnknownErasure(NotFound):
    """No erasure request with this reference."""


@dataclass(kw_only=True)
class ErasureOutcome:
    request_ref: str
    status: str  # an ErasureStatus
    subject_refs: list[str]
    keys_destroyed: list[str] = field(default_factory=list)
    blocked_by: list[str] = field(default_factory=list)
    objects_deleted: int = 0
    objects_locked: int = 0
    events_deleted: int = 0
    key_destroyed_at: str | None = None
    # From the start of the call to the commit that destroyed the keys (the moment the data became unreadable).
    seconds_to_key_destruction: float | None = None
    refusal_ground: str | None = None

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
            "refusal_ground": self.refusal_ground,
        }


async def erase_subject(
    pool: asyncpg.Pool,
    keyring: Keyring,
    bucket: ArchiveBucket,
    pepper: bytes,
    *,
    contact: str | None,
    phone_number_id: str | None,
    request_ref: str,
    actor: str,
    now: datetime | None = None,
    subject_refs: Sequence[str] | None = None,
) -> ErasureOutcome:
    """Record the erasure request of ``contact`` (its deadline runs from the first time it is seen) and carry it
    out, unless a hold blocks it. Asking again with the same reference processes it again (after a hold was
    released, say) with the pseudonyms known now added to the request's. ``subject_refs`` instead of ``contact``:
    the person's pseudonyms as resolved earlier (an approved four-eyes request keeps no phone number)."""
    if (contact is None) == (subject_refs is None):
        raise ValueError("name the person by contact or by subject_refs, not both")
    now = now or datetime.now(UTC)
    started = time.monotonic()
    async with pool.acquire() as conn:
        existing = await conn.fetchrow(
            "SELECT status, proof, subject_refs, refusal_ground FROM erasure_requests WHERE request_ref = $1",
            request_ref,
        )
        if existing is not None and existing["status"] == "completed":
            proof = orjson.loads(existing["proof"])
            return ErasureOutcome(
                request_ref=request_ref,
                status="completed",
                subject_refs=proof["subject_refs"],
                keys_destroyed=proof["keys_destroyed"],
            )
        if existing is not None and existing["status"] == "refused":
            return ErasureOutcome(
                request_ref=request_ref,
                status="refused",
                subject_refs=list(existing["subject_refs"]),
                refusal_ground=existing["refusal_ground"],
            )
        if subject_refs is not None:
            refs = await expand_subject_refs(conn, subject_refs)
        else:
            assert contact is not None
            refs = await resolve_subject_refs(conn, pepper, contact, phone_number_id)
        if existing is None:
            inserted = await conn.fetchval(
                "INSERT INTO erasure_requests (request_ref, subject_refs, received_at, deadline_at, status) "
                "VALUES ($1, $2::text[], $3, $4, 'received') ON CONFLICT (request_ref) DO NOTHING RETURNING 1",
                request_ref,
                refs,
                now,
                now + ERASURE_DEADLINE,
            )
            if inserted:
                await write_audit(
                    conn,
                    actor=actor,
                    action="erasure.received",
                    reason=request_ref,
                    details={"subjects": len(refs), "deadline_at": (now + ERASURE_DEADLINE).isoformat()},
                )
        else:
            refs = sorted({*existing["subject_refs"], *refs})
            await conn.execute(
                "UPDATE erasure_requests SET subject_refs = $2::text[] WHERE request_ref = $1", request_ref, refs
            )
    outcome = await carry_out(pool, keyring, bucket, request_ref, actor=actor, started=started)
    if outcome is None:
        # Another process (the scheduled run, a hold's release) is carrying it out right now: say where it stands.
        status = await pool.fetchval("SELECT status FROM erasure_requests WHERE request_ref = $1", request_ref)
        return ErasureOutcome(request_ref=request_ref, status=str(status), subject_refs=refs)
    return outcome


@contextlib.asynccontextmanager
async def _processing(conn: Connection, request_ref: str) -> AsyncIterator[bool]:
    """True while this session alone processes ``request_ref`` (False: another one is at it; leave it)."""
    mine = await conn.fetchval("SELECT pg_try_advisory_lock($1, hashtext($2))", ERASURE_LOCK_NAMESPACE, request_ref)
    try:
        yield bool(mine)
    finally:
        if mine:
            await conn.execute("SELECT pg_advisory_unlock($1, hashtext($2))", ERASURE_LOCK_NAMESPACE, request_ref)


async def carry_out(
    pool: asyncpg.Pool,
    keyring: Keyring,
    bucket: ArchiveBucket,
    request_ref: str,
    *,
    actor: str,
    started: float | None = None,
) -> ErasureOutcome | None:
    """Process the open request ``request_ref`` with the pseudonyms it lists: blocked while a hold covers the
    person, otherwise carried out to ``completed``. None when it is not open (completed, refused, unknown) or
    another process is processing it right now."""
    started = time.monotonic() if started is None else started
    async with pool.acquire() as conn, _processing(conn, request_ref) as mine:
        if not mine:
            return None
        row = await conn.fetchrow(
            "SELECT status, subject_refs, blocked_by, extended_at, received_at, deadline_at FROM erasure_requests"
            " WHERE request_ref = $1",
            request_ref,
        )
        if row is None or row["status"] not in OPEN_STATUSES:
            return None
        # The person as known now: identifiers learned since the request (a user id, say) are erased too.
        refs = await expand_subject_refs(conn, row["subject_refs"])
        if refs != sorted(row["subject_refs"]):
            await conn.execute(
                "UPDATE erasure_requests SET subject_refs = $2::text[] WHERE request_ref = $1", request_ref, refs
            )
        outcome = ErasureOutcome(request_ref=request_ref, status="completed", subject_refs=refs)
        # From the hold check to the shredding, no hold can be created (it waits): a hold either blocks this
        # erasure or is created after the keys are gone.
        async with holds_settled(conn):
            holds = await holds_covering(conn, refs)
            if holds:
                outcome.status = "extended" if row["extended_at"] is not None else "blocked"
                outcome.blocked_by = sorted({h.case_ref for h in holds})
                hold_ids = sorted(h.hold_id for h in holds)
                if (row["status"], sorted(row["blocked_by"])) != (outcome.status, hold_ids):
                    async with conn.transaction():
                        await conn.execute(
                            "UPDATE erasure_requests SET status = $2, blocked_by = $3::text[] WHERE request_ref = $1",
                            request_ref,
                            outcome.status,
                            hold_ids,
                        )
                        await write_audit(
                            conn,
                            actor=actor,
                            action="erasure.blocked",
                            reason=request_ref,
                            details={"holds": hold_ids, "subjects": len(refs), "was": row["status"]},
                        )
                return outcome

            # Crypto-shredding, all keys of the person in one transaction with the move to in_progress.
            async with conn.transaction():
                await conn.execute(
                    "UPDATE erasure_requests SET status = 'in_progress', blocked_by = '{}' WHERE request_ref = $1",
                    request_ref,
                )
                for ref in refs:
                    await keyring.shred(conn, ref, request_ref)
                # Final: the archiver drops, never re-seals, any record of theirs from before this moment.
                await record_erasure(conn, refs, request_ref)
                # Their keyword tokens go with their keys: what they wrote is no longer searchable either.
                await conn.execute("DELETE FROM keyword_index WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs))
                # The case notes written about them were sealed under these keys: their rows go with them.
                notes_deleted = await delete_notes_of(conn, refs)
                # Every key this request destroyed, also in an earlier attempt that a crash interrupted.
                outcome.keys_destroyed = [
                    r["dek_id"]
                    for r in await conn.fetch(
                        "SELECT dek_id::text AS dek_id FROM shredded_keys WHERE request_ref = $1 ORDER BY dek_id",
                        request_ref,
                    )
                ]
                await write_audit(
                    conn,
                    actor=actor,
                    action="erasure.keys_destroyed",
                    reason=request_ref,
                    details={
                        "keys": outcome.keys_destroyed,
                        "subjects": len(refs),
                        "was": row["status"],
                        "case_notes_deleted": notes_deleted,
                    },
                )
        outcome.key_destroyed_at = datetime.now(UTC).isoformat()
        outcome.seconds_to_key_destruction = time.monotonic() - started
        if not await _kept_outside(conn, bucket, outcome, row):
            outcome.status = "in_progress"
            return outcome
        await _delete_what_can_be(conn, bucket, outcome, actor=actor)
    return outcome


async def _kept_outside(conn: Connection, bucket: ArchiveBucket, outcome: ErasureOutcome, row: asyncpg.Record) -> bool:
    """After the keys are destroyed in PostgreSQL: record the erasure in the bucket's erasure log, then destroy every
    copy of the person's keys (services/core/key_copies.py). False when the store did not let either be done (down,
    or an identity that may not write there, such as the console's): the request stays in progress, and the next
    retention run, which processes every open request, finishes it. An erasure is never reported done before both."""
    refs = outcome.subject_refs
    erased_at = await conn.fetchval(
        "SELECT max(erased_at) FROM erased_subjects WHERE subject_ref = ANY($1::text[])", refs
    )
    destroyed = await conn.fetch(
        "SELECT subject_ref, dek_id::text AS dek_id FROM shredded_keys WHERE request_ref = $1", outcome.request_ref
    )
    record = ErasureRecord(
        request_ref=outcome.request_ref,
        subject_refs=tuple(refs),
        keys=tuple((row["subject_ref"], row["dek_id"]) for row in destroyed),
        erased_at=erased_at or datetime.now(UTC),
        received_at=row["received_at"],
        deadline_at=row["deadline_at"],
    )
    try:
        await ErasureLog(bucket).append(record)
        await KeyCopies(bucket).purge(conn, [dek_id for _, dek_id in record.keys])
    except (CopiesRemain, DependencyUnavailable, DataRefused, ClientError, BotoCoreError) as exc:
        log.warning(
            "erasure %s: the keys are destroyed, but %s kept it from finishing: it stays in progress until the "
            "next retention run",
            outcome.request_ref,
            type(exc).__name__,
        )
        return False
    return True


async def _delete_what_can_be(conn: Connection, bucket: ArchiveBucket, outcome: ErasureOutcome, *, actor: str) -> None:
    """After the keys are gone: delete the objects, media and index rows that can go; complete the request."""
    refs, request_ref = outcome.subject_refs, outcome.request_ref
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
    destroyed = await conn.fetch(
        "SELECT subject_ref, dek_id::text AS dek_id FROM shredded_keys WHERE request_ref = $1 ORDER BY dek_id",
        request_ref,
    )
    erasure = KeysDestroyed(
        request_ref=request_ref,
        keys=tuple((row["subject_ref"], row["dek_id"]) for row in destroyed),
        erased_at=outcome.key_destroyed_at or datetime.now(UTC).isoformat(),
    )
    deletions = tuple(sorted(Deletion(key=key, cause="erasure", request_ref=request_ref) for key in set(gone)))
    async with conn.transaction():
        # The hash chain records the keys destroyed (the ciphertext stays, unreadable) and the objects deleted, so
        # that `wa-archive verify` tells them from tampering. A crash before the commit leaves the request in
        # progress: the next run deletes nothing new (the objects are gone) and records them then.
        await Chain(bucket, can_list=True).append(conn, GOVERNANCE_STREAM, Change(deleted=deletions, erasure=erasure))
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


async def open_requests(
    conn: ConnectionOrPool,
    *,
    blocked_by: Sequence[str] | None = None,
    statuses: Sequence[ErasureStatus] = OPEN_STATUSES,
) -> list[str]:
    """The refs of the open requests (or of those in ``statuses``), nearest deadline first (only those a hold of
    ``blocked_by`` blocked)."""
    rows = await conn.fetch(
        "SELECT request_ref FROM erasure_requests WHERE status = ANY($1::text[])"
        " AND ($2::text[] IS NULL OR blocked_by && $2::text[]) ORDER BY deadline_at, request_ref",
        list(statuses),
        None if blocked_by is None else list(blocked_by),
    )
    return [row["request_ref"] for row in rows]


async def process_open_requests(
    pool: asyncpg.Pool,
    keyring: Keyring,
    bucket: ArchiveBucket,
    *,
    actor: str,
    blocked_by: Sequence[str] | None = None,
    statuses: Sequence[ErasureStatus] = OPEN_STATUSES,
) -> list[ErasureOutcome]:
    """Carry out every open request (or those blocked by one of the holds ``blocked_by``, just released): the
    ones still held stay blocked, the others complete. The scheduled retention run and a hold's release call it;
    the retention service also finishes, every few seconds, those left ``in_progress`` (``statuses``): their keys
    are destroyed, but an identity that may not write the bucket (the console's) could not finish them."""
    refs = await open_requests(pool, blocked_by=blocked_by, statuses=statuses)
    outcomes: list[ErasureOutcome] = []
    for request_ref in refs:
        outcome = await carry_out(pool, keyring, bucket, request_ref, actor=actor)
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
