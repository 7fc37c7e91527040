"""Recovery after PostgreSQL was lost or restored to an earlier point: the erasures and the keys kept outside it are
brought back in, erasures first.

Contract:
- :func:`reapply_erasures` compares the database with the erasure log (services/governance/erasure_log.py) and,
  for every recorded erasure the database does not fully know, destroys again in one transaction per erasure what
  a restore brought back: the keys it destroyed (and any key of those pseudonyms created before it), their index
  rows and keyword tokens; it lists the keys on the suppression list, the pseudonyms as erased at the recorded
  moment, and the request as completed. Idempotent. The retention service and the console run it at start-up
  before they serve a read; ``wa-archive recover`` runs it first.
- :func:`restore_keys` reads every object of the key copies (services/core/key_copies.py), inserts every key the
  database lacks — never one on the suppression list, nor one of an erased pseudonym from before its erasure —
  and makes ``key_copy_members`` say what the bucket holds; it says how many keys it restored and how many it
  left out. It needs the schema owner's login: no service may create a key but the archiver. The copies of erased
  keys are then destroyed by :meth:`services.core.key_copies.KeyCopies.purge`.
- Neither ever deletes a key or an index row of someone who is not erased.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg
import orjson

from services.core.audit import write_audit
from services.core.db import Connection
from services.core.index import binary_keys
from services.core.key_copies import KeyCopies, KeyCopy, UnreadableCopy
from services.governance.erasure_log import ErasureLog, ErasureRecord, UnreadableRecord

log = logging.getLogger("wa_archive.recovery")

RESTORE_BATCH = 1000
# The audit log's actor of an erasure re-applied by a service at start-up.
RECOVERY_ACTOR = "recovery"


@dataclass(kw_only=True)
class RecoveryReport:
    """Counts only (no pseudonym): it goes to the audit log and the terminal as is."""

    erasures_seen: int = 0  # records read (those of requests the database holds as completed are only listed)
    erasures_reapplied: int = 0
    keys_destroyed_again: int = 0
    unreadable_erasure_records: int = 0
    key_copies_seen: int = 0
    key_copy_objects_seen: int = 0
    key_copy_objects_purged: int = 0  # objects holding a copy of an erased key, deleted (the others' keys copied first)
    keys_restored: int = 0
    keys_present: int = 0  # the database already held the key
    keys_left_out_erased: int = 0  # suppressed, or of an erased pseudonym from before its erasure
    keys_conflicting: int = 0  # the database holds another key for that pseudonym: it is kept
    unreadable_key_copies: int = 0
    keys_copied: int = 0  # keys the database held without a copy outside it, copied
    chain_streams: int = 0  # hash-chain streams whose head was set from the bucket (services/evidence/chain.py)
    index: dict[str, object] = field(default_factory=dict)  # what rebuilding the index did (RebuildReport)
    seconds: dict[str, float] = field(default_factory=dict)  # per step

    def to_json(self) -> dict[str, object]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


async def unknown_erasures(pool: asyncpg.Pool, records: list[ErasureRecord]) -> list[ErasureRecord]:
    """The records the database does not fully know: a key not on the suppression list, a pseudonym not erased as
    of the recorded moment, or the request not completed."""
    if not records:
        return []
    dek_ids = sorted({dek_id for record in records for _, dek_id in record.keys})
    refs = sorted({ref for record in records for ref in record.subject_refs})
    async with pool.acquire() as conn:
        suppressed = {
            row["dek_id"]
            for row in await conn.fetch(
                "SELECT dek_id::text AS dek_id FROM shredded_keys WHERE dek_id = ANY($1::uuid[])", dek_ids
            )
        }
        erased: dict[str, datetime] = {
            row["subject_ref"]: row["erased_at"]
            for row in await conn.fetch(
                "SELECT subject_ref, erased_at FROM erased_subjects WHERE subject_ref = ANY($1::text[])", refs
            )
        }
        completed = {
            row["request_ref"]
            for row in await conn.fetch(
                "SELECT request_ref FROM erasure_requests WHERE request_ref = ANY($1::text[]) AND status = 'completed'",
                [record.request_ref for record in records],
            )
        }

    def known(record: ErasureRecord) -> bool:
        return (
            record.request_ref in completed
            and all(dek_id in suppressed for _, dek_id in record.keys)
            and all(ref in erased and erased[ref] >= record.erased_at for ref in record.subject_refs)
        )

    return [record for record in records if not known(record)]


async def _reapply(conn: Connection, record: ErasureRecord, *, actor: str) -> int:
    """One erasure again, in the caller's transaction; returns how many key rows it deleted."""
    refs = sorted(record.subject_refs)
    dek_ids = sorted({dek_id for _, dek_id in record.keys})
    gone = await conn.fetch(
        "DELETE FROM subject_keys WHERE subject_ref = ANY($1::text[])"
        " AND (dek_id = ANY($2::uuid[]) OR created_at <= $3) RETURNING subject_ref, dek_id::text AS dek_id",
        refs,
        dek_ids,
        record.erased_at,
    )
    pairs = {*record.keys, *((row["subject_ref"], row["dek_id"]) for row in gone)}
    await conn.executemany(
        "INSERT INTO shredded_keys (dek_id, subject_ref, shredded_at, request_ref) VALUES ($1::uuid, $2, $3, $4)"
        " ON CONFLICT (dek_id) DO NOTHING",
        [(dek_id, ref, record.erased_at, record.request_ref) for ref, dek_id in sorted(pairs)],
    )
    await conn.execute(
        "INSERT INTO erased_subjects (subject_ref, erased_at, request_ref) SELECT ref, $2, $3 FROM unnest($1::text[])"
        " AS ref ON CONFLICT (subject_ref) DO UPDATE SET erased_at = greatest(erased_subjects.erased_at,"
        " EXCLUDED.erased_at), request_ref = CASE WHEN EXCLUDED.erased_at > erased_subjects.erased_at"
        " THEN EXCLUDED.request_ref ELSE erased_subjects.request_ref END",
        refs,
        record.erased_at,
        record.request_ref,
    )
    destroyed = sorted({dek_id for _, dek_id in pairs})
    await conn.execute(
        "DELETE FROM archived_events WHERE subject_ref = ANY($1::bytea[]) AND dek_id = ANY($2::uuid[])",
        binary_keys(refs),
        destroyed,
    )
    await conn.execute(
        "DELETE FROM archived_media WHERE subject_ref = ANY($1::bytea[]) AND archived_at <= $2",
        binary_keys(refs),
        record.erased_at,
    )
    await conn.execute("DELETE FROM keyword_index WHERE subject_ref = ANY($1::bytea[])", binary_keys(refs))
    # Case notes sealed under the destroyed keys (a restore brought them back): unreadable, and deleted as at first.
    await conn.execute(
        "DELETE FROM case_notes WHERE subject_ref = ANY($1::text[]) AND dek_id = ANY($2::uuid[])", refs, destroyed
    )
    proof = {
        "request_ref": record.request_ref,
        "status": "completed",
        "subject_refs": refs,
        "keys_destroyed": destroyed,
        "key_destroyed_at": record.erased_at.isoformat(),
        "reapplied_from_erasure_log": True,
    }
    await conn.execute(
        "INSERT INTO erasure_requests (request_ref, subject_refs, received_at, deadline_at, status, completed_at,"
        " proof) VALUES ($1, $2::text[], $3, $4, 'completed', $5, $6::jsonb) ON CONFLICT (request_ref) DO UPDATE"
        " SET status = 'completed', completed_at = EXCLUDED.completed_at, proof = EXCLUDED.proof,"
        " subject_refs = EXCLUDED.subject_refs",
        record.request_ref,
        refs,
        record.received_at,
        record.deadline_at,
        record.erased_at,
        orjson.dumps(proof).decode(),
    )
    await write_audit(
        conn,
        actor=actor,
        action="erasure.reapplied",
        reason=record.request_ref,
        details={"subjects": len(refs), "keys": len(destroyed), "erased_at": record.erased_at.isoformat()},
    )
    return len(gone)


