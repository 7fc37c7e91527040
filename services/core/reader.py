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

Media are read as streams (:meth:`ArchiveReader.open_media`): a version 3 object is read front to back in pieces —
its header verified by its digest, each chunk authenticated before it is handed on, the whole object hashed on the
way and its trailer checked at the end — so serving a 100 MB file holds one chunk, not the file. Media objects of
earlier versions (one sealed record) are read whole, as they were written.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import defaultdict
from collections.abc import AsyncGenerator, AsyncIterator, Collection, Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.core.bucket import ArchiveBucket
from services.core.container import (
    PREAMBLE,
    STREAM_VERSION,
    TRAILER_BYTES,
    ContainerError,
    ContainerRecord,
    RecordMeta,
    SourceRange,
    read_header,
    read_records,
    read_stream_head,
    stream_head_length,
)
from services.core.crypto import STREAM_HEADER, RecordTampered, StreamOpener, open_record
from services.core.keyring import Keyring

__all__ = ["ArchiveReader", "ContainerError", "OpenedMedia", "RecordLocation", "RecordTampered", "object_header"]


@dataclass(frozen=True, slots=True)
class RecordLocation:
    event_id: str
    object_key: str
    record_index: int


@dataclass(frozen=True, slots=True)
class OpenedMedia:
    """A media file being read: its size in bytes and its bytes, authenticated piece by piece as they are consumed.

    Iterating ``chunks`` raises RecordTampered (a chunk that does not authenticate, a stream cut short) or
    ContainerError (the object's trailer does not match) at the piece where it is found: what was handed on before
    was authentic. ``aclose()`` it (or exhaust it) to release the object's connection."""

    size: int
    chunks: AsyncGenerator[bytes, None]


class _Pieces:
    """An object's bytes as they arrive, read by exact lengths first (its front), then piece by piece."""

    def __init__(self, pieces: AsyncIterator[bytes]) -> None:
        self.pieces = pieces
        self.pending = bytearray()  # appended to in place: reading a whole old media object stays linear

    async def read(self, size: int) -> bytes:
        while len(self.pending) < size:
            piece = await anext(self.pieces, None)
            if piece is None:
                raise ContainerError("object ended early")
            self.pending += piece
        taken = bytes(self.pending[:size])
        del self.pending[:size]
        return taken

    async def rest(self) -> AsyncIterator[bytes]:
        if self.pending:
            yield bytes(self.pending)
            self.pending = bytearray()
        async for piece in self.pieces:
            yield piece

    async def aclose(self) -> None:
        aclose = getattr(self.pieces, "aclose", None)
        if aclose is not None:
            await aclose()


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

    async def open_media(self, record_id: str, object_key: str) -> OpenedMedia | None:
        """The media record ``record_id`` of ``object_key``, as a stream (see :class:`OpenedMedia`), or None when
        its key was shredded. Raises ContainerError when the object is not that record's or its front does not
        verify, and what the bucket raises."""
        async with self.limit:
            object_size, pieces = await self.bucket.stream(object_key)
        source = _Pieces(pieces)
        try:
            preamble = await source.read(PREAMBLE.size)
            if preamble[6] != STREAM_VERSION:
                return await self._open_whole_media(record_id, object_key, preamble, source, object_size)
            head = preamble + await source.read(stream_head_length(preamble) - PREAMBLE.size)
            _source, _created_at, meta, sealed_length = read_stream_head(head, object_size)
            if meta.event_id != record_id:
                raise ContainerError(f"{object_key} holds another record")
            dek = await self.keyring.key_for_reading(meta.subject_ref, meta.dek_id)
            if dek is None:
                await source.aclose()
                return None
            opener = StreamOpener(
                dek.aead(), event_id=meta.event_id, subject_ref=meta.subject_ref, sealed_length=sealed_length
            )
            stream_header = await source.read(STREAM_HEADER.size)
            opener.feed(stream_header)
        except BaseException:
            await source.aclose()
            raise
        assert opener.plaintext_length is not None
        return OpenedMedia(opener.plaintext_length, _opened(source, opener, head + stream_header, sealed_length))

    async def _open_whole_media(
        self, record_id: str, object_key: str, preamble: bytes, source: _Pieces, object_size: int
    ) -> OpenedMedia | None:
        """A media object of format version 1 or 2: one sealed record, read and opened whole."""
        blob = preamble + await source.read(object_size - len(preamble))
        await source.aclose()
        record = read_records(blob, [0], verify_trailer=False)[0]
        if record.meta.event_id != record_id:
            raise ContainerError(f"{object_key} holds another record")
        dek = await self.keyring.key_for_reading(record.meta.subject_ref, record.meta.dek_id)
        if dek is None:
            return None
        data = open_record(record.sealed, dek.aead(), event_id=record_id, subject_ref=record.meta.subject_ref)

        async def whole() -> AsyncGenerator[bytes, None]:
            yield data

        return OpenedMedia(len(data), whole())


async def _opened(
    source: _Pieces, opener: StreamOpener, front: bytes, sealed_length: int
) -> AsyncGenerator[bytes, None]:
    """The plaintext of a version 3 object's stream, chunk by chunk; the trailer is checked last."""
    trailer = hashlib.sha256(front)
    remaining = sealed_length - STREAM_HEADER.size  # the chunks: the stream after its header
    tail = b""
    try:
        async for piece in source.rest():
            body, extra = piece[:remaining], piece[remaining:]
            remaining -= len(body)
            trailer.update(body)
            tail += extra
            for chunk in opener.feed(body):
                yield chunk
        opener.finish()
        if len(tail) != TRAILER_BYTES or trailer.digest() != tail:
            raise ContainerError("checksum mismatch: the object is corrupt or truncated")
    finally:
        await source.aclose()


async def object_header(
    bucket: ArchiveBucket, key: str
) -> tuple[tuple[SourceRange, str, tuple[RecordMeta, ...]], bytes | None]:
    """An object's header (what :func:`~services.core.container.read_header` gives) and, for versions 1 and 2, its
    bytes; a version 3 (streamed media) object is read through and verified whole — header digest, header rules,
    trailer — without being held: what ``rebuild-index`` needs of it is its header. Raises ContainerError (a
    ValueError) for an object that does not verify, and what the bucket raises."""
    object_size, pieces = await bucket.stream(key)
    source = _Pieces(pieces)
    try:
        preamble = await source.read(min(PREAMBLE.size, object_size))
        if len(preamble) < PREAMBLE.size or preamble[6] != STREAM_VERSION:
            blob = preamble + await source.read(object_size - len(preamble))
            return read_header(blob), blob
        head = preamble + await source.read(stream_head_length(preamble) - PREAMBLE.size)
        found_source, created_at, meta, sealed_length = read_stream_head(head, object_size)
        digest = hashlib.sha256(head)
        remaining = sealed_length
        tail = b""
        async for piece in source.rest():
            digest.update(piece[:remaining])
            tail += piece[remaining:]
            remaining -= min(remaining, len(piece))
        if remaining or digest.digest() != tail:
            raise ContainerError("checksum mismatch: the object is corrupt or truncated")
        return (found_source, created_at, (meta,)), None
    finally:
        await source.aclose()
