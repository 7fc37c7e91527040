"""The archive object format, version 1 (docs/ARCHIVE_FORMAT.md): one object holds one batch of sealed records
from one Kafka partition.

    magic b"WAARCH" (6) | version u8 (1) | header length u32 BE | header (UTF-8 JSON) |
    record bodies | sha256 (32) of everything before it

The header carries only pseudonymous metadata per record — enough to rebuild the PostgreSQL index without any
key — and where each sealed record lies in the body section. The trailer (sha256 of everything before it)
detects corruption and truncation without keys; AES-GCM authenticates each record with its own key. The header
schema is closed: a reader refuses unknown versions, missing or unexpected fields and ill-typed values, so no
field (and no personal data) can slip into the clear without a new format version.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import orjson

MAGIC: Final = b"WAARCH"
FORMAT_VERSION: Final = 1
PREAMBLE: Final = struct.Struct(">6sBI")  # magic, version, header length
TRAILER_BYTES: Final = 32
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


def encode_container(records: Sequence[ContainerRecord], *, source: SourceRange, created_at: str) -> bytes:
    """Serialise one batch into an archive object; :func:`decode_container` gives back exactly these records.

    Raises ValueError when the input would make an object readers refuse: an empty topic, negative or
    inverted offsets, a record offset outside ``source``, or ``created_at`` that is not an RFC 3339 timestamp
    with an offset (e.g. ``2026-11-25T10:00:00.000Z``).
    """
    _check_source(source)
    if not _is_rfc3339(created_at):
        raise ValueError(f"created_at must be an RFC 3339 timestamp with an offset, got {created_at!r}")
    first, last = source.first_offset, source.last_offset
    entries: list[dict[str, Any]] = []
    start = 0
    for record in records:
        meta = record.meta
        if not first <= meta.offset <= last:
            raise ValueError(f"record offset {meta.offset} is outside the source range {first}..{last}")
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
            "format": FORMAT_VERSION,
            "created_at": created_at,
            "source": {
                "topic": source.topic,
                "partition": source.partition,
                "first_offset": first,
                "last_offset": last,
            },
            "records": entries,
        }
    )
    preamble = PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header))
    covered = b"".join([preamble, header, *[record.sealed for record in records]])
    return covered + hashlib.sha256(covered).digest()


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


def _source(raw: object) -> SourceRange:
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


def _record(raw: object, index: int, source: SourceRange) -> tuple[RecordMeta, int, int]:
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
    raise ContainerError(f"malformed header: record {index} {_record_problem(raw, index, source)}")


def _record_problem(raw: object, index: int, source: SourceRange) -> str:
    """Why :func:`_record` refused an entry, for the error message (the slow path: only on failure)."""
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


def _check_inside(index: int, start: int, length: int, body_length: int) -> None:
    """A record's bytes lie inside the body."""
    if start < 0 or length < 0 or start + length > body_length:
        where = f"record {index} range [{start}, {start + length})"
        raise ContainerError(f"{where} falls outside the body of {body_length} bytes")


def _check_ranges(entries: Sequence[tuple[RecordMeta, int, int]], body_length: int) -> None:
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


def _parse(blob: bytes) -> tuple[SourceRange, str, list[tuple[RecordMeta, int, int]], int]:
    """Verify everything but the records' encryption; return the header and where the body starts."""
    source, created_at, raw_records, body_start, body_end = _parse_envelope(blob)
    entries = [_record(raw, index, source) for index, raw in enumerate(raw_records)]
    _check_ranges(entries, body_end - body_start)
    return source, created_at, entries, body_start


