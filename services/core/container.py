"""The archive object format (docs/ARCHIVE_FORMAT.md): one object holds one batch of sealed records from one
Kafka partition.

    magic b"WAARCH" (6) | version u8 | header length u32 BE | header | [v2: header digest (32)] | record bodies |
    sha256 (32) of everything before it

The header carries only pseudonymous metadata per record — enough to rebuild the PostgreSQL index without any
key — and where each sealed record lies in the body section. The trailer (sha256 of everything before it)
detects corruption and truncation without keys; AES-GCM authenticates each record with its own key. The header
schema is closed: a reader refuses unknown versions, missing or unexpected fields and ill-typed values, so no
field (and no personal data) can slip into the clear without a new format version.

Three versions exist, and readers take all of them:

- version 2, what :func:`encode_container` writes: a binary header of fixed-width columns (one entry per record:
  integers, and references into a table of the distinct strings). A reader finds record i's metadata and bytes
  at computed positions, so :func:`read_records` decodes only the records it is asked for. A sha256 of the
  preamble and header follows the header, so a reader that fetches byte ranges can verify the header without the
  body (each record it then reads is authenticated by AES-GCM);
- version 1: the header is UTF-8 JSON (``encode_container(..., version=1)`` still writes it, for tests);
- version 3, a streamed object of one large record (a media file): the version 2 layout and header, whose one
  record is a sealed stream (services/core/crypto.py, :class:`~services.core.crypto.StreamSealer`) that fills the
  whole body; its ``body_end`` is written as 0, since the writer does not know the length when it writes the
  header. A writer emits it front to back (:func:`encode_stream_head`, the chunks, the sha256 trailer) without
  holding the record, and a reader reads it the same way (:func:`stream_head_length`, :func:`read_stream_head`).
"""

from __future__ import annotations

import codecs
import hashlib
import json
import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import accumulate, chain, compress, islice
from itertools import count as numbers
from operator import attrgetter, eq, le, not_
from typing import Any, Final

import orjson

MAGIC: Final = b"WAARCH"
FORMAT_VERSION: Final = 2  # the version encode_container writes
STREAM_VERSION: Final = 3  # the version of streamed single-record objects (media)
READABLE_VERSIONS: Final = frozenset({1, 2, 3})
PREAMBLE: Final = struct.Struct(">6sBI")  # magic, version, header length (the same in every version)
TRAILER_BYTES: Final = 32
HEADER_DIGEST_BYTES: Final = 32  # version 2: sha256 of the preamble and header, between the header and the body
OBJECT_SUFFIX: Final = ".waarc"

# Compact and ASCII-only (so also valid UTF-8): the header is plain JSON that any tool can read.
_HEADER_ENCODER: Final = json.JSONEncoder(
    ensure_ascii=True, check_circular=False, allow_nan=False, separators=(",", ":")
)


def _encode_header(header: dict[str, Any]) -> bytes:
    """Compact ASCII JSON. orjson when its output is ASCII already (ids, refs and offsets are), else the standard
    library, which escapes; orjson also refuses integers beyond 64 bits, which the standard library writes."""
    try:
        encoded = orjson.dumps(header)
    except TypeError:  # orjson.JSONEncodeError
        encoded = b""
    if encoded and encoded.isascii():
        return encoded
    return _HEADER_ENCODER.encode(header).encode("ascii")


class ContainerError(ValueError):
    """The bytes are not a valid archive container: wrong magic, unknown version, corrupt or truncated, or a
    header that does not match the schema. The message says which."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecordMeta:
    """Pseudonymous metadata of one sealed record, stored in the clear in the object header.

    Holds no personal data: people appear only as ``subject_ref``/``alias_refs`` and messages only as
    ``message_ref``/``original_message_ref`` (services/core/pseudonym.py). ``waba_id`` and ``phone_number_id``
    identify the business, not the customer. ``event_id`` and ``subject_ref`` are also the record's AES-GCM
    associated data, so the header cannot point a record at another event or person unnoticed.
    """

    event_id: str
    subject_ref: str
    alias_refs: tuple[str, ...]
    dek_id: str
    kind: str
    type: str | None
    timestamp: int | None  # Meta's event time, epoch seconds
    received_at: str | None  # RFC 3339, when ingest received the webhook
    waba_id: str | None
    phone_number_id: str | None
    message_ref: str | None
    original_message_ref: str | None  # the message an edit, revoke or status refers to
    offset: int  # Kafka offset of the record in SourceRange.partition


@dataclass(frozen=True, slots=True)
class SourceRange:
    """The Kafka records an object was made from: ``first_offset``..``last_offset`` (inclusive) of one
    partition of ``topic``."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class ContainerRecord:
    meta: RecordMeta
    sealed: bytes


@dataclass(frozen=True, slots=True)
class Container:
    source: SourceRange
    created_at: str
    records: tuple[ContainerRecord, ...]


def object_key(prefix: str, source: SourceRange) -> str:
    """``{prefix}/{topic}/{partition:05d}/{first_offset:020d}.waarc``.

    Deterministic: the same batch replayed after a crash overwrites its object instead of duplicating it. The
    zero padding makes the lexicographic order of keys (S3 listing order) the offset order within a partition.
    """
    return f"{prefix}/{source.topic}/{source.partition:05d}/{source.first_offset:020d}{OBJECT_SUFFIX}"


# A message's media file is archived as a record of its own, in an object of its own, under the message's event
# id with this suffix: ``{event_id}.media`` (record id and AES-GCM associated data), ``{prefix}/media/{event_id}``.
MEDIA_SUFFIX: Final = ".media"


def media_record_id(event_id: str) -> str:
    """The record id of the media file of the message ``event_id``."""
    return f"{event_id}{MEDIA_SUFFIX}"


def media_event_id(record_id: str) -> str | None:
    """The message's event id of a media record id, or None if ``record_id`` is not one."""
    return record_id.removesuffix(MEDIA_SUFFIX) if record_id.endswith(MEDIA_SUFFIX) else None


