"""Copies of the data keys outside PostgreSQL, so that losing the database loses no key (docs/OPERATIONS.md,
"Recovery").

Every subject key (a DEK wrapped by a KEK, exactly as ``subject_keys`` holds it) is also written to the archive
bucket, without Object Lock, before any record sealed with it counts as archived
(:meth:`services.core.keyring.Keyring.keys_for_writing` copies it before it hands the key out). The keys new at the
same moment share one object, a *bundle* (``keys/<prefix>/b/<newest first>-<uuid>``): one PUT per batch of new
people, not one per person. An object holds pseudonyms and ids only, and the keys wrapped: worth nothing without
the KEK. ``key_copy_members`` says which object holds a copy of which key under which KEK; a key is copied when
a member matches its current row (a rewrap to another KEK makes it pending again).

Contract:
- :meth:`KeyCopies.copy` writes one bundle of the given key rows that still exist, holding them ``FOR KEY SHARE``
  from before the PUT until its members are committed: an erasure, which deletes the key rows, either comes
  before (the key is left out) or waits, and then finds the bundle among the members. A bundle whose members
  were not committed (a crash between the PUT and the commit) is found by :meth:`KeyCopies.sync_members`.
- :meth:`KeyCopies.purge` removes every object holding a copy of a key on the suppression list (``shredded_keys``):
  first the other keys of those objects are written again in a new bundle (never left without a copy), then every
  version of the objects is deleted (delete markers included), then their members. It raises
  :class:`CopiesRemain` when the store refused any deletion: an erasure is not done until the copies are gone.
  Before it trusts the members it checks that the bucket holds no bundle newer than the newest it knows (a
  database restored to an earlier point, or an uncommitted bundle): if it does, it resyncs them first.
- :meth:`KeyCopies.sync_members` reads every object back and makes the members say what the bucket holds;
  :meth:`KeyCopies.scan` yields every copy, for ``wa-archive recover``.
- :meth:`KeyCopies.collect` deletes the objects whose every copy is of an erased key or superseded (under a KEK a
  rewrap moved the key from, once it has a copy under the new one): what lets an old KEK go for the copies too. An
  object holding a key the database does not know is kept (a restore to an earlier point: ``recover`` needs it).

Where a copy can still linger, and what bounds it, is written in docs/GDPR.md ("Key copies").
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg
import orjson

from services.core.bucket import ArchiveBucket
from services.core.db import Connection

log = logging.getLogger("wa_archive.key_copies")

COPY_FORMAT = "wa-archive key copy 1"  # one key per object (before bundles): still read, and destroyed
BUNDLE_FORMAT = "wa-archive key copies 2"
COPIES_ROOT = "keys"
BUNDLES = "b/"
# Bundle names sort newest first: this many milliseconds minus the time of writing, zero-padded.
_NEWEST_FIRST = 10**13 - 1
# Objects read at once by a scan.
READ_CONCURRENCY = 16
# A resync keeps the members of bundles written this long before it started (clocks of hosts differ).
SYNC_CLOCK_MARGIN_MS = 10 * 60 * 1000


class CopiesRemain(Exception):
    """The store refused to delete some versions of key copies; the erasure is not done."""

    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = refused
        codes = sorted(set(refused.values()))
        super().__init__(f"{len(refused)} key copy object(s) could not be deleted ({', '.join(codes)})")


class UnreadableCopy(ValueError):
    """An object under the key copies' folder that this version cannot read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCopy:
    """One subject key as stored in PostgreSQL: pseudonym, key id, the KEK that wraps it and the wrapped bytes."""

    subject_ref: str
    dek_id: str
    kek_id: str
    wrapped_dek: bytes
    created_at: datetime

    def to_json(self) -> dict[str, str]:
        return {
            "subject_ref": self.subject_ref,
            "dek_id": self.dek_id,
            "kek_id": self.kek_id,
            "wrapped_dek": base64.b64encode(self.wrapped_dek).decode(),
            "created_at": self.created_at.isoformat(),
        }

    @classmethod
    def from_json(cls, fields: dict[str, object]) -> KeyCopy:
        return cls(
            subject_ref=str(fields["subject_ref"]),
            dek_id=str(fields["dek_id"]),
            kek_id=str(fields["kek_id"]),
            wrapped_dek=base64.b64decode(str(fields["wrapped_dek"]), validate=True),
            created_at=datetime.fromisoformat(str(fields["created_at"])),
        )

    @classmethod
    def from_row(cls, row: asyncpg.Record) -> KeyCopy:
        return cls(
            subject_ref=row["subject_ref"],
            dek_id=row["dek_id"],
            kek_id=row["kek_id"],
            wrapped_dek=bytes(row["wrapped_dek"]),
            created_at=row["created_at"],
        )


