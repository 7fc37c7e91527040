"""The erasures, recorded outside PostgreSQL too, so that restoring the database never brings an erased person back.

Each erasure whose keys were destroyed is written, before it is reported done, as one object of the archive bucket,
``erasures/<prefix>/<sha256 of the request reference>``: the request's reference and dates, the pseudonyms erased,
the keys destroyed (pseudonym and key id) and the moment they were. No personal data: pseudonyms and ids only. The
object is written under the bucket's Object Lock when one is configured (nothing here deletes it), so the log is
append-only: writing a record again adds a version, it never removes one.

``wa-archive recover`` and the retention service at start-up read it back (:meth:`ErasureLog.scan`) and re-apply
every erasure the database does not know (services/governance/recovery.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import datetime

import orjson

from services.core.bucket import ArchiveBucket

RECORD_FORMAT = "wa-archive erasure 1"
LOG_ROOT = "erasures"


class UnreadableRecord(ValueError):
    """An object under the erasure log's folder that is not a record this version can read."""


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureRecord:
    request_ref: str
    subject_refs: tuple[str, ...]
    keys: tuple[tuple[str, str], ...]  # (subject_ref, dek_id) of every key destroyed
    erased_at: datetime  # when the keys were destroyed (erased_subjects.erased_at)
    received_at: datetime
    deadline_at: datetime

    def to_bytes(self) -> bytes:
        return orjson.dumps(
            {
                "format": RECORD_FORMAT,
                "request_ref": self.request_ref,
                "subject_refs": sorted(self.subject_refs),
                "keys": sorted([ref, dek_id] for ref, dek_id in self.keys),
                "erased_at": self.erased_at.isoformat(),
                "received_at": self.received_at.isoformat(),
                "deadline_at": self.deadline_at.isoformat(),
            }
        )

    @classmethod
    def from_bytes(cls, body: bytes) -> ErasureRecord:
        try:
            fields = orjson.loads(body)
            if fields.get("format") != RECORD_FORMAT:
                raise UnreadableRecord(f"not an erasure record of format {RECORD_FORMAT!r}")
            return cls(
                request_ref=str(fields["request_ref"]),
                subject_refs=tuple(str(ref) for ref in fields["subject_refs"]),
                keys=tuple((str(ref), str(dek_id)) for ref, dek_id in fields["keys"]),
                erased_at=datetime.fromisoformat(fields["erased_at"]),
                received_at=datetime.fromisoformat(fields["received_at"]),
                deadline_at=datetime.fromisoformat(fields["deadline_at"]),
            )
        except UnreadableRecord:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UnreadableRecord(f"unreadable erasure record: {type(exc).__name__}") from None


class ErasureLog:
    """The erasure records of one archive (its bucket and prefix)."""

    def __init__(self, bucket: ArchiveBucket) -> None:
        self.bucket = bucket
        self.root = f"{LOG_ROOT}/{bucket.settings.prefix}/"

    def key(self, request_ref: str) -> str:
        # The reference is the operator's: hashed, so that whatever it holds never shapes an object key.
        return self.root + hashlib.sha256(request_ref.encode("utf-8", "surrogatepass")).hexdigest()

    async def append(self, record: ErasureRecord) -> None:
        """Store the record (under Object Lock when the bucket's settings ask for it); raises what the store
        raised — the erasure is then not reported done."""
        await self.bucket.put(self.key(record.request_ref), record.to_bytes())

    async def scan(self, *, skip: Iterable[str] = ()) -> AsyncIterator[ErasureRecord | UnreadableRecord]:
        """Every record, read back, except those of the request references ``skip`` (listed, never read); an
        object that is not a record is yielded as :class:`UnreadableRecord`."""
        known = {self.key(request_ref) for request_ref in skip}
        async for stored in self.bucket.list_objects(self.root):
            if stored.key in known:
                continue
            try:
                yield ErasureRecord.from_bytes(await self.bucket.get(stored.key))
            except UnreadableRecord as exc:
                yield exc