def media_object_key(prefix: str, event_id: str) -> str:
    """``{prefix}/media/{event_id}.waarc``: deterministic, so a replay overwrites the same object."""
    return f"{prefix}/media/{event_id}{OBJECT_SUFFIX}"


def _check_source(source: SourceRange) -> None:
    if not source.topic:
        raise ValueError("source topic must not be empty")
    if source.partition < 0 or source.first_offset < 0:
        raise ValueError("source partition and offsets must not be negative")
    if source.first_offset > source.last_offset:
        first, last = source.first_offset, source.last_offset
        raise ValueError(f"source first_offset {first} is after last_offset {last}")


def _is_rfc3339(value: str) -> bool:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return False
    return parsed.tzinfo is not None


def encode_container(
    records: Sequence[ContainerRecord], *, source: SourceRange, created_at: str, version: int = FORMAT_VERSION
) -> bytes:
    """Serialise one batch into an archive object; :func:`decode_container` gives back exactly these records.

    Writes ``version`` (:data:`FORMAT_VERSION` unless told; 1 only for tests and tools). Raises ValueError when
    the input would make an object readers refuse: an empty topic, negative or inverted offsets, a record offset
    outside ``source``, or ``created_at`` that is not an RFC 3339 timestamp with an offset (e.g.
    ``2026-11-25T10:00:00.000Z``); in version 2 also a string that is not valid Unicode (a lone surrogate) and
    an integer beyond its column (partition over 32 bits, offsets over 64 bits, timestamp over signed 64 bits).
    """
    _check_source(source)
    if not _is_rfc3339(created_at):
        raise ValueError(f"created_at must be an RFC 3339 timestamp with an offset, got {created_at!r}")
    first, last = source.first_offset, source.last_offset
    for record in records:
        offset = record.meta.offset
        if not first <= offset <= last:
            raise ValueError(f"record offset {offset} is outside the source range {first}..{last}")
    if version == 2:
        return _encode_v2(records, source, created_at)
    if version == 1:
        return _encode_v1(records, source, created_at)
    raise ValueError(f"cannot write format version {version}: versions 1 and 2 exist")


def _seal_object(version: int, header: Sequence[bytes], bodies: Iterable[bytes]) -> bytes:
    """Preamble, header (given in pieces), in version 2 the header digest, bodies, and the sha256 trailer of
    everything before it."""
    parts = [PREAMBLE.pack(MAGIC, version, sum(map(len, header))), *header]
    if version >= 2:
        digest = hashlib.sha256(parts[0])
        for piece in header:
            digest.update(piece)
        parts.append(digest.digest())
    covered = b"".join([*parts, *bodies])
    return covered + hashlib.sha256(covered).digest()


def _preamble(blob: bytes, *, verify_trailer: bool = True) -> tuple[int, int, int]:
    """What every version checks first: size, magic, version, sha256 trailer, header length, and (version 2)
    the header digest. Returns the version and where the body starts and ends. ``verify_trailer=False`` leaves
    out the trailer of a version 2 object (a version 1 object has nothing else to vouch for its header)."""
    if len(blob) < PREAMBLE.size + TRAILER_BYTES:
        raise ContainerError(f"object too short to be an archive container ({len(blob)} bytes)")
    magic, version, header_length = PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        raise ContainerError("not an archive container (bad magic)")
    # Checked before the trailer: a future version may lay out (or checksum) its bytes differently.
    if version not in READABLE_VERSIONS:
        raise ContainerError(f"unsupported format version {version}")
    body_end = len(blob) - TRAILER_BYTES
    view = memoryview(blob)
    if (verify_trailer or version == 1) and hashlib.sha256(view[:body_end]).digest() != view[body_end:]:
        raise ContainerError("checksum mismatch: the object is corrupt or truncated")
    header_end = PREAMBLE.size + header_length
    body_start = header_end + (HEADER_DIGEST_BYTES if version >= 2 else 0)
    if body_start > body_end:
        raise ContainerError(f"header length {header_length} exceeds the object")
    if version >= 2 and hashlib.sha256(view[:header_end]).digest() != view[header_end:body_start]:
        raise ContainerError("header checksum mismatch: the header digest does not match the header")
    return version, body_start, body_end


def decode_container(blob: bytes) -> Container:
    """Parse and verify an archive object of any readable version: magic, version, lengths, sha256 trailer,
    header schema, and that the records tile the body section. Records stay sealed (opening them needs their
    keys).

    Raises ContainerError with the reason on any failure; an unknown version gives
    ``"unsupported format version N"``.
    """
    source, created_at, entries, body_start = _parse(blob)
    records = tuple(
        ContainerRecord(meta=meta, sealed=blob[body_start + start : body_start + start + length])
        for meta, start, length in entries
    )
    return Container(source=source, created_at=created_at, records=records)


def read_records(blob: bytes, indexes: Collection[int], *, verify_trailer: bool = True) -> dict[int, ContainerRecord]:
    """Some records of an object, by position: what reading a conversation needs from a large batch object.

    Verifies what :func:`decode_container` verifies of the object (magic, version, sha256 trailer, header digest,
    the header's own fields and table sizes) and of each requested record (its header entry, and that its bytes
    lie inside the body); the other entries are not decoded: the trailer already vouches for them, and reading a
    conversation spread over many objects would otherwise spend most of its time on records it does not open. In
    version 2 that is a few array lookups per record; version 1 still parses the whole JSON header. Raises
    ContainerError the same way, and for a position the object does not have.

    ``verify_trailer=False`` (version 2; a version 1 object is always checked whole) skips hashing the whole
    object, about 1.2 ms for a 2 MB batch object: the header is verified by its digest, and the records' bytes are
    left to AES-GCM, which the caller must open them with (their event id and subject, its associated data, come
    from the verified header). It is what a reader of byte ranges could verify: corruption in a returned record
    then surfaces as ``RecordTampered`` when it is opened, and corruption elsewhere in the body is not seen.
    """
    version, body_start, body_end = _preamble(blob, verify_trailer=verify_trailer)
    selected: dict[int, ContainerRecord] = {}
    if version == 1:
        source, _created_at, raw_records = _v1_envelope(blob, body_start, body_end)
        count = len(raw_records)
        for index in indexes:
            if not 0 <= index < count:
                raise ContainerError(f"record {index} is not in the object ({count} records)")
            meta, start, length = _v1_record(raw_records[index], index, source)
            _check_inside(index, start, length, body_end - body_start)
            selected[index] = ContainerRecord(meta, blob[body_start + start : body_start + start + length])
        return selected
    tables = _v2_tables(blob, body_start, body_end, streamed=version == STREAM_VERSION)
    for index, meta, start, end in _v2_select(tables, indexes):
        selected[index] = ContainerRecord(meta, blob[body_start + start : body_start + end])
    return selected


