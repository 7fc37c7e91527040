"""The archive container: round trip, no personal data in the clear, corruption and malformed headers refused,
deterministic object keys."""

from __future__ import annotations

import hashlib
import json
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.container import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE,
    TRAILER_BYTES,
    Container,
    ContainerError,
    ContainerRecord,
    RecordMeta,
    SourceRange,
    decode_container,
    encode_container,
    object_key,
    read_header,
    read_records,
)
from services.core.crypto import open_record, seal_record
from services.core.pseudonym import message_ref, subject_ref

pytestmark = pytest.mark.unit

PEPPER = b"p" * 32
DEK = bytes(range(32))
PHONE_NUMBER_ID, WABA_ID = "106540352242922", "102290129340398"
WA_ID, USER_ID = "16505551234", "US.13491208655302741918"
# A wamid carries the customer's number in base64 ("MTY1MDU1NTEyMzQ" is "16505551234").
WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdCNUM3RjNBQkI0RUNGMUQ1MwA="
ORIGINAL_WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQUFBQUFBQUFBQUFBQUFBQUFBAA=="
SECRETS = (WA_ID, USER_ID, WAMID, ORIGINAL_WAMID, "MTY1MDU1NTEyMzQ", "Ada Lovelace", "private words")
SUBJECT = subject_ref(PEPPER, PHONE_NUMBER_ID, WA_ID)
ALIAS = subject_ref(PEPPER, PHONE_NUMBER_ID, USER_ID)
SOURCE = SourceRange(topic="wa.events.v1", partition=3, first_offset=100, last_offset=103)
CREATED_AT = "2026-11-25T10:00:00.000Z"


def envelope(i: int, message_id: str, text: str) -> bytes:
    """A Kafka record value as ingest produces it: full of personal data, archived only sealed."""
    return json.dumps(
        {
            "schema": 1,
            "event_id": f"{i:064x}",
            "subject": {"wa_id": WA_ID, "user_id": USER_ID},
            "message_id": message_id,
            "contact": {"profile": {"name": "Ada Lovelace"}, "wa_id": WA_ID},
            "payload": {"from": WA_ID, "id": message_id, "type": "text", "text": {"body": text}},
        }
    ).encode()


def make_meta(i: int, **overrides: Any) -> RecordMeta:
    fields: dict[str, Any] = {
        "event_id": f"{i:064x}",
        "subject_ref": SUBJECT,
        "alias_refs": (SUBJECT, ALIAS),
        "dek_id": "7d1f3c9a-5a8e-4a44-9d0e-7f2c1b6a9e01",
        "kind": "message",
        "type": "text",
        "timestamp": 1_764_064_800 + i,
        "received_at": "2026-11-25T10:00:01.250Z",
        "waba_id": WABA_ID,
        "phone_number_id": PHONE_NUMBER_ID,
        "message_ref": message_ref(PEPPER, WAMID),
        "original_message_ref": None,
        "offset": SOURCE.first_offset + i,
    }
    fields.update(overrides)
    return RecordMeta(**fields)


METAS = [
    make_meta(0),
    make_meta(1, type="edit", original_message_ref=message_ref(PEPPER, ORIGINAL_WAMID)),
    make_meta(2, kind="status", type="read", alias_refs=()),
    make_meta(3, kind="error", type=None, timestamp=None, received_at=None, message_ref=None),
]
PLAINTEXTS = [
    envelope(0, WAMID, "private words"),
    envelope(1, ORIGINAL_WAMID, "private words, edited"),
    b"",
    b"x" * 5000,
]
RECORDS = [
    ContainerRecord(meta, seal_record(plain, DEK, event_id=meta.event_id, subject_ref=meta.subject_ref))
    for meta, plain in zip(METAS, PLAINTEXTS, strict=True)
]
BLOB = encode_container(RECORDS, source=SOURCE, created_at=CREATED_AT)
HEADER_LENGTH: int = struct.unpack_from(">I", BLOB, 7)[0]
HEADER_START = PREAMBLE.size
BODY_START = HEADER_START + HEADER_LENGTH
HEADER = json.loads(BLOB[HEADER_START:BODY_START])
BODY = BLOB[BODY_START:-TRAILER_BYTES]


