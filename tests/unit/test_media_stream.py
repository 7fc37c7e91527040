"""Streamed media objects (format version 3): a sealed stream of chunks behind a version 2 header of one record.
Round trips of any size, chunk size and feeding, every way a stream can be cut, reordered or swapped, and what one
upload may hold."""

from __future__ import annotations

import hashlib
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.archiver.media_store import stream_memory
from services.archiver.settings import MediaSettings
from services.core.container import (
    PREAMBLE,
    STREAM_VERSION,
    ContainerError,
    RecordMeta,
    SourceRange,
    decode_container,
    encode_stream_head,
    read_header,
    read_records,
    read_stream_head,
    stream_head_length,
)
from services.core.crypto import (
    SEALED_OVERHEAD,
    STREAM_HEADER,
    RecordTampered,
    StreamOpener,
    StreamSealer,
    sealed_stream_length,
)

DEK = bytes(range(32))
OTHER_DEK = bytes(range(1, 33))
EVENT, SUBJECT = "e" * 32 + ".media", "a" * 64
SOURCE = SourceRange("wa.events.v1", 3, 7, 7)
META = RecordMeta(
    event_id=EVENT,
    subject_ref=SUBJECT,
    alias_refs=(),
    dek_id="dek-1",
    kind="media",
    type="application/pdf",
    timestamp=1764064800,
    received_at="2026-11-25T10:00:01.250Z",
    waba_id="102290129340398",
    phone_number_id="106540352242922",
    message_ref=None,
    original_message_ref=None,
    offset=7,
)


