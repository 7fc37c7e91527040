"""Copies of the data keys outside PostgreSQL, so that losing the database loses no key (docs/OPERATIONS.md,
"Recovery").

Every subject key (a DEK wrapped by a KEK, exactly as ``subject_keys`` holds it) is also written as a small object
of the archive bucket, ``keys/<prefix>/<subject_ref>/<dek_id>``, without Object Lock, before any record sealed with
it counts as archived (:meth:`services.core.keyring.Keyring.keys_for_writing` writes it before it hands the key
out). The object holds pseudonyms and ids only, and the key wrapped: reading it is worth nothing without the KEK.

Contract:
- :meth:`KeyCopies.put` is idempotent: the same key written twice is the same object (a rewrap writes it again,
  wrapped by the new KEK).
- :meth:`KeyCopies.destroy` removes every version of the copies of the keys an erasure destroyed, delete markers
  included, and raises :class:`CopiesRemain` when the store refused any: an erasure is not done until they are gone.
- :meth:`KeyCopies.scan` reads every copy back, for ``wa-archive recover``.

Where a copy can still linger, and what bounds it, is written in docs/GDPR.md ("Key copies").
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

import orjson

from services.core.bucket import ArchiveBucket

COPY_FORMAT = "wa-archive key copy 1"
COPIES_ROOT = "keys"
# Copies written at once by one call; a batch's new people each need one.
PUT_CONCURRENCY = 16


class CopiesRemain(Exception):
    """The store refused to delete some versions of a person's key copies; the erasure is not done."""

    def __init__(self, refused: dict[str, str]) -> None:
        self.refused = refused
        codes = sorted(set(refused.values()))
        super().__init__(f"{len(refused)} key copy version(s) could not be deleted ({', '.join(codes)})")


class UnreadableCopy(ValueError):
    """An object under the key copies' folder that is not a key copy this version can read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class KeyCopy:
    """One subject key as stored in PostgreSQL: pseudonym, key id, the KEK that wraps it and the wrapped bytes."""

    subject_ref: str
    dek_id: str
    kek_id: str
    wrapped_dek: bytes
    created_at: datetime

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": COPY_FORMAT,
                "subject_ref": self.subject_ref,
                "dek_id": self.dek_id,
                "kek_id": self.kek_id,
                "wrapped_dek": base64.b64encode(self.wrapped_dek).decode(),
                "created_at": self.created_at.isoformat(),
            }
        )

    @classmethod
    def from_bytes(cls, body: bytes) -> KeyCopy:
        try:
            fields = orjson.loads(body)
            if fields.get("format") != COPY_FORMAT:
                raise UnreadableCopy(f"not a key copy of format {COPY_FORMAT!r}")
            return cls(
                subject_ref=str(fields["subject_ref"]),
                dek_id=str(fields["dek_id"]),
                kek_id=str(fields["kek_id"]),
                wrapped_dek=base64.b64decode(fields["wrapped_dek"], validate=True),
                created_at=datetime.fromisoformat(fields["created_at"]),
            )
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            if isinstance(exc, UnreadableCopy):
                raise
            raise UnreadableCopy(f"unreadable key copy: {type(exc).__name__}") from None


class KeyCopies:
    """The key copies of one archive (its bucket and prefix)."""

    def __init__(self, bucket: ArchiveBucket) -> None:
        self.bucket = bucket
        self.root = f"{COPIES_ROOT}/{bucket.settings.prefix}/"

    def folder(self, subject_ref: str) -> str:
        return f"{self.root}{subject_ref}/"

    def key(self, subject_ref: str, dek_id: str) -> str:
        return f"{self.folder(subject_ref)}{dek_id}"

    async def put(self, copies: Iterable[KeyCopy]) -> None:
        """Write each copy (without Object Lock), a few at once; returns once every one is stored."""
        pending = list(copies)
        gate = asyncio.Semaphore(PUT_CONCURRENCY)

        async def one(copy: KeyCopy) -> None:
            async with gate:
                await self.bucket.put(self.key(copy.subject_ref, copy.dek_id), copy.to_bytes(), locked=False)

        await asyncio.gather(*(one(copy) for copy in pending))

    async def destroy(self, keys: Iterable[tuple[str, str]]) -> int:
        """Delete every version of the copies of these keys ((subject_ref, dek_id) pairs: the keys an erasure
        destroyed, never a key the person was given since); returns how many copies are gone. Raises
        :class:`CopiesRemain` when the store refused some (nothing is reported done then: call again)."""
        wanted = [self.key(ref, dek_id) for ref, dek_id in sorted(set(keys))]
        if not wanted:
            return 0
        gone, refused = await self.bucket.delete_permanently(wanted)
        if refused:
            raise CopiesRemain(refused)
        return len(gone)

    async def scan(self) -> AsyncIterator[KeyCopy | UnreadableCopy]:
        """Every current key copy, read back; an object that is not one is yielded as :class:`UnreadableCopy`."""
        async for stored in self.bucket.list_objects(self.root):
            try:
                yield KeyCopy.from_bytes(await self.bucket.get(stored.key))
            except UnreadableCopy as exc:
                yield exc
