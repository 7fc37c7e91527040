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
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import datetime

import asyncpg

from services.core.crypto import CachedDek, DekCache, KekProvider, WrappedDek, new_dek

Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy


class KeyShredded(Exception):
    """A person of the batch was erased meanwhile (a key it used was destroyed, or an erasure was recorded): the
    batch must be screened and sealed again."""

    def __init__(self, subject_refs: Iterable[str]) -> None:
        self.subject_refs = sorted(subject_refs)
        super().__init__(f"{len(self.subject_refs)} subject key(s) were shredded during the batch")


class Keyring:
    def __init__(self, pool: asyncpg.Pool, kek: KekProvider, cache: DekCache) -> None:
        self.pool = pool
        self.kek = kek
        self.cache = cache

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
            rows = await conn.fetch(
                "SELECT subject_ref, dek_id::text AS dek_id, kek_id, wrapped_dek FROM subject_keys "
                "WHERE subject_ref = ANY($1::text[])",
                missing,
            )
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
                rows = await conn.fetch(
                    "SELECT subject_ref, dek_id::text AS dek_id, kek_id, wrapped_dek FROM subject_keys "
                    "WHERE subject_ref = ANY($1::text[])",
                    new_refs,
                )
                for row in rows:
                    found[row["subject_ref"]] = self._unwrap(
                        row["subject_ref"], row["dek_id"], row["kek_id"], row["wrapped_dek"]
                    )
        return found

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

    async def _drop_suppressed(self, conn: Connection, subject_refs: list[str]) -> None:
        """A key row whose dek_id is on the suppression list came back from a backup: delete it again."""
        await conn.execute(
            "DELETE FROM subject_keys k USING shredded_keys s "
            "WHERE k.dek_id = s.dek_id AND k.subject_ref = ANY($1::text[])",
            subject_refs,
        )


async def erasures_of(conn: Connection | asyncpg.Pool, subject_refs: Iterable[str]) -> dict[str, datetime]:
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
