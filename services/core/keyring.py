"""The keyring: one data-encryption key (DEK) per subject, wrapped by the KEK and stored in PostgreSQL.

Contract:
- :meth:`Keyring.keys_for_writing` returns a live DEK for each subject_ref, creating (and wrapping, and storing)
  one when the subject has none — also after an erasure, so a person who writes again gets a new key.
- :meth:`Keyring.key_for_reading` returns the DEK that sealed a record, or None when it was shredded.
- A DEK listed in ``shredded_keys`` (the suppression list) is never used again, even if a restored backup of
  ``subject_keys`` brought its row back: such a row is deleted on sight.
- :meth:`Keyring.confirm_live` runs inside the transaction that indexes a batch and locks the subjects' key rows
  (FOR SHARE) so that a concurrent erasure either happens before (the batch is screened again: the person's
  records from before the erasure are dropped, never re-sealed) or after (the shredding then covers the batch).
- :func:`record_erasure` and :func:`erasures_of` keep and read when each pseudonym was erased (erased_subjects).
- The in-process cache is only a cache: :meth:`shred` marks the key shredded in it, and a key seen shredded is
  refused by the cache forever after.
- With ``copies``, every key handed out for writing has its copy outside PostgreSQL first, the new keys of a call
  in one bundle (services/core/key_copies.py).
- KEK retirement (services/core/kek_retirement.py) moves every wrapped DEK under one KEK, batch by batch
  (:meth:`Keyring.rewrap_batch`), while archivers and readers keep working; :meth:`Keyring.keys_by_kek` says how
  many keys each KEK wraps.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.core.crypto import CachedDek, DekCache, KekProvider, WrappedDek, new_dek
from services.core.db import Connection, ConnectionOrPool
from services.core.key_copies import KeyCopies
from services.core.refusals import InvalidRequest

KEY_ROWS_SQL = (
    "SELECT k.subject_ref, k.dek_id::text AS dek_id, k.kek_id, k.wrapped_dek, k.created_at, EXISTS (SELECT 1 FROM"
    " key_copy_members m WHERE m.dek_id = k.dek_id AND m.kek_id = k.kek_id) AS copied FROM subject_keys k"
    " WHERE k.subject_ref = ANY($1::text[])"
)


class KeyShredded(Exception):
    """A person of the batch was erased meanwhile (a key it used was destroyed, or an erasure was recorded): the
    batch must be screened and sealed again."""

    def __init__(self, subject_refs: Iterable[str]) -> None:
        self.subject_refs = sorted(subject_refs)
        super().__init__(f"{len(self.subject_refs)} subject key(s) were shredded during the batch")


class RewrapRefused(InvalidRequest):
    """A rewrap that cannot be done as asked (the target KEK, or a KEK holding keys, is not configured); nothing
    was changed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RewrapBatch:
    """What one :meth:`Keyring.rewrap_batch` did with its page of the key space."""

    walked: int  # key rows of the page
    rewrapped: int  # keys now wrapped by the target KEK
    suppressed_dropped: int  # rows of shredded keys (back from a restored backup) deleted instead
    skipped_locked: int  # rows to rewrap that another transaction held: a later sweep takes them
    last_ref: str | None  # the keyset cursor for the next page; None when the page was empty