def read_header(blob: bytes) -> tuple[SourceRange, str, tuple[RecordMeta, ...]]:
    """The source range, creation time and record metadata of an object, without copying the records out.

    Verifies exactly what :func:`decode_container` verifies (the trailer included) and raises ContainerError
    the same way. This is all that rebuilding the index needs: no key is involved.
    """
    source, created_at, entries, _body_start = _parse(blob)
    return source, created_at, tuple(meta for meta, _start, _length in entries)


def _parse(blob: bytes) -> tuple[SourceRange, str, list[tuple[RecordMeta, int, int]], int]:
    """Verify everything but the records' encryption; every entry as (metadata, start, length) in the body,
    and where the body starts."""
    version, body_start, body_end = _preamble(blob)
    if version == 1:
        source, created_at, entries = _v1_parse(blob, body_start, body_end)
    else:
        source, created_at, entries = _v2_parse(
            _v2_tables(blob, body_start, body_end, streamed=version == STREAM_VERSION)
        )
    return source, created_at, entries, body_start


def _check_inside(index: int, start: int, length: int, body_length: int) -> None:
    """A record's bytes lie inside the body."""
    if start < 0 or length < 0 or start + length > body_length:
        where = f"record {index} range [{start}, {start + length})"
        raise ContainerError(f"{where} falls outside the body of {body_length} bytes")


# --- version 2: binary columns ------------------------------------------------------------------------------
#
# header = fixed part | int64/uint64 columns | uint32 columns | uint8 column | alias refs | string ends | strings
# Every integer is big-endian. A string reference is 0 for null, k >= 1 for the k-th string of the table.

V2_FIXED: Final = struct.Struct(">IIIIIQQII")
"""records N, alias entries A, strings S, string bytes L, partition, first_offset, last_offset, topic (string
reference), created_at (string reference): 44 bytes."""

V2_REF_COLUMNS: Final = (
    "event_id",
    "subject_ref",
    "dek_id",
    "kind",
    "type",
    "received_at",
    "waba_id",
    "phone_number_id",
    "message_ref",
    "original_message_ref",
)
"""The string-reference columns, in their order in the header; the first four must not be null."""
_V2_REQUIRED: Final = 4
# Bytes per record: timestamp (int64), offset (uint64), body end (uint64), ten string references and the alias end
# (uint32 each), the timestamp flag (uint8).
V2_RECORD_BYTES: Final = 3 * 8 + (len(V2_REF_COLUMNS) + 1) * 4 + 1
_U32_MAX: Final = 2**32 - 1
_BULK_STRINGS: Final = 64  # from this many strings on, decode the whole ASCII string table once and slice it
_U64_MAX: Final = 2**64 - 1

# Columns are read into (and written from) arrays of machine integers: a memcpy and a byte swap, no Python object
# per value until a value is looked at.
_SWAP: Final = sys.byteorder == "little"
if array("I").itemsize != 4 or array("Q").itemsize != 8 or array("q").itemsize != 8:  # pragma: no cover
    raise ImportError("this platform's C integer sizes do not fit the archive format's columns")


def _column(blob: bytes, typecode: str, start: int, count: int) -> array[int]:
    """``count`` big-endian integers of the array ``typecode`` at ``start``."""
    values = array(typecode)
    values.frombytes(memoryview(blob)[start : start + count * values.itemsize])
    if _SWAP and values.itemsize > 1:
        values.byteswap()
    return values


def _big_endian(values: array[int]) -> bytes:
    if _SWAP and values.itemsize > 1:
        values.byteswap()
    return values.tobytes()


@dataclass(frozen=True, slots=True)
class _V2Strings:
    """The string table of a version 2 header: ``ends[k - 1]`` is where string k ends in the string bytes, which
    start at ``start`` in the object and are ``length`` long."""

    blob: bytes
    ends: array[int]
    start: int
    length: int

    def get(self, ref: int, what: str) -> str:
        """The string ``ref`` points at, checked: not null, in the table, inside the string bytes, UTF-8."""
        count = len(self.ends)
        if ref == 0:
            raise ContainerError(f"malformed header: {what} must be a string, not null")
        if ref > count:
            raise ContainerError(f"malformed header: {what} refers to string {ref} of a table of {count}")
        end = self.ends[ref - 1]
        start = self.ends[ref - 2] if ref > 1 else 0
        if not start <= end <= self.length:
            raise ContainerError(
                f"malformed header: string {ref} spans [{start}, {end}), not inside the {self.length} string bytes"
            )
        try:
            return self.blob[self.start + start : self.start + end].decode()
        except UnicodeDecodeError:
            raise ContainerError(f"malformed header: string {ref} is not UTF-8") from None

    def _ascii(self) -> str | None:
        """The whole string bytes as text when they are ASCII (byte offsets are then character offsets)."""
        try:
            return codecs.ascii_decode(memoryview(self.blob)[self.start : self.start + self.length])[0]
        except UnicodeDecodeError:
            return None

    def many(self, refs: Collection[int]) -> dict[int, str]:
        """The strings of these references, each checked as :meth:`get` checks it (0 included: refused)."""
        text = self._ascii() if len(refs) > _BULK_STRINGS else None
        if text is None:
            return {ref: self.get(ref, "string") for ref in refs}
        ends, count, length = self.ends, len(self.ends), self.length
        found: dict[int, str] = {}
        for ref in refs:
            if not 0 < ref <= count:
                self.get(ref, "string")  # raises
            end = ends[ref - 1]
            start = ends[ref - 2] if ref > 1 else 0
            if not start <= end <= length:
                self.get(ref, "string")  # raises
            found[ref] = text[start:end]
        return found

    def all(self) -> list[str]:
        """Every string of the table, checked: in order, UTF-8, distinct."""
        ends = self.ends
        decrease = _first_decrease(ends)
        if decrease is not None:
            self.get(decrease + 1, "string")  # raises: it ends before it starts
        text = self._ascii()
        if text is not None:
            strings = [text[start:end] for start, end in zip(chain((0,), ends), ends, strict=False)]  # one start more
        else:
            strings = [self.get(ref, "string") for ref in range(1, len(ends) + 1)]
        if len(set(strings)) != len(strings):
            seen: dict[str, int] = {}
            for ref, value in enumerate(strings, start=1):
                if value in seen:
                    raise ContainerError(f"malformed header: string {ref} repeats string {seen[value]}")
                seen[value] = ref
        return strings