async def reapply_erasures(
    pool: asyncpg.Pool, erasure_log: ErasureLog, *, actor: str, report: RecoveryReport | None = None
) -> RecoveryReport:
    """Re-apply every recorded erasure the database does not fully know (see the module's contract). The copies
    of the keys they destroyed were destroyed before each erasure was reported done; ``wa-archive recover`` makes
    sure again (its ``copies`` step), after it has read what the bucket holds."""
    report = report or RecoveryReport()
    records: list[ErasureRecord] = []
    # A request the database holds as completed was completed after its keys were destroyed, in the same database:
    # its record is only listed, not read, so a start-up costs one listing when nothing was lost.
    completed = [
        row["request_ref"]
        for row in await pool.fetch("SELECT request_ref FROM erasure_requests WHERE status = 'completed'")
    ]
    async for found in erasure_log.scan(skip=completed):
        if isinstance(found, UnreadableRecord):
            report.unreadable_erasure_records += 1
            log.error("an object of the erasure log cannot be read (%s): it is left as it is", found)
            continue
        records.append(found)
    report.erasures_seen = len(records)
    for record in await unknown_erasures(pool, records):
        async with pool.acquire() as conn, conn.transaction():
            report.keys_destroyed_again += await _reapply(conn, record, actor=actor)
        report.erasures_reapplied += 1
    if report.erasures_reapplied:
        log.warning(
            "re-applied %d erasure(s) the database did not know (a restore to before them)", report.erasures_reapplied
        )
    return report