def _parse_envelope(blob: bytes) -> tuple[SourceRange, str, list[Any], int, int]:
    """Verify the preamble, the trailer and the header's own fields; return the source range, the creation time,
    the undecoded header entries and where the body starts and ends."""
    if len(blob) < PREAMBLE.size + TRAILER_BYTES:
        raise ContainerError(f"object too short to be an archive container ({len(blob)} bytes)")
    magic, version, header_length = PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        raise ContainerError("not an archive container (bad magic)")
    # Checked before the trailer: a future version may lay out (or checksum) its bytes differently.
    if version != FORMAT_VERSION:
        raise ContainerError(f"unsupported format version {version}")
    body_end = len(blob) - TRAILER_BYTES
    view = memoryview(blob)
    if hashlib.sha256(view[:body_end]).digest() != view[body_end:]:
        raise ContainerError("checksum mismatch: the object is corrupt or truncated")
    body_start = PREAMBLE.size + header_length
    if body_start > body_end:
        raise ContainerError(f"header length {header_length} exceeds the object")
    try:
        # orjson: reading a conversation parses hundreds of thousands of header entries; the strict field checks
        # below reject anything orjson would represent differently (its floats for huge integers are not ints).
        header = orjson.loads(view[PREAMBLE.size : body_start])
    except (ValueError, RecursionError) as exc:  # bad UTF-8, bad JSON, absurd numbers or nesting
        raise ContainerError(f"malformed header: not UTF-8 JSON ({exc})") from None
    fields = _exact_fields(header, _HEADER_FIELDS, "header")
    if not _is_int(fields["format"]) or fields["format"] != version:
        raise ContainerError(f"malformed header: format {fields['format']!r} is not version {version}")
    created_at = fields["created_at"]
    if not isinstance(created_at, str) or not _is_rfc3339(created_at):
        raise ContainerError("malformed header: created_at is not an RFC 3339 timestamp")
    source = _source(fields["source"])
    raw_records = fields["records"]
    if not isinstance(raw_records, list):
        raise ContainerError("malformed header: records is not a list")
    return source, created_at, raw_records, body_start, body_end


def decode_container(blob: bytes) -> Container:
    """Parse and verify an archive object: magic, version, lengths, sha256 trailer, header schema, and that
    the records tile the body section. Records stay sealed (opening them needs their keys).

    Raises ContainerError with the reason on any failure; an unknown version gives
    ``"unsupported format version N"``.
    """
    source, created_at, entries, body_start = _parse(blob)
    records = tuple(
        ContainerRecord(meta=meta, sealed=blob[body_start + start : body_start + start + length])
        for meta, start, length in entries
    )
    return Container(source=source, created_at=created_at, records=records)


def read_records(blob: bytes, indexes: Collection[int]) -> dict[int, ContainerRecord]:
    """Some records of an object, by position: what reading a conversation needs from a large batch object.

    Verifies what :func:`decode_container` verifies of the object (magic, version, sha256 trailer, the header's
    own fields) and of each requested record (its header entry, and that its bytes lie inside the body); the
    other entries are not decoded: the trailer already vouches for them, and reading a conversation spread over
    many objects would otherwise spend most of its time on records it does not open. Raises ContainerError the
    same way, and for a position the object does not have.
    """
    source, _created_at, raw_records, body_start, body_end = _parse_envelope(blob)
    body_length = body_end - body_start
    selected: dict[int, ContainerRecord] = {}
    for index in indexes:
        if not 0 <= index < len(raw_records):
            raise ContainerError(f"record {index} is not in the object ({len(raw_records)} records)")
        meta, start, length = _record(raw_records[index], index, source)
        _check_inside(index, start, length, body_length)
        selected[index] = ContainerRecord(meta=meta, sealed=blob[body_start + start : body_start + start + length])
    return selected


def read_header(blob: bytes) -> tuple[SourceRange, str, tuple[RecordMeta, ...]]:
    """The source range, creation time and record metadata of an object, without copying the records out.

    Verifies exactly what :func:`decode_container` verifies (the trailer included) and raises ContainerError
    the same way. This is all that rebuilding the index needs: no key is involved.
    """
    source, created_at, entries, _body_start = _parse(blob)
    return source, created_at, tuple(meta for meta, _start, _length in entries)
