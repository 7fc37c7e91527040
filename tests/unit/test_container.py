"""The archive container: round trip, no personal data in the plaintext header, corruption detected."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.container import (
    ContainerError,
    ContainerRecord,
    RecordMeta,
    SourceRange,
    decode_container,
    encode_container,
    object_key,
    read_header,
)
from services.core.crypto import new_dek, seal_record

pytestmark = pytest.mark.unit

SOURCE = SourceRange("wa.events.v1", 3, 100, 102)
DEK = new_dek()
PLAINTEXTS = [b'{"from":"16505551234","id":"wamid.SECRET","text":{"body":"private words"}}', b"two", b""]


def meta(i: int) -> RecordMeta:
    return RecordMeta(
        event_id=f"{i:032x}",
        subject_ref="ab" * 32,
        alias_refs=("ab" * 32,),
        dek_id="d-1",
        kind="message",
        type="text",
        timestamp=1700000000 + i,
        received_at="2026-11-25T00:00:00.000Z",
        waba_id="102290129340398",
        phone_number_id="106540352242922",
        message_ref="cd" * 32,
        original_message_ref=None,
        offset=100 + i,
    )


RECORDS = [
    ContainerRecord(meta(i), seal_record(p, DEK, event_id=meta(i).event_id, subject_ref=meta(i).subject_ref))
    for i, p in enumerate(PLAINTEXTS)
]
BLOB = encode_container(RECORDS, source=SOURCE, created_at="2026-11-25T00:00:00.000Z")


def test_round_trip() -> None:
    container = decode_container(BLOB)
    assert container.source == SOURCE
    assert container.records == tuple(RECORDS)
    assert read_header(BLOB)[2] == tuple(r.meta for r in RECORDS)


def test_no_personal_data_in_clear() -> None:
    for secret in (b"16505551234", b"wamid.SECRET", b"private words"):
        assert secret not in BLOB


def corrupt(index: int) -> bytes:
    return BLOB[:index] + bytes([BLOB[index] ^ 0xFF]) + BLOB[index + 1 :]


HEADER_LENGTH = struct.unpack_from(">I", BLOB, 7)[0]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        pytest.param(corrupt(0), "magic", id="magic"),
        pytest.param(BLOB[:6] + b"\x02" + BLOB[7:], "unsupported format version 2", id="version"),
        pytest.param(corrupt(8), "checksum", id="header length"),
        pytest.param(corrupt(20), "checksum", id="header json"),
        pytest.param(corrupt(11 + HEADER_LENGTH + 5), "checksum", id="a body byte"),
        pytest.param(corrupt(len(BLOB) - 1), "checksum", id="trailer"),
        pytest.param(BLOB[:-40], "checksum", id="truncated"),
        pytest.param(b"tiny", "too short", id="not a container"),
    ],
)
def test_corruption_is_detected(blob: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        decode_container(blob)


def test_overlapping_records_are_refused() -> None:
    import hashlib

    import orjson

    header = orjson.loads(BLOB[11 : 11 + HEADER_LENGTH])
    header["records"][1]["start"] = 0  # overlaps the first record
    new_header = orjson.dumps(header)
    body = b"WAARCH\x01" + struct.pack(">I", len(new_header)) + new_header + BLOB[11 + HEADER_LENGTH : -32]
    with pytest.raises(ContainerError, match="overlap"):
        decode_container(body + hashlib.sha256(body).digest())


def test_object_keys_are_deterministic_and_sortable() -> None:
    assert object_key("v1", SOURCE) == "v1/wa.events.v1/00003/00000000000000000100.waarc"
    later = object_key("v1", SourceRange("wa.events.v1", 3, 2000, 2100))
    assert object_key("v1", SOURCE) < later


@settings(max_examples=100, deadline=None)
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=20))
def test_round_trip_property(payloads: list[bytes]) -> None:
    records = [ContainerRecord(meta(i), p) for i, p in enumerate(payloads)]
    blob = encode_container(records, source=SOURCE, created_at="x")
    assert decode_container(blob).records == tuple(records)
