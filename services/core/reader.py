"""Read archived records back: object → container → the record's DEK → verified plaintext.

Contract of :meth:`ArchiveReader.open`: for each requested (event_id, object_key, record_index) it returns the
exact bytes that were archived (the Kafka record value, byte for byte), or ``None`` when the subject's key was
shredded (erasure) — never another record's data: the record's position is checked against its event id, and
AES-GCM authenticates the bytes with the event id and subject pseudonym as associated data. A record that fails
authentication raises :class:`RecordTampered`; an object that fails verification raises ``ContainerError``.

Of a version 2 object, only what the read relies on is verified: the header by its digest, each returned record
by AES-GCM (``read_records(..., verify_trailer=False)``), not the sha256 of the whole object — about a tenth of
a 10,000-message read's CPU (bench/retrieval.py). Altered bytes in a requested record therefore raise
``RecordTampered`` rather than a checksum error; the trailer is still verified by every whole-object reader
(``decode_container``, ``read_header``: ``rebuild-index``) and for version 1 objects.

The bytes are returned as archived; views decode them with :func:`services.core.plaintext.read_envelope`, which
reads whatever JSON the archive accepted and says which records cannot be read, instead of raising.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.core.bucket import ArchiveBucket
from services.core.container import ContainerError, ContainerRecord, read_records
from services.core.crypto import RecordTampered, open_record
from services.core.keyring import Keyring

__all__ = ["ArchiveReader", "ContainerError", "RecordLocation", "RecordTampered"]


@dataclass(frozen=True, slots=True)
class RecordLocation:
    event_id: str
    object_key: str
    record_index: int


class ArchiveReader:
    def __init__(self, bucket: ArchiveBucket, keyring: Keyring, *, concurrency: int = 8) -> None:
        self.bucket = bucket
        self.keyring = keyring
        self.limit = asyncio.Semaphore(concurrency)

    async def _records(self, object_key: str, indexes: Collection[int]) -> dict[int, ContainerRecord]:
        async with self.limit:
            blob = await self.bucket.get(object_key)
        # Only the requested records are decoded and kept: a conversation's records are spread over many large
        # batch objects, and the object itself is dropped as soon as they are out. Every record returned is opened
        # with AES-GCM below, which is what lets the whole-object hash go (module docstring).
        return read_records(blob, indexes, verify_trailer=False)

    async def open(self, locations: Sequence[RecordLocation]) -> dict[str, bytes | None]:
        by_object: dict[str, list[RecordLocation]] = defaultdict(list)
        for location in locations:
            by_object[location.object_key].append(location)
        selected = dict(
            zip(
                by_object,
                await asyncio.gather(
                    *(self._records(key, {loc.record_index for loc in wanted}) for key, wanted in by_object.items())
                ),
                strict=True,
            )
        )
        opened: dict[str, bytes | None] = {}
        # One key lookup and one AES-GCM context per data key of the call, not per record: a conversation's
        # thousands of records are sealed under a handful of keys (None: that key was shredded). A key shredded
        # while a call runs may still open that call's remaining records; every later call refuses it.
        aeads: dict[tuple[str, str], AESGCM | None] = {}
        for object_key, wanted in by_object.items():
            records = selected[object_key]
            for location in wanted:
                record = records[location.record_index]
                meta = record.meta
                if meta.event_id != location.event_id:
                    raise ContainerError(f"record {location.record_index} of {object_key} is another event")
                key = (meta.subject_ref, meta.dek_id)
                if key in aeads:
                    aead = aeads[key]
                else:
                    dek = await self.keyring.key_for_reading(meta.subject_ref, meta.dek_id)
                    aead = aeads[key] = None if dek is None else dek.aead()
                if aead is None:
                    opened[location.event_id] = None  # crypto-shredded
                    continue
                opened[location.event_id] = open_record(
                    record.sealed, aead, event_id=meta.event_id, subject_ref=meta.subject_ref
                )
        return opened
