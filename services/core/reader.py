"""Read archived records back: object → container → the record's DEK → verified plaintext.

Contract of :meth:`ArchiveReader.open`: for each requested (event_id, object_key, record_index) it returns the
exact bytes that were archived (the Kafka record value, byte for byte), or ``None`` when the subject's key was
shredded (erasure) — never another record's data: the record's position is checked against its event id, and
AES-GCM authenticates the bytes with the event id and subject pseudonym as associated data. A record that fails
authentication raises :class:`RecordTampered`; an object that fails its checksum raises ``ContainerError``.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Collection, Sequence
from dataclasses import dataclass

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
        # batch objects, and the object itself is dropped as soon as they are out.
        return read_records(blob, indexes)

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
        for object_key, wanted in by_object.items():
            records = selected[object_key]
            for location in wanted:
                record = records[location.record_index]
                if record.meta.event_id != location.event_id:
                    raise ContainerError(f"record {location.record_index} of {object_key} is another event")
                dek = await self.keyring.key_for_reading(record.meta.subject_ref, record.meta.dek_id)
                if dek is None:
                    opened[location.event_id] = None  # crypto-shredded
                    continue
                opened[location.event_id] = open_record(
                    record.sealed, dek.dek, event_id=record.meta.event_id, subject_ref=record.meta.subject_ref
                )
        return opened