def assemble(header: object, body: bytes = BODY) -> bytes:
    """An object with a correct trailer around any header (JSON-encoded unless bytes): a corrupt object would
    fail the checksum first, so this is how the schema checks behind it are reached."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    before_trailer = b"".join([MAGIC, bytes([FORMAT_VERSION]), struct.pack(">I", len(raw)), raw, body])
    return before_trailer + hashlib.sha256(before_trailer).digest()


def with_record(index: int, **changes: Any) -> dict[str, Any]:
    """A copy of the header with fields of one record changed."""
    header: dict[str, Any] = json.loads(json.dumps(HEADER))
    header["records"][index].update(changes)
    return header


def without(mapping: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key != name}


def corrupt(index: int) -> bytes:
    return BLOB[:index] + bytes([BLOB[index] ^ 0xFF]) + BLOB[index + 1 :]


# --- round trip --------------------------------------------------------------------------------------------


def test_round_trip() -> None:
    container = decode_container(BLOB)
    assert container == Container(source=SOURCE, created_at=CREATED_AT, records=tuple(RECORDS))
    for record, plain in zip(container.records, PLAINTEXTS, strict=True):
        meta = record.meta
        assert open_record(record.sealed, DEK, event_id=meta.event_id, subject_ref=meta.subject_ref) == plain


def test_read_header_gives_the_metadata_without_the_records() -> None:
    assert read_header(BLOB) == (SOURCE, CREATED_AT, tuple(METAS))


@pytest.mark.parametrize("indexes", [[0], [3], [1, 2], [0, 1, 2, 3], []])
def test_read_records_gives_the_requested_records_as_decoded(indexes: list[int]) -> None:
    selected = read_records(BLOB, indexes)
    assert selected == {index: RECORDS[index] for index in indexes}
    for index, record in selected.items():
        meta = record.meta
        plain = open_record(record.sealed, DEK, event_id=meta.event_id, subject_ref=meta.subject_ref)
        assert plain == PLAINTEXTS[index]


@pytest.mark.parametrize("index", [-1, 4, 10**9])
def test_read_records_refuses_a_position_the_object_does_not_have(index: int) -> None:
    with pytest.raises(ContainerError, match=f"record {index} is not in the object \\(4 records\\)"):
        read_records(BLOB, [0, index])


def test_read_records_checks_the_requested_entries() -> None:
    broken = assemble(with_record(2, type=7))
    assert read_records(broken, [0, 3]).keys() == {0, 3}  # the trailer vouches for the entries not read
    with pytest.raises(ContainerError, match="'type'"):
        read_records(broken, [2])
    past_the_body = assemble(with_record(3, length=6000))
    with pytest.raises(ContainerError, match="outside the body"):
        read_records(past_the_body, [3])


def test_layout() -> None:
    assert BLOB[:6] == b"WAARCH"
    assert BLOB[6] == 1
    assert BLOB[-TRAILER_BYTES:] == hashlib.sha256(BLOB[:-TRAILER_BYTES]).digest()
    assert b"".join(record.sealed for record in RECORDS) == BODY
    lengths = [len(record.sealed) for record in RECORDS]
    ranges = [(entry["start"], entry["length"]) for entry in HEADER["records"]]
    assert ranges == [(sum(lengths[:i]), length) for i, length in enumerate(lengths)]  # contiguous, in order


def test_an_empty_batch_round_trips() -> None:
    blob = encode_container([], source=SOURCE, created_at=CREATED_AT)
    assert decode_container(blob) == Container(source=SOURCE, created_at=CREATED_AT, records=())


# --- privacy of the plaintext header -----------------------------------------------------------------------


@pytest.mark.parametrize("secret", [pytest.param(secret, id=secret[:20]) for secret in SECRETS])
def test_no_personal_data_in_the_clear(secret: str) -> None:
    assert secret in b"".join(PLAINTEXTS).decode()  # the test data really holds it
    assert secret.encode() not in BLOB[HEADER_START:BODY_START]
    assert secret.encode() not in BLOB


def test_header_fields_are_exactly_the_documented_pseudonymous_ones() -> None:
    assert set(HEADER) == {"format", "created_at", "source", "records"}
    assert set(HEADER["source"]) == {"topic", "partition", "first_offset", "last_offset"}
    assert set(HEADER["records"][0]) == {
        "event_id",
        "subject_ref",
        "alias_refs",
        "dek_id",
        "kind",
        "type",
        "timestamp",
        "received_at",
        "waba_id",
        "phone_number_id",
        "message_ref",
        "original_message_ref",
        "offset",
        "start",
        "length",
    }


# --- corruption --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        pytest.param(corrupt(0), "bad magic", id="magic"),
        pytest.param(b"WAARCX" + BLOB[6:], "bad magic", id="magic, last byte"),
        pytest.param(BLOB[:6] + b"\x02" + BLOB[7:], "unsupported format version 2", id="version 2"),
        pytest.param(BLOB[:6] + b"\x00" + BLOB[7:], "unsupported format version 0", id="version 0"),
        pytest.param(corrupt(8), "checksum", id="header length"),
        pytest.param(corrupt(HEADER_START + 20), "checksum", id="header json"),
        pytest.param(corrupt(BODY_START), "checksum", id="first body byte"),
        pytest.param(corrupt(len(BLOB) - TRAILER_BYTES - 1), "checksum", id="last body byte"),
        pytest.param(corrupt(len(BLOB) - 1), "checksum", id="trailer"),
        pytest.param(BLOB[:-1], "checksum", id="truncated by one byte"),
        pytest.param(BLOB[:-40], "checksum", id="truncated into the body"),
        pytest.param(BLOB + b"\x00", "checksum", id="one byte appended"),
        pytest.param(BLOB[:42], "too short|checksum", id="truncated to the preamble"),
        pytest.param(b"tiny", "too short", id="not a container"),
        pytest.param(b"", "too short", id="empty"),
    ],
)
def test_corruption_is_detected(blob: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        decode_container(blob)
    with pytest.raises(ContainerError, match=message):
        read_header(blob)
    with pytest.raises(ContainerError, match=message):
        read_records(blob, [0])


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        pytest.param(assemble(with_record(1, start=0)), "overlaps", id="record overlaps the previous one"),
        pytest.param(assemble(with_record(3, length=6000)), "outside the body", id="record past the body"),
        pytest.param(assemble(with_record(0, start=-1)), "outside the body", id="negative start"),
        pytest.param(assemble(with_record(0, length=-1)), "outside the body", id="negative length"),
        pytest.param(assemble(HEADER, BODY + b"junk"), "belong to no record", id="stray bytes at the end"),
        pytest.param(
            assemble(with_record(0, start=4, length=HEADER["records"][0]["length"] - 4)),
            "belong to no record",
            id="gap before the first record",
        ),
        pytest.param(assemble(with_record(0, wa_id=WA_ID)), "unexpected \\['wa_id'\\]", id="unknown field"),
        pytest.param(assemble(without(HEADER, "created_at")), "missing", id="missing top field"),
        pytest.param(
            assemble({**HEADER, "records": [without(record, "dek_id") for record in HEADER["records"]]}),
            "missing \\['dek_id'\\]",
            id="missing record field",
        ),
        pytest.param(assemble(with_record(0, offset="100")), "must be integers", id="offset as a string"),
        pytest.param(assemble(with_record(0, timestamp=True)), "'timestamp'", id="timestamp as a boolean"),
        pytest.param(assemble(with_record(0, timestamp=1.5)), "'timestamp'", id="timestamp as a float"),
        pytest.param(assemble(with_record(0, type=7)), "'type'", id="type as a number"),
        pytest.param(assemble(with_record(0, event_id=None)), "'event_id'", id="null event_id"),
        pytest.param(assemble(with_record(0, alias_refs=[1])), "'alias_refs'", id="alias_refs of numbers"),
        pytest.param(assemble(with_record(0, offset=99)), "outside the source range", id="offset < source"),
        pytest.param(assemble({**HEADER, "format": 2}), "format 2 is not version 1", id="format mismatch"),
        pytest.param(assemble({**HEADER, "created_at": "yesterday"}), "created_at", id="not RFC 3339"),
        pytest.param(assemble({**HEADER, "created_at": CREATED_AT[:-1]}), "created_at", id="no UTC offset"),
        pytest.param(
            assemble({**HEADER, "source": {**HEADER["source"], "first_offset": 104}}),
            "after last_offset",
            id="inverted source range",
        ),
        pytest.param(assemble({**HEADER, "source": [1, 2]}), "source is not a JSON", id="source a list"),
        pytest.param(assemble({**HEADER, "records": {}}), "records is not a list", id="records an object"),
        pytest.param(assemble([1, 2]), "header is not a JSON object", id="header a list"),
        pytest.param(assemble(b"{not json"), "not UTF-8 JSON", id="header not JSON"),
        pytest.param(assemble(b'{"created_at": "\xff"}'), "not UTF-8 JSON", id="header not UTF-8"),
        pytest.param(assemble(b"[" * 100_000 + b"]" * 100_000), "not UTF-8 JSON", id="absurd nesting"),
    ],
)
def test_malformed_headers_are_refused_even_with_a_valid_trailer(blob: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        decode_container(blob)


def test_header_length_past_the_end_is_refused() -> None:
    raw = BLOB[: PREAMBLE.size - 4] + struct.pack(">I", 10**6) + BLOB[PREAMBLE.size : -TRAILER_BYTES]
    with pytest.raises(ContainerError, match="exceeds the object"):
        decode_container(raw + hashlib.sha256(raw).digest())


# --- what the encoder refuses to write ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("records", "source", "created_at", "message"),
    [
        pytest.param([], SOURCE, "now", "RFC 3339", id="created_at not a timestamp"),
        pytest.param([], SOURCE, CREATED_AT[:-1], "RFC 3339", id="created_at without UTC offset"),
        pytest.param(RECORDS, SourceRange("t", 0, 200, 300), CREATED_AT, "outside", id="offset outside"),
        pytest.param([], SourceRange("t", 0, 5, 4), CREATED_AT, "after last", id="inverted range"),
        pytest.param([], SourceRange("t", -1, 0, 0), CREATED_AT, "negative", id="negative partition"),
        pytest.param([], SourceRange("t", 0, -1, 0), CREATED_AT, "negative", id="negative offset"),
        pytest.param([], SourceRange("", 0, 0, 0), CREATED_AT, "topic", id="empty topic"),
    ],
)
def test_encoder_refuses_what_readers_would_refuse(
    records: list[ContainerRecord], source: SourceRange, created_at: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_container(records, source=source, created_at=created_at)


# --- object keys -------------------------------------------------------------------------------------------

MAX = 2**63 - 1  # Kafka offsets are signed 64-bit


@pytest.mark.parametrize(
    ("source", "key"),
    [
        pytest.param(SOURCE, "v1/wa.events.v1/00003/00000000000000000100.waarc", id="batch"),
        pytest.param(SourceRange("wa.events.v1", 3, 100, 999), object_key("v1", SOURCE), id="replay, longer"),
        pytest.param(SourceRange("t", 0, 0, 0), "v1/t/00000/00000000000000000000.waarc", id="first record"),
        pytest.param(SourceRange("t", 9, MAX, MAX), f"v1/t/00009/0{MAX}.waarc", id="end"),
    ],
)
def test_object_keys_are_deterministic(source: SourceRange, key: str) -> None:
    # A replayed batch starts at the same offset, so it overwrites its object instead of duplicating it.
    assert object_key("v1", source) == key


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 99_999), st.integers(0, MAX)), min_size=2, unique=True))
def test_object_keys_sort_like_partition_and_offset(positions: list[tuple[int, int]]) -> None:
    keys = {position: object_key("v1", SourceRange("t", *position, position[1])) for position in positions}
    assert sorted(keys.values()) == [keys[position] for position in sorted(positions)]


# --- property: any batch round-trips -----------------------------------------------------------------------

optional_text = st.none() | st.text(max_size=40)
metas = st.builds(
    RecordMeta,
    event_id=st.text(min_size=1, max_size=70),
    subject_ref=st.text(max_size=64),
    alias_refs=st.lists(st.text(max_size=64), max_size=3).map(tuple),
    dek_id=st.text(max_size=36),
    kind=st.sampled_from(["message", "status", "echo", "history", "error", "outbound", "media"]),
    type=optional_text,
    timestamp=st.none() | st.integers(-(2**63), 2**63),
    received_at=optional_text,
    waba_id=optional_text,
    phone_number_id=optional_text,
    message_ref=optional_text,
    original_message_ref=optional_text,
    offset=st.integers(0, 1_000),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(metas, st.binary(max_size=300)), max_size=20),
    st.text(min_size=1, max_size=40),
    st.integers(0, 2**31),
)
def test_round_trip_property(batch: list[tuple[RecordMeta, bytes]], topic: str, partition: int) -> None:
    records = [ContainerRecord(meta, sealed) for meta, sealed in batch]
    source = SourceRange(topic, partition, 0, 1_000)
    blob = encode_container(records, source=source, created_at=CREATED_AT)
    assert decode_container(blob) == Container(source=source, created_at=CREATED_AT, records=tuple(records))
    assert read_header(blob) == (source, CREATED_AT, tuple(meta for meta, _ in batch))