@dataclass(frozen=True, slots=True, kw_only=True)
class _V2Tables:
    """A version 2 header whose fixed part, table sizes and own fields were checked: its columns as arrays, no
    record decoded yet."""

    source: SourceRange
    created_at: str
    header_refs: tuple[int, int]  # topic, created_at
    count: int
    timestamps: array[int]
    offsets: array[int]
    body_ends: array[int]
    refs: tuple[array[int], ...]  # in V2_REF_COLUMNS order
    alias_ends: array[int]
    has_timestamp: array[int]
    aliases: array[int]
    strings: _V2Strings
    body_length: int


def _encode_v2(records: Sequence[ContainerRecord], source: SourceRange, created_at: str) -> bytes:
    header = _v2_header(
        [record.meta for record in records], accumulate(len(record.sealed) for record in records), source, created_at
    )
    return _seal_object(2, header, [record.sealed for record in records])


def _v2_header(
    metas: Sequence[RecordMeta], body_ends: Iterable[int], source: SourceRange, created_at: str
) -> list[bytes]:
    """A version 2 header, in pieces (version 3 writes the same with one record and ``body_ends`` [0])."""
    if source.partition > _U32_MAX or source.last_offset > _U64_MAX:
        raise ValueError("source partition must fit in 32 bits and offsets in 64 bits (format version 2)")
    values = [list(map(attrgetter(name), metas)) for name in V2_REF_COLUMNS]
    alias_values = [alias for meta in metas for alias in meta.alias_refs]
    # The distinct strings in order of first use (dict.fromkeys keeps it), each stored once.
    distinct = dict.fromkeys(chain((source.topic, created_at), *values, alias_values))
    distinct.pop(None, None)
    try:
        encoded = [text.encode() for text in distinct]
    except UnicodeEncodeError as exc:
        raise ValueError(f"a header string is not valid Unicode ({exc.reason})") from None
    string_ends = list(accumulate(map(len, encoded)))
    string_bytes = string_ends[-1] if string_ends else 0
    if max(len(metas), len(alias_values), len(encoded), string_bytes) > _U32_MAX:
        raise ValueError("the header's tables exceed their 32-bit sizes (format version 2)")
    ids: dict[str | None, int] = {text: ref for ref, text in enumerate(distinct, start=1)}
    ids[None] = 0
    timestamps = [meta.timestamp for meta in metas]
    try:
        timestamp_column = array("q", [0 if t is None else t for t in timestamps])
    except OverflowError:
        raise ValueError("a record timestamp does not fit in a signed 64-bit integer") from None
    fixed = V2_FIXED.pack(
        len(metas),
        len(alias_values),
        len(encoded),
        string_bytes,
        source.partition,
        source.first_offset,
        source.last_offset,
        ids[source.topic],
        ids[created_at],
    )
    lookup = ids.__getitem__
    columns = [
        timestamp_column,
        array("Q", [meta.offset for meta in metas]),
        array("Q", body_ends),
        *(array("I", map(lookup, column)) for column in values),
        array("I", accumulate(len(meta.alias_refs) for meta in metas)),
        array("B", [t is not None for t in timestamps]),
        array("I", map(lookup, alias_values)),
        array("I", string_ends),
    ]
    return [fixed, *map(_big_endian, columns), *encoded]


def encode_stream_head(meta: RecordMeta, *, source: SourceRange, created_at: str) -> bytes:
    """The front of a version 3 object of the one record ``meta`` describes: preamble, header and header digest.
    The sealed stream follows it, then the sha256 of everything before the trailer. Raises ValueError as
    :func:`encode_container` does for what readers would refuse."""
    _check_source(source)
    if not _is_rfc3339(created_at):
        raise ValueError(f"created_at must be an RFC 3339 timestamp with an offset, got {created_at!r}")
    if not source.first_offset <= meta.offset <= source.last_offset:
        first, last = source.first_offset, source.last_offset
        raise ValueError(f"record offset {meta.offset} is outside the source range {first}..{last}")
    header = _v2_header([meta], [0], source, created_at)
    preamble = PREAMBLE.pack(MAGIC, STREAM_VERSION, sum(map(len, header)))
    digest = hashlib.sha256(preamble)
    for piece in header:
        digest.update(piece)
    return b"".join([preamble, *header, digest.digest()])


def stream_head_length(preamble: bytes) -> int:
    """How many bytes the front of a version 3 object takes (preamble, header, header digest), from its first
    :data:`PREAMBLE` ``.size`` bytes. Raises ContainerError when they are not those of a version 3 object."""
    if len(preamble) < PREAMBLE.size:
        raise ContainerError(f"object too short to be an archive container ({len(preamble)} bytes)")
    magic, version, header_length = PREAMBLE.unpack_from(preamble)
    if magic != MAGIC:
        raise ContainerError("not an archive container (bad magic)")
    if version != STREAM_VERSION:
        raise ContainerError(f"format version {version} is not a streamed object")
    return int(PREAMBLE.size + header_length + HEADER_DIGEST_BYTES)


