"""The archive object format, version 1 (docs/ARCHIVE_FORMAT.md): one object = one batch of one partition.

    magic b"WAARCH" | version u8 | header length u32 BE | header (UTF-8 JSON) | sealed records | sha256 trailer

The header holds only pseudonymous metadata per record — enough to rebuild the index without any key — and
where each sealed record lies in the body. The trailer (sha256 of everything before it) detects corruption
without keys; AES-GCM authenticates each record with its key. Readers refuse versions they do not know.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

MAGIC = b"WAARCH"
FORMAT_VERSION = 1
PREAMBLE = struct.Struct(">6sBI")
TRAILER_BYTES = 32


class ContainerError(ValueError):
    """The object is not a valid archive container (corrupt, truncated, or of an unknown version)."""


@dataclass(frozen=True, slots=True)
class RecordMeta:
    event_id: str
    subject_ref: str
    alias_refs: tuple[str, ...]
    dek_id: str
    kind: str
    type: str | None
    timestamp: int | None
    received_at: str | None
    waba_id: str | None
    phone_number_id: str | None
    message_ref: str | None
    original_message_ref: str | None
    offset: int


@dataclass(frozen=True, slots=True)
class SourceRange:
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
    """Deterministic and sortable: the same batch replayed overwrites its object instead of duplicating it."""
    return f"{prefix}/{source.topic}/{source.partition:05d}/{source.first_offset:020d}.waarc"


def encode_container(records: Sequence[ContainerRecord], *, source: SourceRange, created_at: str) -> bytes:
    entries: list[dict[str, Any]] = []
    start = 0
    for record in records:
        meta = record.meta
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
                "length": len(record.sealed),
            }
        )
        start += len(record.sealed)
    header = orjson.dumps(
        {
            "format": FORMAT_VERSION,
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
    body = b"".join([PREAMBLE.pack(MAGIC, FORMAT_VERSION, len(header)), header, *(r.sealed for r in records)])
    return body + hashlib.sha256(body).digest()


def _parse(blob: bytes) -> tuple[SourceRange, str, list[tuple[RecordMeta, int, int]], int]:
    if len(blob) < PREAMBLE.size + TRAILER_BYTES:
        raise ContainerError("object too short to be an archive container")
    magic, version, header_length = PREAMBLE.unpack_from(blob)
    if magic != MAGIC:
        raise ContainerError("not an archive container (bad magic)")
    if version != FORMAT_VERSION:
        raise ContainerError(f"unsupported format version {version}")
    if hashlib.sha256(blob[:-TRAILER_BYTES]).digest() != blob[-TRAILER_BYTES:]:
        raise ContainerError("checksum mismatch: the object is corrupt or truncated")
    body_start = PREAMBLE.size + header_length
    body_end = len(blob) - TRAILER_BYTES
    if body_start > body_end:
        raise ContainerError("header length exceeds the object")
    try:
        header = orjson.loads(blob[PREAMBLE.size : body_start])
        source_raw = header["source"]
        source = SourceRange(
            str(source_raw["topic"]),
            int(source_raw["partition"]),
            int(source_raw["first_offset"]),
            int(source_raw["last_offset"]),
        )
        created_at = str(header["created_at"])
        if header.get("format") != FORMAT_VERSION:
            raise ContainerError("header format does not match the preamble")
        entries: list[tuple[RecordMeta, int, int]] = []
        for raw in header["records"]:
            meta = RecordMeta(
                event_id=str(raw["event_id"]),
                subject_ref=str(raw["subject_ref"]),
                alias_refs=tuple(str(a) for a in raw.get("alias_refs", [])),
                dek_id=str(raw["dek_id"]),
                kind=str(raw["kind"]),
                type=raw.get("type"),
                timestamp=raw.get("timestamp"),
                received_at=raw.get("received_at"),
                waba_id=raw.get("waba_id"),
                phone_number_id=raw.get("phone_number_id"),
                message_ref=raw.get("message_ref"),
                original_message_ref=raw.get("original_message_ref"),
                offset=int(raw["offset"]),
            )
            entries.append((meta, int(raw["start"]), int(raw["length"])))
    except ContainerError:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ContainerError(f"malformed header: {type(exc).__name__}") from None
    body_length = body_end - body_start
    expected_start = 0
    for _meta, start, length in entries:
        # Records are contiguous, in order, and inside the body: no overlap, no gap, nothing outside.
        if start != expected_start or length < 0 or start + length > body_length:
            raise ContainerError("record ranges overlap or fall outside the body")
        expected_start = start + length
    if expected_start != body_length:
        raise ContainerError("body holds bytes no record accounts for")
    return source, created_at, entries, body_start


def decode_container(blob: bytes) -> Container:
    source, created_at, entries, body_start = _parse(blob)
    records = tuple(
        ContainerRecord(meta, blob[body_start + start : body_start + start + length]) for meta, start, length in entries
    )
    return Container(source, created_at, records)


def read_header(blob: bytes) -> tuple[SourceRange, str, tuple[RecordMeta, ...]]:
    source, created_at, entries, _ = _parse(blob)
    return source, created_at, tuple(meta for meta, _start, _length in entries)
