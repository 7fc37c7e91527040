"""Where a medium goes while it downloads: sealed chunk by chunk, uploaded part by part (format version 3).

:class:`SealedMediaUpload` is the :class:`~services.archiver.media.MediaSink` of one attempt: it writes the object's
front (:func:`~services.core.container.encode_stream_head`), seals the plaintext into chunks of ``chunk_bytes``
(:class:`~services.core.crypto.StreamSealer`) as it arrives, hashes what it emits for the trailer, and uploads the
object in parts of ``part_bytes`` (S3 multipart; a medium smaller than one part is one PUT). Nothing of it is
readable until :meth:`~SealedMediaUpload.finish` completes the upload, which the fetcher calls only once the
checksums matched; :meth:`~SealedMediaUpload.abort` drops the parts of a failed attempt.

What one upload holds at most (:func:`stream_memory`): the plaintext of one chunk being filled, and one part being
filled plus the copy handed to the S3 client. That is what the fetcher reserves from the process's byte budget.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime

from services.archiver.media import MediaSink
from services.core.bucket import ArchiveBucket
from services.core.container import TRAILER_BYTES, RecordMeta, SourceRange, encode_stream_head
from services.core.crypto import SEALED_OVERHEAD, CachedDek, StreamSealer, sealed_stream_length
from services.core.events import text_fault
from services.core.vocabulary import MEDIA_RECORD_KIND
from services.evidence.chain import ObjectDigest

# The front of a media object: preamble, a one-record header (its strings: ids, refs, the MIME type) and digest.
# Far more than it takes (about 600 bytes); it only sizes memory reservations.
HEAD_BYTES_MAX = 8 * 1024
MIN_PART_BYTES = 5 * 1024 * 1024  # S3's minimum for every part but the last


def usable_mime(mime_type: str | None) -> str | None:
    """The MIME type as the header and the index can store it, or None (the file itself is archived either way)."""
    return mime_type if mime_type is not None and text_fault(mime_type) is None else None


def stream_memory(declared_size: int | None, *, chunk_bytes: int, part_bytes: int) -> int:
    """Bytes one upload holds at most for a file of ``declared_size`` bytes (None: as for a large one): a chunk of
    plaintext being filled, and the part being filled (or, under one part, the whole object) twice — the buffer
    and the copy the S3 client sends."""
    part = part_bytes + chunk_bytes + SEALED_OVERHEAD
    if declared_size is not None:
        part = min(part, HEAD_BYTES_MAX + sealed_stream_length(declared_size, chunk_bytes) + TRAILER_BYTES)
    return chunk_bytes + 2 * part


@dataclass(frozen=True, slots=True, kw_only=True)
class MediaTarget:
    """Where and under whose key a message's medium is archived, and what its object's header says of it."""

    event_id: str  # the message's
    record_id: str  # the medium's record id (services/core/container.py media_record_id)
    object_key: str
    sealing: str  # the pseudonym whose key seals it (the message's)
    dek: CachedDek
    source: SourceRange
    created_at: str
    timestamp: int | None
    received_at: str | None
    waba_id: str | None
    phone_number_id: str | None

    def meta(self, mime_type: str | None) -> RecordMeta:
        return RecordMeta(
            event_id=self.record_id,
            subject_ref=self.sealing,
            alias_refs=(),
            dek_id=self.dek.dek_id,
            kind=MEDIA_RECORD_KIND,
            type=usable_mime(mime_type),
            timestamp=self.timestamp,
            received_at=self.received_at,
            waba_id=self.waba_id,
            phone_number_id=self.phone_number_id,
            message_ref=None,
            original_message_ref=None,
            offset=self.source.first_offset,
        )


class SealedMediaUpload(MediaSink):
    """One attempt at archiving one medium (module docstring). Not reusable: a new attempt opens a new one."""

    def __init__(
        self,
        bucket: ArchiveBucket,
        target: MediaTarget,
        mime_type: str | None,
        *,
        chunk_bytes: int,
        part_bytes: int,
        now: datetime,
        written: dict[str, ObjectDigest] | None = None,
    ) -> None:
        if part_bytes < MIN_PART_BYTES:
            raise ValueError(f"parts must be at least {MIN_PART_BYTES} bytes (S3's minimum), got {part_bytes}")
        self.bucket, self.key, self.now = bucket, target.object_key, now
        self.chunk_bytes, self.part_bytes = chunk_bytes, part_bytes
        self._sealer = StreamSealer(
            target.dek.aead(), event_id=target.record_id, subject_ref=target.sealing, chunk_size=chunk_bytes
        )
        self._trailer = hashlib.sha256()
        self._whole = hashlib.sha256()  # of the stored object, trailer included: its entry in the hash chain
        self._written = written
        self._plain = bytearray()
        self._part = bytearray()
        self._upload_id: str | None = None
        self._etags: list[str] = []
        self.object_bytes = 0
        head = encode_stream_head(target.meta(mime_type), source=target.source, created_at=target.created_at)
        self._emit(head + self._sealer.header)

    def _emit(self, data: bytes) -> None:
        self._trailer.update(data)
        self._whole.update(data)
        self._part += data
        self.object_bytes += len(data)

    async def write(self, data: bytes) -> None:
        self._plain += data
        # A full chunk is sealed as not the last only once a byte after it has come: the last chunk is final.
        while len(self._plain) > self.chunk_bytes:
            self._emit(self._sealer.seal(memoryview(self._plain)[: self.chunk_bytes], final=False))
            del self._plain[: self.chunk_bytes]
        if len(self._part) >= self.part_bytes:
            await self._send_part()

    async def _send_part(self) -> None:
        if self._upload_id is None:
            self._upload_id = await self.bucket.start_upload(self.key, now=self.now)
        body = bytes(self._part)
        self._part = bytearray()
        self._etags.append(await self.bucket.upload_part(self.key, self._upload_id, len(self._etags) + 1, body))

    async def finish(self) -> None:
        self._emit(self._sealer.seal(bytes(self._plain), final=True))
        self._plain = bytearray()
        trailer = self._trailer.digest()
        self._part += trailer
        self._whole.update(trailer)
        self.object_bytes += TRAILER_BYTES
        if self._upload_id is None:
            body = bytes(self._part)
            self._part = bytearray()
            await self.bucket.put(self.key, body, now=self.now)
        else:
            await self._send_part()
            await self.bucket.complete_upload(self.key, self._upload_id, self._etags)
            self._upload_id = None
        if self._written is not None:
            self._written[self.key] = ObjectDigest(self.key, self._whole.hexdigest(), self.object_bytes)

    async def abort(self) -> None:
        self._plain, self._part = bytearray(), bytearray()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            await self.bucket.abort_upload(self.key, upload_id)


@dataclass(frozen=True, slots=True, kw_only=True)
class BucketMediaStore:
    """The :class:`~services.archiver.media.MediaStore` of one medium: uploads sealed under ``target``."""

    bucket: ArchiveBucket
    target: MediaTarget
    chunk_bytes: int
    part_bytes: int
    now: datetime
    # The objects its uploads completed, by key, with their digests (what the writer enters in the hash chain).
    written: dict[str, ObjectDigest] = field(default_factory=dict)

    def memory(self, declared_size: int | None) -> int:
        return stream_memory(declared_size, chunk_bytes=self.chunk_bytes, part_bytes=self.part_bytes)

    def open(self, mime_type: str | None) -> SealedMediaUpload:
        return SealedMediaUpload(
            self.bucket,
            self.target,
            mime_type,
            chunk_bytes=self.chunk_bytes,
            part_bytes=self.part_bytes,
            now=self.now,
            written=self.written,
        )