def read_stream_head(head: bytes, object_size: int) -> tuple[SourceRange, str, RecordMeta, int]:
    """The source range, creation time and record metadata of a version 3 object from its front alone
    (:func:`stream_head_length` bytes), and the length of its sealed stream. Verifies the header digest and
    every rule of the header (its one record, ``body_end`` 0); the stream is authenticated chunk by chunk as it
    is opened, and the trailer by a reader that hashes what it reads. Raises ContainerError."""
    if len(head) != stream_head_length(head) or object_size < len(head) + TRAILER_BYTES:
        raise ContainerError(f"the front of a streamed object is {len(head)} bytes of an object of {object_size}")
    header_end = len(head) - HEADER_DIGEST_BYTES
    view = memoryview(head)
    if hashlib.sha256(view[:header_end]).digest() != view[header_end:]:
        raise ContainerError("header checksum mismatch: the header digest does not match the header")
    body_end = object_size - TRAILER_BYTES
    source, created_at, entries = _v2_parse(_v2_tables(head, len(head), body_end, streamed=True))
    (meta, _start, length), *_ = entries
    return source, created_at, meta, int(length)


def _v2_tables(blob: bytes, body_start: int, body_end: int, *, streamed: bool = False) -> _V2Tables:
    """The fixed part of a version 2 header, its table sizes, its own fields (topic, created_at, source range)
    and the O(1) checks of the whole tables (each ends where its count says); no record entry is looked at.

    ``streamed``: a version 3 header, the same but for one record whose ``body_end`` is 0 and means the whole
    body."""
    header_length = body_start - HEADER_DIGEST_BYTES - PREAMBLE.size
    if header_length < V2_FIXED.size:
        raise ContainerError(f"malformed header: {header_length} bytes, under the {V2_FIXED.size} of its fixed part")
    count, alias_count, string_count, string_bytes, partition, first, last, topic_ref, created_ref = (
        V2_FIXED.unpack_from(blob, PREAMBLE.size)
    )
    expected = V2_FIXED.size + count * V2_RECORD_BYTES + 4 * alias_count + 4 * string_count + string_bytes
    if expected != header_length:
        raise ContainerError(
            f"malformed header: tables of {count} records, {alias_count} aliases and {string_count} strings "
            f"({string_bytes} bytes) take {expected} bytes, not the header length {header_length}"
        )
    position = PREAMBLE.size + V2_FIXED.size

    def take(typecode: str, length: int) -> array[int]:
        nonlocal position
        values = _column(blob, typecode, position, length)
        position += length * values.itemsize
        return values

    timestamps, offsets, body_ends = take("q", count), take("Q", count), take("Q", count)
    refs = tuple(take("I", count) for _ in V2_REF_COLUMNS)
    alias_ends, has_timestamp = take("I", count), take("B", count)
    aliases, string_ends = take("I", alias_count), take("I", string_count)
    last_string_end = string_ends[-1] if string_count else 0
    if last_string_end != string_bytes:
        raise ContainerError(
            f"malformed header: the string table ends at byte {last_string_end}, not at its length {string_bytes}"
        )
    last_alias_end = alias_ends[-1] if count else 0
    if last_alias_end != alias_count:
        raise ContainerError(
            f"malformed header: the records' aliases end at entry {last_alias_end}, not at the {alias_count} entries"
        )
    body_length = body_end - body_start
    if streamed:
        if count != 1 or body_ends[0] != 0:
            raise ContainerError("malformed header: a version 3 object holds one record, whose body_end is 0")
        body_ends = array("Q", [body_length])
    last_body_end = body_ends[-1] if count else 0
    if last_body_end < body_length:
        raise ContainerError(f"body bytes [{last_body_end}, {body_length}) belong to no record")
    if last_body_end > body_length:
        start = body_ends[-2] if count > 1 else 0
        raise ContainerError(
            f"record {count - 1} range [{start}, {last_body_end}) falls outside the body of {body_length} bytes"
        )
    strings = _V2Strings(blob, string_ends, position, string_bytes)
    source = SourceRange(strings.get(topic_ref, "topic"), partition, first, last)
    try:
        _check_source(source)
    except ValueError as exc:
        raise ContainerError(f"malformed header: {exc}") from None
    created_at = strings.get(created_ref, "created_at")
    if not _is_rfc3339(created_at):
        raise ContainerError("malformed header: created_at is not an RFC 3339 timestamp")
    return _V2Tables(
        source=source,
        created_at=created_at,
        header_refs=(topic_ref, created_ref),
        count=count,
        timestamps=timestamps,
        offsets=offsets,
        body_ends=body_ends,
        refs=refs,
        alias_ends=alias_ends,
        has_timestamp=has_timestamp,
        aliases=aliases,
        strings=strings,
        body_length=body_length,
    )


def _v2_record(tables: _V2Tables, index: int) -> tuple[RecordMeta, int, int]:
    """Record ``index``'s metadata and body range [start, end), every value of its entry checked."""
    get = tables.strings.get
    refs = [column[index] for column in tables.refs]
    names = [f"record {index} field {name!r}" for name in V2_REF_COLUMNS]
    required = [get(ref, what) for what, ref in zip(names[:_V2_REQUIRED], refs[:_V2_REQUIRED], strict=True)]
    optional = [
        None if ref == 0 else get(ref, what)
        for what, ref in zip(names[_V2_REQUIRED:], refs[_V2_REQUIRED:], strict=True)
    ]
    alias_start = tables.alias_ends[index - 1] if index else 0
    alias_end = tables.alias_ends[index]
    if not alias_start <= alias_end <= len(tables.aliases):
        raise ContainerError(
            f"malformed header: record {index} aliases [{alias_start}, {alias_end}) are not inside the "
            f"{len(tables.aliases)} alias entries"
        )
    alias_refs = tuple(
        get(tables.aliases[entry], f"record {index} alias {entry - alias_start}")
        for entry in range(alias_start, alias_end)
    )
    timestamp = _v2_timestamp(tables, index)
    offset = tables.offsets[index]
    _v2_check_offset(tables, index)
    start = tables.body_ends[index - 1] if index else 0
    end = tables.body_ends[index]
    if not start <= end <= tables.body_length:
        raise ContainerError(
            f"record {index} range [{start}, {end}) falls outside the body of {tables.body_length} bytes"
        )
    event_id, subject_ref, dek_id, kind = required
    type_, received_at, waba_id, phone_number_id, message_ref, original_message_ref = optional
    meta = RecordMeta(
        event_id=event_id,
        subject_ref=subject_ref,
        alias_refs=alias_refs,
        dek_id=dek_id,
        kind=kind,
        type=type_,
        timestamp=timestamp,
        received_at=received_at,
        waba_id=waba_id,
        phone_number_id=phone_number_id,
        message_ref=message_ref,
        original_message_ref=original_message_ref,
        offset=offset,
    )
    return meta, start, end