def bundle_bytes(copies: Sequence[KeyCopy]) -> bytes:
    return orjson.dumps({"format": BUNDLE_FORMAT, "copies": [copy.to_json() for copy in copies]})


def read_copies(body: bytes) -> list[KeyCopy]:
    """The copies an object holds: a bundle, or a single copy of the first format. Raises UnreadableCopy."""
    try:
        fields = orjson.loads(body)
        if not isinstance(fields, dict):
            raise UnreadableCopy("not a key copy object")
        if fields.get("format") == BUNDLE_FORMAT:
            return [KeyCopy.from_json(item) for item in fields["copies"]]
        if fields.get("format") == COPY_FORMAT:
            return [KeyCopy.from_json(fields)]
        raise UnreadableCopy(f"not a key copy object of format {BUNDLE_FORMAT!r} or {COPY_FORMAT!r}")
    except UnreadableCopy:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UnreadableCopy(f"unreadable key copy: {type(exc).__name__}") from None


def new_bundle_name(now_ms: int | None = None) -> str:
    """``b/<13 digits>-<uuid>``: names sort newest first, so one short listing finds the newest bundle."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{BUNDLES}{_NEWEST_FIRST - now_ms:013d}-{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class ScannedObject:
    """One object of the key copies, read back: its name (relative to the copies' root) and its copies."""

    name: str
    copies: list[KeyCopy] | UnreadableCopy


class KeyCopies:
    """The key copies of one archive (its bucket and prefix)."""

    def __init__(self, bucket: ArchiveBucket) -> None:
        self.bucket = bucket
        self.root = f"{COPIES_ROOT}/{bucket.settings.prefix}/"

    def key(self, name: str) -> str:
        return f"{self.root}{name}"

    async def copy(self, conn: Connection, rows: Sequence[asyncpg.Record]) -> int:
        """Write one bundle of these key rows (subject_ref, dek_id, kek_id, wrapped_dek, created_at) as they are
        stored now; returns how many keys it holds (those deleted or rewrapped meanwhile are left out). See the
        module's contract for the locking."""
        if not rows:
            return 0
        async with conn.transaction():
            held = await conn.fetch(
                "SELECT k.subject_ref, k.dek_id::text AS dek_id, k.kek_id, k.wrapped_dek, k.created_at"
                " FROM subject_keys k JOIN unnest($1::text[], $2::uuid[], $3::text[]) AS v(subject_ref, dek_id, kek_id)"
                " ON k.subject_ref = v.subject_ref AND k.dek_id = v.dek_id AND k.kek_id = v.kek_id"
                " ORDER BY k.subject_ref FOR KEY SHARE OF k",
                [row["subject_ref"] for row in rows],
                [row["dek_id"] for row in rows],
                [row["kek_id"] for row in rows],
            )
            if not held:
                return 0
            name = new_bundle_name()
            await self.bucket.put(self.key(name), bundle_bytes([KeyCopy.from_row(row) for row in held]), locked=False)
            await conn.execute(
                "INSERT INTO key_copy_members (dek_id, object, subject_ref, kek_id)"
                " SELECT dek_id, $1, subject_ref, kek_id FROM unnest($2::uuid[], $3::text[], $4::text[])"
                " AS v(dek_id, subject_ref, kek_id) ON CONFLICT DO NOTHING",
                name,
                [row["dek_id"] for row in held],
                [row["subject_ref"] for row in held],
                [row["kek_id"] for row in held],
            )
        return len(held)

    async def pending(self, conn: Connection, *, limit: int) -> list[asyncpg.Record]:
        """Up to ``limit`` key rows with no copy under their current KEK (keys from before copies existed, a copy
        a crash interrupted, keys a rewrap moved under another KEK)."""
        return list(
            await conn.fetch(
                "SELECT k.subject_ref, k.dek_id::text AS dek_id, k.kek_id, k.wrapped_dek, k.created_at"
                " FROM subject_keys k WHERE NOT EXISTS (SELECT 1 FROM key_copy_members m"
                " WHERE m.dek_id = k.dek_id AND m.kek_id = k.kek_id) ORDER BY k.subject_ref LIMIT $1",
                limit,
            )
        )

    async def purge(self, conn: Connection, dek_ids: Iterable[str] | None = None) -> int:
        """Remove every object holding a copy of a suppressed key (of ``dek_ids`` only, when given: an erasure's
        own keys); returns how many objects are gone. See the module's contract; raises :class:`CopiesRemain`
        when the store refused some (call again: every step is idempotent)."""
        if await self.behind(conn):
            log.warning("the bucket holds key copies the database does not list (a restore?): reading them all first")
            await self.sync_members(conn)
        wanted = None if dek_ids is None else sorted(set(dek_ids))
        objects = [
            row["object"]
            for row in await conn.fetch(
                "SELECT DISTINCT m.object FROM key_copy_members m JOIN shredded_keys s ON s.dek_id = m.dek_id"
                " WHERE $1::uuid[] IS NULL OR m.dek_id = ANY($1::uuid[]) ORDER BY m.object",
                wanted,
            )
        ]
        if wanted is not None:
            # A copy of the first format, one object per key, that an archiver of the previous build wrote during a
            # rolling upgrade is listed nowhere: its name is known.
            first_format = await conn.fetch(
                "SELECT subject_ref || '/' || dek_id::text AS object FROM shredded_keys WHERE dek_id = ANY($1::uuid[])",
                wanted,
            )
            objects = sorted({*objects, *(row["object"] for row in first_format)})
        if not objects:
            return 0
        # The others' keys first, in a new bundle of their own: a key must never be left without a copy.
        await self.copy(
            conn,
            await conn.fetch(
                "SELECT DISTINCT k.subject_ref, k.dek_id::text AS dek_id, k.kek_id, k.wrapped_dek, k.created_at"
                " FROM key_copy_members m JOIN subject_keys k"
                " ON k.dek_id = m.dek_id AND k.kek_id = m.kek_id WHERE m.object = ANY($1::text[])"
                " AND NOT EXISTS (SELECT 1 FROM key_copy_members o WHERE o.dek_id = k.dek_id"
                " AND o.kek_id = k.kek_id AND NOT o.object = ANY($1::text[]))"
                # A suppressed key whose row a restored backup brought back is never copied again.
                " AND NOT EXISTS (SELECT 1 FROM shredded_keys s WHERE s.dek_id = k.dek_id)",
                objects,
            ),
        )
        return await self._delete(conn, objects)

    async def collect(self, conn: Connection) -> int:
        """Delete the objects every copy of which is either of a suppressed key or superseded: its key is stored
        now under another KEK and has a copy under that KEK in another object (keys without one are copied
        first). Returns how many. An object holding a key the database does not know at all is kept: after a
        restore to an earlier point, it may be the only place that key is (``wa-archive recover`` reads it)."""
        while rows := await self.pending(conn, limit=1000):
            if not await self.copy(conn, rows):
                break
        objects = [
            row["object"]
            for row in await conn.fetch(
                "SELECT m.object FROM key_copy_members m GROUP BY m.object HAVING bool_and("
                " EXISTS (SELECT 1 FROM shredded_keys s WHERE s.dek_id = m.dek_id)"
                " OR EXISTS (SELECT 1 FROM subject_keys k WHERE k.dek_id = m.dek_id AND k.kek_id <> m.kek_id"
                " AND EXISTS (SELECT 1 FROM key_copy_members o WHERE o.dek_id = k.dek_id AND o.kek_id = k.kek_id"
                " AND o.object <> m.object))) ORDER BY m.object"
            )
        ]
        if not objects:
            return 0
        return await self._delete(conn, objects)

    async def _delete(self, conn: Connection, objects: list[str]) -> int:
        gone, refused = await self.bucket.delete_permanently([self.key(name) for name in objects])
        names = [name[len(self.root) :] for name in gone]
        await conn.execute("DELETE FROM key_copy_members WHERE object = ANY($1::text[])", names)
        if refused:
            raise CopiesRemain(refused)
        return len(names)

    async def newest_bundle(self) -> str | None:
        """The newest bundle in the bucket (one short listing: names sort newest first)."""
        found = await self.bucket.first_object(self.key(BUNDLES))
        return None if found is None else found[len(self.root) :]

    async def behind(self, conn: Connection) -> bool:
        """Whether the bucket holds a bundle newer than every bundle the members list."""
        newest = await self.newest_bundle()
        if newest is None:
            return False
        known: str | None = await conn.fetchval(
            "SELECT min(object) FROM key_copy_members WHERE object LIKE $1", f"{BUNDLES}%"
        )
        return known is None or newest < known

    async def scan(self) -> AsyncIterator[ScannedObject]:
        """Every current object of the key copies, read back, a few at once, in listing order."""
        names: list[str] = []

        async def read(name: str) -> ScannedObject:
            try:
                return ScannedObject(name, read_copies(await self.bucket.get(self.key(name))))
            except UnreadableCopy as exc:
                return ScannedObject(name, exc)

        async for stored in self.bucket.list_objects(self.root):
            names.append(stored.key[len(self.root) :])
            if len(names) >= READ_CONCURRENCY:
                for scanned in await asyncio.gather(*(read(name) for name in names)):
                    yield scanned
                names.clear()
        for scanned in await asyncio.gather(*(read(name) for name in names)):
            yield scanned

    async def sync_members(self, conn: Connection) -> int:
        """Make the members say what the bucket holds: every copy read back is listed, and members of objects the
        bucket no longer has are dropped (:meth:`forget_missing`). Returns how many objects were read."""
        started_ms = int(time.time() * 1000)
        seen: list[str] = []
        async for scanned in self.scan():
            seen.append(scanned.name)
            if isinstance(scanned.copies, UnreadableCopy):
                log.error("an object of the key copies cannot be read (%s): it is left as it is", scanned.copies)
                continue
            await self.list_members(conn, scanned.name, scanned.copies)
        await self.forget_missing(conn, seen, started_ms=started_ms)
        return len(seen)

    @staticmethod
    async def forget_missing(conn: Connection, seen: Sequence[str], *, started_ms: int) -> None:
        """Drop the members of objects a listing that started at ``started_ms`` did not see. Bundles written since
        (their names sort before) keep their members, and so do those of the minutes before, in case this host's
        clock is ahead of an archiver's."""
        written_before = f"{BUNDLES}{_NEWEST_FIRST - started_ms + SYNC_CLOCK_MARGIN_MS:013d}"
        await conn.execute(
            "DELETE FROM key_copy_members WHERE NOT object = ANY($1::text[]) AND (object NOT LIKE $2 OR object > $3)",
            list(seen),
            f"{BUNDLES}%",
            written_before,
        )

    @staticmethod
    async def list_members(conn: Connection, name: str, copies: Sequence[KeyCopy]) -> None:
        await conn.execute(
            "INSERT INTO key_copy_members (dek_id, object, subject_ref, kek_id)"
            " SELECT dek_id, $1, subject_ref, kek_id FROM unnest($2::uuid[], $3::text[], $4::text[])"
            " AS v(dek_id, subject_ref, kek_id) ON CONFLICT DO NOTHING",
            name,
            [copy.dek_id for copy in copies],
            [copy.subject_ref for copy in copies],
            [copy.kek_id for copy in copies],
        )