def chunks_of(data: bytes, size: int) -> list[bytes]:
    """How a writer cuts ``data``: full chunks, then a last one of 0..size bytes (never an empty one after a full)."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)] or [b""]
    return pieces


def sealed_chunks(
    data: bytes, chunk_size: int, *, key: bytes = DEK, event_id: str = EVENT
) -> tuple[bytes, list[bytes]]:
    sealer = StreamSealer(key, event_id=event_id, subject_ref=SUBJECT, chunk_size=chunk_size)
    pieces = chunks_of(data, chunk_size)
    return sealer.header, [sealer.seal(p, final=i == len(pieces) - 1) for i, p in enumerate(pieces)]


def sealed_stream(data: bytes, chunk_size: int, **kwargs: object) -> bytes:
    header, chunks = sealed_chunks(data, chunk_size, **kwargs)  # type: ignore[arg-type]
    return header + b"".join(chunks)


def open_stream(sealed: bytes, piece: int = 1000, *, key: bytes = DEK, event_id: str = EVENT) -> bytes:
    opener = StreamOpener(key, event_id=event_id, subject_ref=SUBJECT, sealed_length=len(sealed))
    out = [chunk for i in range(0, len(sealed), piece) for chunk in opener.feed(sealed[i : i + piece])]
    opener.finish()
    return b"".join(out)


def streamed_object(data: bytes, chunk_size: int = 64) -> bytes:
    head = encode_stream_head(META, source=SOURCE, created_at="2026-11-25T10:00:02.000Z")
    covered = head + sealed_stream(data, chunk_size)
    return covered + hashlib.sha256(covered).digest()


@settings(max_examples=200, deadline=None)
@given(
    data=st.binary(max_size=3000),
    chunk_size=st.integers(min_value=1, max_value=700),
    piece=st.integers(min_value=1, max_value=2000),
)
def test_stream_round_trip(data: bytes, chunk_size: int, piece: int) -> None:
    sealed = sealed_stream(data, chunk_size)
    assert len(sealed) == sealed_stream_length(len(data), chunk_size)
    opener = StreamOpener(DEK, event_id=EVENT, subject_ref=SUBJECT, sealed_length=len(sealed))
    out = b"".join(chunk for i in range(0, len(sealed), piece) for chunk in opener.feed(sealed[i : i + piece]))
    opener.finish()
    assert out == data
    assert opener.plaintext_length == len(data)


def test_each_chunk_is_authenticated_before_it_is_returned() -> None:
    """A reader gets chunk 0 before chunk 1 arrives: nothing unauthenticated leaves the opener."""
    header, chunks = sealed_chunks(b"a" * 10 + b"b" * 10 + b"c" * 3, 10)
    opener = StreamOpener(DEK, event_id=EVENT, subject_ref=SUBJECT, sealed_length=STREAM_HEADER.size + 23 + 3 * 28)
    assert opener.feed(header + chunks[0][:-1]) == []
    assert opener.feed(chunks[0][-1:]) == [b"a" * 10]
    assert opener.feed(chunks[1] + chunks[2]) == [b"b" * 10, b"c" * 3]
    opener.finish()


def _flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 1]) + blob[at + 1 :]


DATA = os.urandom(95)
HEADER, CHUNKS = sealed_chunks(DATA, 20)  # 4 full chunks and one of 15
OTHER_HEADER, OTHER_CHUNKS = sealed_chunks(DATA, 20)  # the same bytes sealed again: another stream id


@pytest.mark.parametrize(
    "sealed",
    [
        pytest.param(HEADER + b"".join(CHUNKS[:4]), id="cut at a chunk boundary"),
        pytest.param(HEADER + b"".join(CHUNKS)[:-1], id="cut inside the last chunk"),
        pytest.param(HEADER + CHUNKS[1] + CHUNKS[0] + b"".join(CHUNKS[2:]), id="two chunks swapped"),
        pytest.param(HEADER + b"".join(CHUNKS[:2] + CHUNKS[3:]), id="a chunk dropped"),
        pytest.param(HEADER + b"".join(CHUNKS[:4]) + CHUNKS[3][:43], id="a chunk repeated as the last"),
        pytest.param(HEADER + CHUNKS[0] + OTHER_CHUNKS[1] + b"".join(CHUNKS[2:]), id="a chunk of another stream"),
        pytest.param(OTHER_HEADER + b"".join(CHUNKS), id="another stream's header"),
        pytest.param(_flip(HEADER + b"".join(CHUNKS), 2), id="chunk size changed"),
        pytest.param(_flip(HEADER + b"".join(CHUNKS), 10), id="stream id changed"),
        pytest.param(_flip(HEADER + b"".join(CHUNKS), 60), id="a bit of a chunk"),
        pytest.param(HEADER + b"".join(CHUNKS) + b"\x00" * 28, id="an empty chunk appended"),
        pytest.param(HEADER, id="no chunk at all"),
        pytest.param(HEADER[:10], id="half a header"),
    ],
)
def test_a_tampered_stream_is_refused(sealed: bytes) -> None:
    with pytest.raises(RecordTampered):
        open_stream(sealed)


@pytest.mark.parametrize(
    ("key", "event_id"),
    [pytest.param(OTHER_DEK, EVENT, id="another key"), pytest.param(DEK, "f" * 32 + ".media", id="another event")],
)
def test_a_stream_opens_only_for_its_event_and_key(key: bytes, event_id: str) -> None:
    with pytest.raises(RecordTampered):
        open_stream(HEADER + b"".join(CHUNKS), key=key, event_id=event_id)


def test_opener_refuses_more_bytes_than_the_length() -> None:
    opener = StreamOpener(DEK, event_id=EVENT, subject_ref=SUBJECT, sealed_length=10)
    with pytest.raises(RecordTampered, match="more bytes"):
        opener.feed(b"x" * 11)


def test_sealer_refuses_misuse() -> None:
    sealer = StreamSealer(DEK, event_id=EVENT, subject_ref=SUBJECT, chunk_size=4)
    with pytest.raises(ValueError, match="holds 4 bytes"):
        sealer.seal(b"abc", final=False)  # a short chunk that is not the last
    sealer.seal(b"ab", final=True)
    with pytest.raises(ValueError, match="already sealed"):
        sealer.seal(b"", final=True)
    with pytest.raises(ValueError, match="chunk size"):
        StreamSealer(DEK, event_id=EVENT, subject_ref=SUBJECT, chunk_size=0)


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 1000])
def test_streamed_object_reads_whole_and_by_its_front(size: int) -> None:
    data = os.urandom(size)
    blob = streamed_object(data)
    assert blob[6] == STREAM_VERSION
    # Whole-object readers (rebuild-index, verification) take it like any other object.
    source, created_at, (meta,) = read_header(blob)
    assert (source, meta) == (SOURCE, META)
    (record,) = decode_container(blob).records
    assert open_stream(record.sealed) == data
    assert read_records(blob, [0], verify_trailer=False)[0] == record
    # A streaming reader: the front alone, then the stream.
    head = blob[: stream_head_length(blob[: PREAMBLE.size])]
    source, created_at, meta, length = read_stream_head(head, len(blob))
    assert (source, created_at, meta) == (SOURCE, "2026-11-25T10:00:02.000Z", META)
    assert blob[len(head) : len(head) + length] == record.sealed
    assert length == sealed_stream_length(size, 64)


def test_streamed_object_refusals() -> None:
    blob = streamed_object(b"x" * 100)
    head_length = stream_head_length(blob[: PREAMBLE.size])
    with pytest.raises(ContainerError, match="header checksum"):
        read_stream_head(_flip(blob, 20)[:head_length], len(blob))
    with pytest.raises(ContainerError, match="checksum mismatch"):
        read_header(_flip(blob, len(blob) - 40))
    with pytest.raises(ContainerError, match="not a streamed object"):
        stream_head_length(blob[:6] + b"\x02" + blob[7:11])
    with pytest.raises(ContainerError, match="front of a streamed object"):
        read_stream_head(blob[: head_length - 1], len(blob))


def test_sealed_stream_length() -> None:
    assert sealed_stream_length(0, 10) == STREAM_HEADER.size + SEALED_OVERHEAD
    assert sealed_stream_length(10, 10) == STREAM_HEADER.size + 10 + SEALED_OVERHEAD
    assert sealed_stream_length(11, 10) == STREAM_HEADER.size + 11 + 2 * SEALED_OVERHEAD


def test_a_version_3_header_holds_one_record_with_body_end_0() -> None:
    """A version 2 object relabelled version 3 (digest and trailer recomputed) is refused by its header rules."""
    from services.core.container import ContainerRecord, encode_container

    v2 = encode_container([ContainerRecord(META, b"s" * 40)], source=SOURCE, created_at="2026-11-25T10:00:02.000Z")
    header_end = PREAMBLE.size + int.from_bytes(v2[7:11], "big")
    relabelled = v2[:6] + bytes([STREAM_VERSION]) + v2[7:header_end]
    covered = relabelled + hashlib.sha256(relabelled).digest() + v2[header_end + 32 : -32]
    with pytest.raises(ContainerError, match="holds one record, whose body_end is 0"):
        read_header(covered + hashlib.sha256(covered).digest())


@pytest.mark.parametrize(
    ("declared", "expected"),
    [
        pytest.param(None, 64 * 1024 + 2 * (5 * 1024 * 1024 + 64 * 1024 + SEALED_OVERHEAD), id="unknown: a large one"),
        pytest.param(10**9, 64 * 1024 + 2 * (5 * 1024 * 1024 + 64 * 1024 + SEALED_OVERHEAD), id="large: capped"),
        pytest.param(1000, 64 * 1024 + 2 * (8 * 1024 + sealed_stream_length(1000, 64 * 1024) + 32), id="small"),
    ],
)
def test_stream_memory(declared: int | None, expected: int) -> None:
    assert stream_memory(declared, chunk_bytes=64 * 1024, part_bytes=5 * 1024 * 1024) == expected


def test_media_settings_refuse_a_budget_that_cannot_hold_one_large_download() -> None:
    with pytest.raises(ValidationError, match="must hold at least one large download"):
        MediaSettings(budget_bytes=16 * 1024 * 1024, part_bytes=8 * 1024 * 1024)
    assert MediaSettings(budget_bytes=18 * 1024 * 1024, part_bytes=8 * 1024 * 1024).budget_bytes > 0