def _v2_select(tables: _V2Tables, indexes: Iterable[int]) -> list[tuple[int, RecordMeta, int, int]]:
    """(index, metadata, body start, body end) of each requested record, checked exactly as :func:`_v2_record`
    checks it, only faster: the requested entries' references are gathered column by column and each string
    is decoded once (a conversation's records share their subject, key, kind, type and business ids). An
    irregular entry goes through :func:`_v2_record`, which raises the precise reason."""
    count = tables.count
    wanted = list(indexes)
    for index in wanted:
        if not 0 <= index < count:
            raise ContainerError(f"record {index} is not in the object ({count} records)")
    alias_ends, aliases = tables.alias_ends, tables.aliases
    alias_ranges = [(alias_ends[index - 1] if index else 0, alias_ends[index]) for index in wanted]
    columns = [[column[index] for index in wanted] for column in tables.refs]
    needed = set(chain(*columns, *(aliases[start:end] for start, end in alias_ranges)))
    needed.discard(0)
    try:
        text = tables.strings.many(needed)
    except ContainerError:  # a reference out of the table or a string not UTF-8: say which record has it
        for index in wanted:
            _v2_record(tables, index)
        raise
    optional: dict[int, str | None] = {0: None, **text}
    flags, timestamps, offsets, body_ends = tables.has_timestamp, tables.timestamps, tables.offsets, tables.body_ends
    first, last, body_length, alias_count = (
        tables.source.first_offset,
        tables.source.last_offset,
        tables.body_length,
        len(aliases),
    )
    selected: list[tuple[int, RecordMeta, int, int]] = []
    for index, (alias_start, alias_end), (e, s, d, k, t, r, w, p, m, o) in zip(
        wanted, alias_ranges, zip(*columns, strict=True), strict=True
    ):
        alias_refs = aliases[alias_start:alias_end]
        flag, timestamp, offset = flags[index], timestamps[index], offsets[index]
        start = body_ends[index - 1] if index else 0
        end = body_ends[index]
        if not (
            e
            and s
            and d
            and k
            and alias_start <= alias_end <= alias_count
            and 0 not in alias_refs
            and (flag == 1 or (flag == 0 and timestamp == 0))
            and first <= offset <= last
            and start <= end <= body_length
        ):
            selected.append((index, *_v2_record(tables, index)))  # raises the reason
            continue
        meta = RecordMeta(
            event_id=text[e],
            subject_ref=text[s],
            alias_refs=tuple(map(text.__getitem__, alias_refs)),
            dek_id=text[d],
            kind=text[k],
            type=optional[t],
            timestamp=timestamp if flag else None,
            received_at=optional[r],
            waba_id=optional[w],
            phone_number_id=optional[p],
            message_ref=optional[m],
            original_message_ref=optional[o],
            offset=offset,
        )
        selected.append((index, meta, start, end))
    return selected


def _v2_timestamp(tables: _V2Tables, index: int) -> int | None:
    flag, value = tables.has_timestamp[index], tables.timestamps[index]
    if flag == 1:
        return value
    if flag != 0:
        raise ContainerError(f"malformed header: record {index} timestamp flag is {flag}, not 0 or 1")
    if value != 0:
        raise ContainerError(f"malformed header: record {index} has no timestamp but a timestamp value {value}")
    return None


def _v2_check_offset(tables: _V2Tables, index: int) -> None:
    offset, first, last = tables.offsets[index], tables.source.first_offset, tables.source.last_offset
    if not first <= offset <= last:
        raise ContainerError(
            f"malformed header: record {index} offset {offset} is outside the source range {first}..{last}"
        )


def _first_decrease(values: array[int]) -> int | None:
    """The first position whose value is below its predecessor's, or None (the column never decreases)."""
    if all(map(le, values, islice(values, 1, None))):
        return None
    return next(i for i in range(1, len(values)) if values[i] < values[i - 1])