class Keyring:
    """The subject keys of one archive. With ``copies`` (the archiver, and retention for rewraps and recovery),
    every key handed out for writing has its copy outside PostgreSQL first (services/core/key_copies.py); a
    keyring that only reads (the console) has none."""

    def __init__(
        self, pool: asyncpg.Pool, kek: KekProvider, cache: DekCache, *, copies: KeyCopies | None = None
    ) -> None:
        self.pool = pool
        self.kek = kek
        self.cache = cache
        self.copies = copies

    def _unwrap(self, subject_ref: str, dek_id: str, kek_id: str, blob: bytes) -> CachedDek:
        dek = self.kek.unwrap(WrappedDek(kek_id=kek_id, blob=bytes(blob)), subject_ref=subject_ref)
        return self.cache.put(subject_ref, dek_id, dek)

    async def keys_for_writing(self, subject_refs: Iterable[str]) -> dict[str, CachedDek]:
        wanted = set(subject_refs)
        found: dict[str, CachedDek] = {}
        for ref in wanted:
            cached = self.cache.get(ref)
            if cached is not None:
                found[ref] = cached
        missing = sorted(wanted - found.keys())
        if not missing:
            return found
        async with self.pool.acquire() as conn:
            await self._drop_suppressed(conn, missing)
            rows = await conn.fetch(KEY_ROWS_SQL, missing)
            uncopied = [row for row in rows if not row["copied"]]
            for row in rows:
                found[row["subject_ref"]] = self._unwrap(
                    row["subject_ref"], row["dek_id"], row["kek_id"], row["wrapped_dek"]
                )
            new_refs = [ref for ref in missing if ref not in found]
            if new_refs:
                fresh = []
                for ref in new_refs:
                    wrapped = self.kek.wrap(new_dek(), subject_ref=ref)
                    fresh.append((ref, str(uuid.uuid4()), wrapped.kek_id, wrapped.blob))
                # Another archiver may have created some meanwhile: keep theirs (ON CONFLICT DO NOTHING) and
                # read back whatever is stored.
                await conn.executemany(
                    "INSERT INTO subject_keys (subject_ref, dek_id, kek_id, wrapped_dek) VALUES ($1, $2::uuid, $3, $4) "
                    "ON CONFLICT (subject_ref) DO NOTHING",
                    fresh,
                )
                rows = await conn.fetch(KEY_ROWS_SQL, new_refs)
                uncopied += [row for row in rows if not row["copied"]]
                for row in rows:
                    found[row["subject_ref"]] = self._unwrap(
                        row["subject_ref"], row["dek_id"], row["kek_id"], row["wrapped_dek"]
                    )
            if uncopied and self.copies is not None:
                # Before any record is sealed with these keys: a key the database alone holds is lost with it.
                # One bundle for all the new people of the batch.
                await self.copies.copy(conn, uncopied)
        return found

    async def copy_pending(self, *, limit: int = 1000) -> int:
        """Copy, in one bundle, up to ``limit`` keys that have no copy under their current KEK yet (keys from before
        copies existed, a copy a crash interrupted, keys a rewrap moved under another KEK); returns how many (0:
        none is left, or those left were deleted meanwhile). Needs ``copies``."""
        if self.copies is None:
            raise ValueError("this keyring has no key copies configured")
        async with self.pool.acquire() as conn:
            return await self.copies.copy(conn, await self.copies.pending(conn, limit=limit))

    async def key_for_reading(self, subject_ref: str, dek_id: str) -> CachedDek | None:
        cached = self.cache.get(subject_ref)
        if cached is not None and cached.dek_id == dek_id:
            return cached
        async with self.pool.acquire() as conn:
            await self._drop_suppressed(conn, [subject_ref])
            row = await conn.fetchrow(
                "SELECT kek_id, wrapped_dek FROM subject_keys WHERE subject_ref = $1 AND dek_id = $2::uuid",
                subject_ref,
                dek_id,
            )
        if row is None:
            return None
        return self._unwrap(subject_ref, dek_id, row["kek_id"], row["wrapped_dek"])

    async def live_key(self, subject_ref: str) -> CachedDek | None:
        """The subject's current DEK, or None when they have none (never archived under this pseudonym, or
        erased). Never creates one: for sealing what an operator writes about a person (a case note), which must
        go with the person's own records, and by identities that may not create keys (the console)."""
        async with self.pool.acquire() as conn:
            await self._drop_suppressed(conn, [subject_ref])
            row = await conn.fetchrow(
                "SELECT dek_id::text AS dek_id, kek_id, wrapped_dek FROM subject_keys WHERE subject_ref = $1",
                subject_ref,
            )
        if row is None:
            return None
        cached = self.cache.get(subject_ref)
        if cached is not None and cached.dek_id == row["dek_id"]:
            return cached
        return self._unwrap(subject_ref, row["dek_id"], row["kek_id"], row["wrapped_dek"])

    async def erasures(self, subject_refs: Iterable[str]) -> dict[str, datetime]:
        """When each of these pseudonyms was erased, for those that were (erased_subjects)."""
        return await erasures_of(self.pool, subject_refs)

    async def confirm_live(
        self, conn: Connection, used: Mapping[str, str], erased: Mapping[str, datetime], people: Iterable[str]
    ) -> None:
        """Inside the indexing transaction: lock the key rows of ``used`` ({subject_ref: dek_id}) and raise
        KeyShredded (after forgetting them) if any is gone or replaced, or if one of ``people`` (the pseudonyms
        the batch was screened against, with the erasures ``erased`` it saw) was erased since. An erasure that
        starts after this check waits for the lock, and then shreds the very keys the batch used."""
        if not used:
            return
        rows = await conn.fetch(
            "SELECT subject_ref, dek_id::text AS dek_id FROM subject_keys WHERE subject_ref = ANY($1::text[]) "
            "FOR SHARE",
            list(used),
        )
        live = {row["subject_ref"]: row["dek_id"] for row in rows}
        gone = [ref for ref, dek_id in used.items() if live.get(ref) != dek_id]
        if gone:
            for ref in gone:
                self.cache.mark_shredded(ref, used[ref])
            raise KeyShredded(gone)
        now_erased = await erasures_of(conn, people)
        newly = sorted(ref for ref, at in now_erased.items() if erased.get(ref) != at)
        if newly:
            raise KeyShredded(newly)

    async def shred(self, conn: Connection, subject_ref: str, request_ref: str | None) -> str | None:
        """Destroy the subject's DEK (in the caller's transaction) and list it as suppressed; returns the dek_id
        destroyed, or None when the subject had no key."""
        dek_id: str | None = await conn.fetchval(
            "DELETE FROM subject_keys WHERE subject_ref = $1 RETURNING dek_id::text", subject_ref
        )
        if dek_id is None:
            return None
        await conn.execute(
            "INSERT INTO shredded_keys (dek_id, subject_ref, request_ref) VALUES ($1::uuid, $2, $3) "
            "ON CONFLICT (dek_id) DO NOTHING",
            dek_id,
            subject_ref,
            request_ref,
        )
        self.cache.mark_shredded(subject_ref, dek_id)
        return dek_id

    async def keys_by_kek(self) -> dict[str, int]:
        """How many subject keys each KEK id wraps, as stored now."""
        rows = await self.pool.fetch("SELECT kek_id, count(*) AS keys FROM subject_keys GROUP BY kek_id")
        return {row["kek_id"]: row["keys"] for row in rows}

    async def rewrap_batch(self, to_kek_id: str, *, after: str, limit: int) -> RewrapBatch:
        """In one transaction: take the page of the next ``limit`` key rows after ``after`` by subject_ref (keyset
        pagination on the primary key), lock those of them not yet under ``to_kek_id`` and rewrap each (same
        dek_id, same DEK).

        The page is walked whatever KEK its rows are under, so that a batch costs an index range of ``limit`` rows
        even when the table's statistics are stale: with a filter on kek_id in the paginating query, PostgreSQL
        sorted the whole table for every batch once ANALYZE had seen most rows under the target (bench/rewrap.py).

        Concurrency: rows are locked ``FOR UPDATE SKIP LOCKED``. A row an archiver holds ``FOR SHARE`` while it
        indexes a batch, or an erasure is deleting, is skipped (counted; a later sweep of :func:`rewrap_keys` takes
        it; a deleted one is simply gone); an erasure that comes after the lock waits for the commit and then
        deletes the rewrapped row, which it finds by subject_ref as before. Keys an archiver creates meanwhile are
        inserted under its current KEK. Readers see each row whole, under either KEK (both must be configured),
        and a DEK already cached stays valid: only its wrapping changes. Nothing is inserted: a shredded key
        cannot come back through a rewrap, and a row whose dek_id is on the suppression list (a restored backup)
        is deleted, as every keyring read does.

        Raises UnknownKek when a locked row is wrapped by a KEK this provider lacks, RecordTampered when a
        wrapped DEK does not authenticate; the batch then rolls back whole.
        """
        async with self.pool.acquire() as conn, conn.transaction():
            page = await conn.fetch(
                "SELECT subject_ref, kek_id FROM subject_keys WHERE subject_ref > $1 ORDER BY subject_ref LIMIT $2",
                after,
                limit,
            )
            wanted = [row["subject_ref"] for row in page if row["kek_id"] != to_kek_id]
            rows = []
            if wanted:
                rows = await conn.fetch(
                    "SELECT k.subject_ref, k.dek_id::text AS dek_id, k.kek_id, k.wrapped_dek,"
                    " s.dek_id IS NOT NULL AS suppressed"
                    " FROM subject_keys k LEFT JOIN shredded_keys s ON s.dek_id = k.dek_id"
                    " WHERE k.subject_ref = ANY($1::text[]) AND k.kek_id <> $2"
                    " FOR UPDATE OF k SKIP LOCKED",
                    wanted,
                    to_kek_id,
                )
            suppressed = [row["subject_ref"] for row in rows if row["suppressed"]]
            moved: list[tuple[str, str, bytes]] = []
            for row in rows:
                if row["suppressed"]:
                    continue
                wrapped = WrappedDek(kek_id=row["kek_id"], blob=bytes(row["wrapped_dek"]))
                again = self.kek.rewrap(wrapped, subject_ref=row["subject_ref"], to_kek_id=to_kek_id)
                moved.append((row["subject_ref"], row["dek_id"], again.blob))
            if suppressed:
                await self._drop_suppressed(conn, suppressed)
            if moved:
                await conn.execute(
                    "UPDATE subject_keys AS k SET kek_id = $1, wrapped_dek = v.blob"
                    " FROM unnest($2::text[], $3::uuid[], $4::bytea[]) AS v(subject_ref, dek_id, blob)"
                    " WHERE k.subject_ref = v.subject_ref AND k.dek_id = v.dek_id",
                    to_kek_id,
                    [ref for ref, _, _ in moved],
                    [dek_id for _, dek_id, _ in moved],
                    [blob for _, _, blob in moved],
                )
        # A row of `wanted` missing from `rows` was locked, or deleted or rewrapped by someone else meanwhile.
        return RewrapBatch(
            walked=len(page),
            rewrapped=len(moved),
            suppressed_dropped=len(suppressed),
            skipped_locked=len(wanted) - len(rows),
            last_ref=page[-1]["subject_ref"] if page else None,
        )

    async def _drop_suppressed(self, conn: Connection, subject_refs: list[str]) -> None:
        """A key row whose dek_id is on the suppression list came back from a backup: delete it again."""
        await conn.execute(
            "DELETE FROM subject_keys k USING shredded_keys s "
            "WHERE k.dek_id = s.dek_id AND k.subject_ref = ANY($1::text[])",
            subject_refs,
        )


async def erasures_of(conn: ConnectionOrPool, subject_refs: Iterable[str]) -> dict[str, datetime]:
    """{subject_ref: erased_at} of the erased ones among ``subject_refs``."""
    refs = sorted(set(subject_refs))
    if not refs:
        return {}
    rows = await conn.fetch(
        "SELECT subject_ref, erased_at FROM erased_subjects WHERE subject_ref = ANY($1::text[])", refs
    )
    return {row["subject_ref"]: row["erased_at"] for row in rows}


async def record_erasure(conn: Connection, subject_refs: Iterable[str], request_ref: str) -> None:
    """In the shredding transaction: every pseudonym of the person is erased as of now (the latest erasure wins).

    From its commit on, the archiver drops their records from before it (docs/GDPR.md, "Erasure is final")."""
    await conn.execute(
        "INSERT INTO erased_subjects (subject_ref, erased_at, request_ref) "
        "SELECT ref, clock_timestamp(), $2 FROM unnest($1::text[]) AS ref "
        "ON CONFLICT (subject_ref) DO UPDATE SET erased_at = greatest(erased_subjects.erased_at, EXCLUDED.erased_at),"
        " request_ref = EXCLUDED.request_ref",
        sorted(set(subject_refs)),
        request_ref,
    )