async def restore_keys(
    pool: asyncpg.Pool,
    copies: KeyCopies,
    *,
    report: RecoveryReport | None = None,
    progress: Callable[[int], None] | None = None,
) -> RecoveryReport:
    """Insert every key copy the database lacks and list what each object holds (see the module's contract);
    erasures must be re-applied first."""
    report = report or RecoveryReport()
    batch: list[KeyCopy] = []
    seen: list[str] = []
    started_ms = int(time.time() * 1000)

    async def flush() -> None:
        await _restore_batch(pool, batch, report)
        batch.clear()
        if progress:
            progress(report.key_copies_seen)

    async for scanned in copies.scan():
        seen.append(scanned.name)
        report.key_copy_objects_seen += 1
        if isinstance(scanned.copies, UnreadableCopy):
            report.unreadable_key_copies += 1
            log.error("an object of the key copies cannot be read (%s): it is left as it is", scanned.copies)
            continue
        report.key_copies_seen += len(scanned.copies)
        async with pool.acquire() as conn:
            await copies.list_members(conn, scanned.name, scanned.copies)
        batch.extend(scanned.copies)
        if len(batch) >= RESTORE_BATCH:
            await flush()
    if batch:
        await flush()
    async with pool.acquire() as conn:
        await copies.forget_missing(conn, seen, started_ms=started_ms)
    return report


async def _restore_batch(pool: asyncpg.Pool, batch: list[KeyCopy], report: RecoveryReport) -> None:
    async with pool.acquire() as conn, conn.transaction():
        refs = sorted({copy.subject_ref for copy in batch})
        suppressed = {
            row["dek_id"]
            for row in await conn.fetch(
                "SELECT dek_id::text AS dek_id FROM shredded_keys WHERE dek_id = ANY($1::uuid[])",
                [copy.dek_id for copy in batch],
            )
        }
        erased: dict[str, datetime] = {
            row["subject_ref"]: row["erased_at"]
            for row in await conn.fetch(
                "SELECT subject_ref, erased_at FROM erased_subjects WHERE subject_ref = ANY($1::text[])", refs
            )
        }
        present: dict[str, str] = {
            row["subject_ref"]: row["dek_id"]
            for row in await conn.fetch(
                "SELECT subject_ref, dek_id::text AS dek_id FROM subject_keys WHERE subject_ref = ANY($1::text[])",
                refs,
            )
        }
        wanted = []
        for copy in batch:
            erased_at = erased.get(copy.subject_ref)
            if copy.dek_id in suppressed or (erased_at is not None and copy.created_at <= erased_at):
                report.keys_left_out_erased += 1
            elif copy.subject_ref in present:
                if present[copy.subject_ref] == copy.dek_id:
                    report.keys_present += 1
                else:
                    report.keys_conflicting += 1
            else:
                wanted.append(copy)
                present[copy.subject_ref] = copy.dek_id
        await conn.executemany(
            "INSERT INTO subject_keys (subject_ref, dek_id, kek_id, wrapped_dek, created_at)"
            " VALUES ($1, $2::uuid, $3, $4, $5) ON CONFLICT (subject_ref) DO NOTHING",
            [(c.subject_ref, c.dek_id, c.kek_id, c.wrapped_dek, c.created_at) for c in wanted],
        )
        report.keys_restored += len(wanted)