def _v2_check_columns(tables: _V2Tables) -> None:
    """What :func:`_v2_record` checks of one entry, for every entry at once (C loops over the arrays; the
    offending entry is searched for only on failure), and what only the whole tables show: the alias lists
    and the records follow each other, and every string is used, so the table holds the header's values only."""
    get, strings = tables.strings.get, len(tables.strings.ends)
    for position, (name, column) in enumerate(zip(V2_REF_COLUMNS, tables.refs, strict=True)):
        if position < _V2_REQUIRED and 0 in column:
            get(0, f"record {column.index(0)} field {name!r}")
        if column and max(column) > strings:
            index = next(i for i, ref in enumerate(column) if ref > strings)
            get(column[index], f"record {index} field {name!r}")
    decrease = _first_decrease(tables.alias_ends)
    if decrease is not None:
        start, end = tables.alias_ends[decrease - 1], tables.alias_ends[decrease]
        raise ContainerError(
            f"malformed header: record {decrease} aliases [{start}, {end}) are not inside the "
            f"{len(tables.aliases)} alias entries"
        )
    aliases = tables.aliases
    if aliases and (0 in aliases or max(aliases) > strings):
        entry = next(i for i, ref in enumerate(aliases) if not 0 < ref <= strings)
        index = bisect_right(tables.alias_ends, entry)
        start = tables.alias_ends[index - 1] if index else 0
        get(aliases[entry], f"record {index} alias {entry - start}")
    flags, timestamps = tables.has_timestamp, tables.timestamps
    if (flags and max(flags) > 1) or any(compress(timestamps, map(not_, flags))):  # absent but not 0
        _v2_timestamp(tables, next(i for i, flag in enumerate(flags) if flag > 1 or (not flag and timestamps[i])))
    offsets, first, last = tables.offsets, tables.source.first_offset, tables.source.last_offset
    if offsets and (min(offsets) < first or max(offsets) > last):
        _v2_check_offset(tables, next(i for i, offset in enumerate(offsets) if not first <= offset <= last))
    ends, body_length = tables.body_ends, tables.body_length
    if ends and max(ends) > body_length:
        index = next(i for i, end in enumerate(ends) if end > body_length)
        start = ends[index - 1] if index else 0
        raise ContainerError(
            f"record {index} range [{start}, {ends[index]}) falls outside the body of {body_length} bytes"
        )
    decrease = _first_decrease(ends)
    if decrease is not None:
        start, end = ends[decrease - 1], ends[decrease]
        raise ContainerError(
            f"record {decrease} range [{start}, {end}) falls outside the body of {tables.body_length} bytes"
        )
    # The strings in order of first use — topic, created_at, then column by column, then the aliases — must be
    # the table itself: every string used, numbered as the writer numbers them, so that exactly one header
    # encodes a given batch's metadata and no byte of it can carry anything else.
    used = dict.fromkeys(chain(tables.header_refs, *tables.refs, aliases))
    used.pop(0, None)
    if len(used) != strings:
        unused = next(ref for ref in range(1, strings + 1) if ref not in used)
        raise ContainerError(f"malformed header: string {unused} is referenced by no field")
    if not all(map(eq, used, numbers(1))):
        ref = next(expected for expected, found in zip(numbers(1), used) if found != expected)
        raise ContainerError(f"malformed header: string {ref} is not numbered in order of first use")


def _v2_parse(tables: _V2Tables) -> tuple[SourceRange, str, list[tuple[RecordMeta, int, int]]]:
    """Every entry of a version 2 header, checked as :func:`_v2_record` checks one, plus the whole-table checks
    (:meth:`_V2Strings.all`, :func:`_v2_check_columns`): the records tile the body, every string is used once."""
    strings = tables.strings.all()
    _v2_check_columns(tables)
    required: list[str] = ["", *strings]  # reference k is strings[k - 1]; 0 is not in these columns (checked)
    optional: list[str | None] = [None, *strings]
    alias_strings = [required[ref] for ref in tables.aliases]
    flags, timestamps, offsets = tables.has_timestamp, tables.timestamps, tables.offsets
    alias_ends, body_ends = tables.alias_ends, tables.body_ends
    entries: list[tuple[RecordMeta, int, int]] = []
    alias_start = start = 0
    for index, (e, s, d, k, t, r, w, p, m, o) in enumerate(zip(*tables.refs, strict=True)):
        alias_end, end = alias_ends[index], body_ends[index]
        meta = RecordMeta(
            event_id=required[e],
            subject_ref=required[s],
            alias_refs=tuple(alias_strings[alias_start:alias_end]),
            dek_id=required[d],
            kind=required[k],
            type=optional[t],
            timestamp=timestamps[index] if flags[index] else None,
            received_at=optional[r],
            waba_id=optional[w],
            phone_number_id=optional[p],
            message_ref=optional[m],
            original_message_ref=optional[o],
            offset=offsets[index],
        )
        entries.append((meta, start, end - start))
        alias_start, start = alias_end, end
    return tables.source, tables.created_at, entries


# --- version 1: a JSON header -------------------------------------------------------------------------------


def _encode_v1(records: Sequence[ContainerRecord], source: SourceRange, created_at: str) -> bytes:
    entries: list[dict[str, Any]] = []
    start = 0
    for record in records:
        meta = record.meta
        length = len(record.sealed)
        entries.append(
            {
                "event_id": meta.event_id,
                "subject_ref": meta.subject_ref,
                "alias_refs": list(meta.alias_refs),
                "dek_id": meta.dek_id,
                "kind": meta.kind,
                "type": meta.type,
                "timestamp": meta.timestamp,
                "received_at": meta.received_at,
                "waba_id": meta.waba_id,
                "phone_number_id": meta.phone_number_id,
                "message_ref": meta.message_ref,
                "original_message_ref": meta.original_message_ref,
                "offset": meta.offset,
                "start": start,
                "length": length,
            }
        )
        start += length
    header = _encode_header(
        {
            "format": 1,
            "created_at": created_at,
            "source": {
                "topic": source.topic,
                "partition": source.partition,
                "first_offset": source.first_offset,
                "last_offset": source.last_offset,
            },
            "records": entries,
        }
    )
    return _seal_object(1, [header], [record.sealed for record in records])


# The closed header schema of version 1: these fields, no others.
_SOURCE_FIELDS: Final = frozenset({"topic", "partition", "first_offset", "last_offset"})
_HEADER_FIELDS: Final = frozenset({"format", "created_at", "source", "records"})
_STR_FIELDS: Final = ("event_id", "subject_ref", "dek_id", "kind")
_OPTIONAL_STR_FIELDS: Final = (
    "type",
    "received_at",
    "waba_id",
    "phone_number_id",
    "message_ref",
    "original_message_ref",
)
_RECORD_FIELDS: Final = frozenset(
    {*_STR_FIELDS, *_OPTIONAL_STR_FIELDS, "alias_refs", "timestamp", "offset", "start", "length"}
)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _exact_fields(obj: object, expected: frozenset[str], where: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise ContainerError(f"malformed header: {where} is not a JSON object")
    keys = obj.keys()
    if keys != expected:
        missing = sorted(expected - keys)
        unexpected = sorted(keys - expected)
        raise ContainerError(f"malformed header: {where} missing {missing}, unexpected {unexpected}")
    return obj


def _v1_source(raw: object) -> SourceRange:
    fields = _exact_fields(raw, _SOURCE_FIELDS, "source")
    topic, partition = fields["topic"], fields["partition"]
    first, last = fields["first_offset"], fields["last_offset"]
    if not isinstance(topic, str) or not all(_is_int(v) for v in (partition, first, last)):
        raise ContainerError("malformed header: source has a field of the wrong type")
    source = SourceRange(topic=topic, partition=partition, first_offset=first, last_offset=last)
    try:
        _check_source(source)
    except ValueError as exc:
        raise ContainerError(f"malformed header: {exc}") from None
    return source


def _v1_record(raw: object, index: int, source: SourceRange) -> tuple[RecordMeta, int, int]:
    """One header entry as (metadata, start, length); raises ContainerError naming the first problem.

    The fast path relies on JSON decoding producing exact types: ``type(v) is int`` also refuses booleans.
    """
    if type(raw) is dict and raw.keys() == _RECORD_FIELDS:
        strings = (raw["event_id"], raw["subject_ref"], raw["dek_id"], raw["kind"])
        optional_strings = (
            raw["type"],
            raw["received_at"],
            raw["waba_id"],
            raw["phone_number_id"],
            raw["message_ref"],
            raw["original_message_ref"],
        )
        alias_refs, timestamp = raw["alias_refs"], raw["timestamp"]
        offset, start, length = raw["offset"], raw["start"], raw["length"]
        valid = (
            all(type(v) is str for v in strings)
            and all(v is None or type(v) is str for v in optional_strings)
            and type(alias_refs) is list
            and all(type(a) is str for a in alias_refs)
            and (timestamp is None or type(timestamp) is int)
            and type(offset) is int
            and type(start) is int
            and type(length) is int
            and source.first_offset <= offset <= source.last_offset
        )
        if valid:
            event_id, subject_ref, dek_id, kind = strings
            type_, received_at, waba_id, phone_number_id, message_ref, original_message_ref = optional_strings
            meta = RecordMeta(
                event_id=event_id,
                subject_ref=subject_ref,
                alias_refs=tuple(alias_refs),
                dek_id=dek_id,
                kind=kind,
                type=type_,
                timestamp=timestamp,
                received_at=received_at,
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                message_ref=message_ref,
                original_message_ref=original_message_ref,
                offset=offset,
            )
            return meta, start, length
    raise ContainerError(f"malformed header: record {index} {_v1_record_problem(raw, index, source)}")


def _v1_record_problem(raw: object, index: int, source: SourceRange) -> str:
    """Why :func:`_v1_record` refused an entry, for the error message (the slow path: only on failure)."""
    fields = _exact_fields(raw, _RECORD_FIELDS, f"record {index}")
    for name in _STR_FIELDS:
        if not isinstance(fields[name], str):
            return f"field {name!r} must be a string"
    for name in _OPTIONAL_STR_FIELDS:
        if fields[name] is not None and not isinstance(fields[name], str):
            return f"field {name!r} must be a string or null"
    alias_refs = fields["alias_refs"]
    if not isinstance(alias_refs, list) or not all(isinstance(a, str) for a in alias_refs):
        return "field 'alias_refs' must be a list of strings"
    if fields["timestamp"] is not None and not _is_int(fields["timestamp"]):
        return "field 'timestamp' must be an integer or null"
    if not all(_is_int(fields[name]) for name in ("offset", "start", "length")):
        return "fields 'offset', 'start' and 'length' must be integers"
    first, last = source.first_offset, source.last_offset
    return f"offset {fields['offset']} is outside the source range {first}..{last}"


def _v1_check_ranges(entries: Sequence[tuple[RecordMeta, int, int]], body_length: int) -> None:
    """Every record lies inside the body, no two overlap, together they cover it exactly."""
    for index, (_meta, start, length) in enumerate(entries):
        _check_inside(index, start, length, body_length)
    covered = 0
    ranges = sorted((start, start + length, index) for index, (_m, start, length) in enumerate(entries))
    for start, end, index in ranges:
        if start < covered:
            raise ContainerError(f"record {index} range [{start}, {end}) overlaps another record")
        if start > covered:
            raise ContainerError(f"body bytes [{covered}, {start}) belong to no record")
        covered = end
    if covered != body_length:
        raise ContainerError(f"body bytes [{covered}, {body_length}) belong to no record")


def _v1_parse(
    blob: bytes, body_start: int, body_end: int
) -> tuple[SourceRange, str, list[tuple[RecordMeta, int, int]]]:
    """Verify every entry of a version 1 header and that the records tile the body."""
    source, created_at, raw_records = _v1_envelope(blob, body_start, body_end)
    entries = [_v1_record(raw, index, source) for index, raw in enumerate(raw_records)]
    _v1_check_ranges(entries, body_end - body_start)
    return source, created_at, entries


def _v1_envelope(blob: bytes, body_start: int, body_end: int) -> tuple[SourceRange, str, list[Any]]:
    """The JSON header's own fields; returns the source range, the creation time and the undecoded entries."""
    try:
        # orjson: a v1 object's header is about 1 MB of JSON per 2,000 records; the strict field checks below
        # reject anything orjson would represent differently (its floats for huge integers are not ints).
        header = orjson.loads(memoryview(blob)[PREAMBLE.size : body_start])
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd numbers or nesting
        raise ContainerError(f"malformed header: not UTF-8 JSON ({exc})") from None
    fields = _exact_fields(header, _HEADER_FIELDS, "header")
    if not _is_int(fields["format"]) or fields["format"] != 1:
        raise ContainerError(f"malformed header: format {fields['format']!r} is not version 1")
    created_at = fields["created_at"]
    if not isinstance(created_at, str) or not _is_rfc3339(created_at):
        raise ContainerError("malformed header: created_at is not an RFC 3339 timestamp")
    source = _v1_source(fields["source"])
    raw_records = fields["records"]
    if not isinstance(raw_records, list):
        raise ContainerError("malformed header: records is not a list")
    return source, created_at, raw_records
