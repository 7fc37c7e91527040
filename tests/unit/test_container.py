"""The archive container: round trip in both versions, no personal data in the clear, corruption and malformed
headers refused (version 2's binary tables, version 1's JSON), deterministic object keys.

``spec_decode`` below is a reader of version 2 written from docs/ARCHIVE_FORMAT.md alone (struct and the byte
offsets the document gives, nothing from services/core/container.py): the tests check that the format's code and
its document describe the same bytes, and build forged objects from its parts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import struct
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from devtools.samples import REPO_ROOT
from services.core.container import (
    FORMAT_VERSION,
    MAGIC,
    PREAMBLE,
    TRAILER_BYTES,
    V2_REF_COLUMNS,
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
from services.core.crypto import RecordTampered, open_record, seal_record
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
BLOB = encode_container(RECORDS, source=SOURCE, created_at=CREATED_AT)  # version 2, what the archiver writes
V1_BLOB = encode_container(RECORDS, source=SOURCE, created_at=CREATED_AT, version=1)
BLOBS = [pytest.param(V1_BLOB, id="v1"), pytest.param(BLOB, id="v2")]
BODY = b"".join(record.sealed for record in RECORDS)
HEADER_START = PREAMBLE.size


def corrupt(blob: bytes, index: int) -> bytes:
    return blob[:index] + bytes([blob[index] ^ 0xFF]) + blob[index + 1 :]


def with_trailer(before_trailer: bytes) -> bytes:
    return before_trailer + hashlib.sha256(before_trailer).digest()


# --- version 2, as the document describes it ---------------------------------------------------------------

FIXED = struct.Struct(">IIIIIQQII")  # N, A, S, L, partition, first_offset, last_offset, topic, created_at
RECORD_COLUMNS = ("timestamp", "offset", "body_end", *V2_REF_COLUMNS, "alias_end", "has_timestamp")
COLUMN_TYPES = {"timestamp": "q", "offset": "Q", "body_end": "Q", "has_timestamp": "B"}  # the others: "I"


@dataclass
class Parts:
    """Every value of a version 2 object, as the document lays them out; :meth:`blob` writes them back (with a
    correct trailer, so that the checks behind it are reached)."""

    fixed: dict[str, int]
    columns: dict[str, list[int]]  # RECORD_COLUMNS, one entry per record
    aliases: list[int]
    string_ends: list[int]
    strings: bytes
    body: bytes

    def blob(self, *, version: int = 2) -> bytes:
        header = b"".join(
            [
                FIXED.pack(*self.fixed.values()),
                *(
                    struct.pack(f">{len(self.columns[name])}{COLUMN_TYPES.get(name, 'I')}", *self.columns[name])
                    for name in RECORD_COLUMNS
                ),
                struct.pack(f">{len(self.aliases)}I", *self.aliases),
                struct.pack(f">{len(self.string_ends)}I", *self.string_ends),
                self.strings,
            ]
        )
        prefix = MAGIC + bytes([version]) + struct.pack(">I", len(header)) + header
        return with_trailer(prefix + hashlib.sha256(prefix).digest() + self.body)

    def string(self, ref: int) -> bytes:
        start = self.string_ends[ref - 2] if ref > 1 else 0
        return self.strings[start : self.string_ends[ref - 1]]

    def ref(self, value: str) -> int:
        """The reference of the string ``value``."""
        return next(r for r in range(1, len(self.string_ends) + 1) if self.string(r) == value.encode())

    def set_strings(self, strings: list[bytes]) -> None:
        self.strings = b"".join(strings)
        self.string_ends = [sum(len(s) for s in strings[: i + 1]) for i in range(len(strings))]
        self.fixed["S"], self.fixed["L"] = len(strings), len(self.strings)


def spec_parts(blob: bytes) -> Parts:
    """Read a version 2 object by the document's layout alone."""
    assert blob[:6] == MAGIC
    assert blob[6] == 2
    (header_length,) = struct.unpack_from(">I", blob, 7)
    assert hashlib.sha256(blob[:-32]).digest() == blob[-32:]
    fixed = dict(
        zip(
            ["N", "A", "S", "L", "partition", "first", "last", "topic", "created_at"],
            FIXED.unpack_from(blob, 11),
            strict=True,
        )
    )
    position = 11 + FIXED.size

    def take(code: str, count: int) -> list[int]:
        nonlocal position
        values = list(struct.unpack_from(f">{count}{code}", blob, position))
        position += struct.calcsize(f">{count}{code}")
        return values

    columns = {name: take(COLUMN_TYPES.get(name, "I"), fixed["N"]) for name in RECORD_COLUMNS}
    aliases, string_ends = take("I", fixed["A"]), take("I", fixed["S"])
    strings = blob[position : position + fixed["L"]]
    assert position + fixed["L"] == 11 + header_length
    header_end = 11 + header_length
    assert blob[header_end : header_end + 32] == hashlib.sha256(blob[:header_end]).digest()  # the header digest
    return Parts(fixed, columns, aliases, string_ends, strings, blob[header_end + 32 : -32])


def spec_decode(blob: bytes) -> tuple[SourceRange, str, list[ContainerRecord]]:
    """The records of a version 2 object, decoded by the document's rules alone."""
    parts = spec_parts(blob)
    strings = [parts.string(ref).decode() for ref in range(1, len(parts.string_ends) + 1)]

    def text(ref: int) -> str | None:
        return strings[ref - 1] if ref else None

    fixed, columns = parts.fixed, parts.columns
    source = SourceRange(str(text(fixed["topic"])), fixed["partition"], fixed["first"], fixed["last"])
    records = []
    for i in range(fixed["N"]):
        alias_start = columns["alias_end"][i - 1] if i else 0
        body_start = columns["body_end"][i - 1] if i else 0
        values: dict[str, Any] = {name: text(columns[name][i]) for name in V2_REF_COLUMNS}
        meta = RecordMeta(
            **values,
            alias_refs=tuple(str(text(ref)) for ref in parts.aliases[alias_start : columns["alias_end"][i]]),
            timestamp=columns["timestamp"][i] if columns["has_timestamp"][i] else None,
            offset=columns["offset"][i],
        )
        records.append(ContainerRecord(meta, parts.body[body_start : columns["body_end"][i]]))
    return source, str(text(fixed["created_at"])), records


PARTS = spec_parts(BLOB)


def forged(change: Callable[[Parts], object]) -> bytes:
    """BLOB with one change to its parts, and a correct trailer."""
    parts = copy.deepcopy(PARTS)
    change(parts)
    return parts.blob()


def column(name: str, index: int, value: int) -> Callable[[Parts], object]:
    return lambda parts: parts.columns[name].__setitem__(index, value)


def fixed(name: str, value: int) -> Callable[[Parts], object]:
    return lambda parts: parts.fixed.__setitem__(name, value)


def replace_string(value: str, new: bytes) -> Callable[[Parts], object]:
    """The string ``value`` replaced by ``new`` bytes (the string table's ends follow)."""

    def change(parts: Parts) -> None:
        strings = [parts.string(ref) for ref in range(1, len(parts.string_ends) + 1)]
        strings[parts.ref(value) - 1] = new
        parts.set_strings(strings)

    return change


def add_string(new: bytes) -> Callable[[Parts], object]:
    def change(parts: Parts) -> None:
        parts.set_strings([*(parts.string(ref) for ref in range(1, len(parts.string_ends) + 1)), new])

    return change


def swap_strings(first: int, second: int) -> Callable[[Parts], object]:
    """Strings ``first`` and ``second`` change numbers, every reference following: the same metadata, numbered
    out of order."""

    def change(parts: Parts) -> None:
        strings = [parts.string(ref) for ref in range(1, len(parts.string_ends) + 1)]
        strings[first - 1], strings[second - 1] = strings[second - 1], strings[first - 1]
        parts.set_strings(strings)
        swap = {first: second, second: first}
        for name in V2_REF_COLUMNS:
            parts.columns[name] = [swap.get(ref, ref) for ref in parts.columns[name]]
        parts.aliases = [swap.get(ref, ref) for ref in parts.aliases]
        parts.fixed["topic"] = swap.get(parts.fixed["topic"], parts.fixed["topic"])
        parts.fixed["created_at"] = swap.get(parts.fixed["created_at"], parts.fixed["created_at"])

    return change


def extra_body(parts: Parts) -> None:
    parts.body += b"junk"


# --- round trip --------------------------------------------------------------------------------------------


def test_version_2_is_written() -> None:
    assert FORMAT_VERSION == 2
    assert BLOB[6] == 2
    assert V1_BLOB[6] == 1


@pytest.mark.parametrize("blob", BLOBS)
def test_round_trip(blob: bytes) -> None:
    container = decode_container(blob)
    assert container == Container(source=SOURCE, created_at=CREATED_AT, records=tuple(RECORDS))
    for record, plain in zip(container.records, PLAINTEXTS, strict=True):
        meta = record.meta
        assert open_record(record.sealed, DEK, event_id=meta.event_id, subject_ref=meta.subject_ref) == plain


@pytest.mark.parametrize("blob", BLOBS)
def test_read_header_gives_the_metadata_without_the_records(blob: bytes) -> None:
    assert read_header(blob) == (SOURCE, CREATED_AT, tuple(METAS))


@pytest.mark.parametrize("blob", BLOBS)
@pytest.mark.parametrize("indexes", [[0], [3], [1, 2], [0, 1, 2, 3], [3, 0], []])
def test_read_records_gives_the_requested_records_as_decoded(blob: bytes, indexes: list[int]) -> None:
    selected = read_records(blob, indexes)
    assert selected == {index: RECORDS[index] for index in indexes}
    for index, record in selected.items():
        meta = record.meta
        plain = open_record(record.sealed, DEK, event_id=meta.event_id, subject_ref=meta.subject_ref)
        assert plain == PLAINTEXTS[index]


@pytest.mark.parametrize("blob", BLOBS)
@pytest.mark.parametrize("index", [-1, 4, 10**9])
def test_read_records_refuses_a_position_the_object_does_not_have(blob: bytes, index: int) -> None:
    with pytest.raises(ContainerError, match=f"record {index} is not in the object \\(4 records\\)"):
        read_records(blob, [0, index])


@pytest.mark.parametrize("version", [1, 2])
def test_an_empty_batch_round_trips(version: int) -> None:
    blob = encode_container([], source=SOURCE, created_at=CREATED_AT, version=version)
    assert decode_container(blob) == Container(source=SOURCE, created_at=CREATED_AT, records=())
    assert read_records(blob, []) == {}


def test_many_records_sharing_strings_round_trip() -> None:
    """A batch as the archiver writes them: thousands of records of a few people; read_records picks any few."""
    metas = [make_meta(i, offset=i, subject_ref=f"{i % 7:064x}", alias_refs=(f"{i % 7:064x}",)) for i in range(3000)]
    records = [ContainerRecord(meta, bytes([i % 256]) * (i % 50)) for i, meta in enumerate(metas)]
    source = SourceRange("wa.events.v1", 0, 0, 2999)
    blob = encode_container(records, source=source, created_at=CREATED_AT)
    assert decode_container(blob).records == tuple(records)
    wanted = [2999, 0, 1500, 7, 8]
    assert read_records(blob, wanted) == {i: records[i] for i in wanted}
    assert read_records(blob, range(0, 3000, 7)) == {i: records[i] for i in range(0, 3000, 7)}


# --- version 2 layout: the document and the code agree -----------------------------------------------------


def test_the_documented_layout_reads_back_the_records() -> None:
    assert spec_decode(BLOB) == (SOURCE, CREATED_AT, RECORDS)


def test_layout() -> None:
    assert BLOB[:6] == b"WAARCH"
    assert BLOB[-TRAILER_BYTES:] == hashlib.sha256(BLOB[:-TRAILER_BYTES]).digest()
    assert PARTS.body == BODY  # contiguous, in record order
    assert PARTS.columns["body_end"] == [sum(len(r.sealed) for r in RECORDS[: i + 1]) for i in range(4)]
    assert PARTS.fixed["N"] == 4
    assert PARTS.fixed["A"] == 6  # two aliases each, but none for record 2
    assert PARTS.columns["alias_end"] == [2, 4, 4, 6]
    assert PARTS.columns["has_timestamp"] == [1, 1, 1, 0]
    assert PARTS.columns["timestamp"][3] == 0
    # Each distinct string once, numbered in order of first use: topic, created_at, then column by column.
    assert PARTS.string(1) == b"wa.events.v1"
    assert PARTS.string(2) == CREATED_AT.encode()
    assert PARTS.string(3) == METAS[0].event_id.encode()
    assert PARTS.columns["subject_ref"] == [PARTS.ref(SUBJECT)] * 4
    assert PARTS.columns["type"][3] == 0  # null
    header_length = struct.unpack_from(">I", BLOB, 7)[0]
    assert header_length == 44 + 69 * 4 + 4 * PARTS.fixed["A"] + 4 * PARTS.fixed["S"] + PARTS.fixed["L"]


def test_the_documented_example_is_what_the_encoder_writes() -> None:
    """docs/ARCHIVE_FORMAT.md shows one small object byte by byte: it must stay the truth."""
    meta = make_meta(
        0,
        event_id="e1",
        subject_ref="s1",
        alias_refs=("s1", "a1"),
        dek_id="d1",
        timestamp=1764064800,
        received_at=None,
        waba_id=None,
        phone_number_id=None,
        message_ref=None,
        offset=7,
    )
    blob = encode_container(
        [ContainerRecord(meta, b"SEALED")], source=SourceRange("t", 3, 7, 7), created_at="2026-11-25T10:00:00Z"
    )
    document = (REPO_ROOT / "docs" / "ARCHIVE_FORMAT.md").read_text(encoding="utf-8")
    example = document[document.index("**Example.**") :].split("```")[1]
    lines = re.findall(r"^ +([0-9a-f]{4})  ((?:[0-9a-f]{2} )+)", example, flags=re.MULTILINE)
    assert len(lines) >= 18
    for offset, data in lines:
        expected = bytes.fromhex(data)
        assert blob[int(offset, 16) : int(offset, 16) + len(expected)] == expected, offset
    assert len(blob) == 274
    assert spec_decode(blob)[2] == [ContainerRecord(meta, b"SEALED")]


@pytest.mark.parametrize("blob", BLOBS)
def test_encoding_is_canonical(blob: bytes) -> None:
    """The header is a function of the metadata: re-encoding what was decoded gives back the same bytes."""
    container = decode_container(blob)
    again = encode_container(
        container.records, source=container.source, created_at=container.created_at, version=blob[6]
    )
    assert again == blob


def test_version_2_header_is_smaller() -> None:
    header_length = struct.unpack_from(">I", BLOB, 7)[0]
    assert header_length < struct.unpack_from(">I", V1_BLOB, 7)[0]


# --- privacy of the plaintext header -----------------------------------------------------------------------


@pytest.mark.parametrize("blob", BLOBS)
@pytest.mark.parametrize("secret", [pytest.param(secret, id=secret[:20]) for secret in SECRETS])
def test_no_personal_data_in_the_clear(blob: bytes, secret: str) -> None:
    assert secret in b"".join(PLAINTEXTS).decode()  # the test data really holds it
    assert secret.encode() not in blob


def test_header_fields_are_exactly_the_documented_pseudonymous_ones() -> None:
    """Version 2 stores RecordMeta's fields and nothing else: a field added to RecordMeta fails here, and
    needs a new format version (docs/ARCHIVE_FORMAT.md)."""
    documented = {
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
    }
    assert {field.name for field in fields(RecordMeta)} == documented
    assert set(V2_REF_COLUMNS) | {"alias_refs", "timestamp", "offset"} == documented
    assert V2_REF_COLUMNS[:4] == ("event_id", "subject_ref", "dek_id", "kind")  # the ones never null


def test_version_1_header_fields_are_exactly_the_documented_ones() -> None:
    header = json.loads(V1_BLOB[HEADER_START : HEADER_START + struct.unpack_from(">I", V1_BLOB, 7)[0]])
    assert set(header) == {"format", "created_at", "source", "records"}
    assert set(header["source"]) == {"topic", "partition", "first_offset", "last_offset"}
    assert set(header["records"][0]) == {field.name for field in fields(RecordMeta)} | {"start", "length"}


# --- corruption, either version ----------------------------------------------------------------------------


def corruptions(blob: bytes) -> list[Any]:
    header_end = PREAMBLE.size + struct.unpack_from(">I", blob, 7)[0]
    return [
        pytest.param(corrupt(blob, 0), "bad magic", id="magic"),
        pytest.param(b"WAARCX" + blob[6:], "bad magic", id="magic, last byte"),
        pytest.param(blob[:6] + b"\x04" + blob[7:], "unsupported format version 4", id="version 4"),
        pytest.param(blob[:6] + b"\x00" + blob[7:], "unsupported format version 0", id="version 0"),
        pytest.param(blob[:6] + b"\xff" + blob[7:], "unsupported format version 255", id="version 255"),
        pytest.param(blob[:6] + bytes([3 - blob[6]]) + blob[7:], "checksum", id="the other version"),
        pytest.param(corrupt(blob, 8), "checksum", id="header length"),
        pytest.param(corrupt(blob, HEADER_START + 20), "checksum", id="header"),
        pytest.param(corrupt(blob, header_end - 1), "checksum", id="last header byte"),
        pytest.param(corrupt(blob, header_end), "checksum", id="first body byte"),
        pytest.param(corrupt(blob, len(blob) - TRAILER_BYTES - 1), "checksum", id="last body byte"),
        pytest.param(corrupt(blob, len(blob) - 1), "checksum", id="trailer"),
        pytest.param(blob[:-1], "checksum", id="truncated by one byte"),
        pytest.param(blob[:-40], "checksum", id="truncated into the body"),
        pytest.param(blob[: header_end - 3], "checksum", id="truncated into the header"),
        pytest.param(blob + b"\x00", "checksum", id="one byte appended"),
        pytest.param(blob[:42], "too short|checksum", id="truncated to the preamble"),
        pytest.param(b"tiny", "too short", id="not a container"),
        pytest.param(b"", "too short", id="empty"),
    ]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        *(pytest.param(*p.values, id=f"v1, {p.id}") for p in corruptions(V1_BLOB)),
        *(pytest.param(*p.values, id=f"v2, {p.id}") for p in corruptions(BLOB)),
    ],
)
def test_corruption_is_detected(blob: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        decode_container(blob)
    with pytest.raises(ContainerError, match=message):
        read_header(blob)
    with pytest.raises(ContainerError, match=message):
        read_records(blob, [0])


@pytest.mark.parametrize("blob", BLOBS)
def test_header_length_past_the_end_is_refused(blob: bytes) -> None:
    raw = blob[: PREAMBLE.size - 4] + struct.pack(">I", 10**6) + blob[PREAMBLE.size : -TRAILER_BYTES]
    with pytest.raises(ContainerError, match="exceeds the object"):
        decode_container(with_trailer(raw))
    with pytest.raises(ContainerError, match="exceeds the object"):
        read_records(with_trailer(raw), [0])


def with_header_digest(prefix: bytes, body: bytes = b"") -> bytes:
    """A version 2 object around ``prefix`` (preamble and header) with a correct header digest and trailer."""
    return with_trailer(prefix + hashlib.sha256(prefix).digest() + body)


def test_a_version_1_object_relabelled_version_2_is_refused() -> None:
    header_end = PREAMBLE.size + struct.unpack_from(">I", V1_BLOB, 7)[0]
    relabelled = V1_BLOB[:6] + b"\x02" + V1_BLOB[7:header_end]
    for blob, message in [
        (with_trailer(relabelled + V1_BLOB[header_end:-TRAILER_BYTES]), "header checksum mismatch"),
        (with_header_digest(relabelled, BODY), "malformed header"),
    ]:
        with pytest.raises(ContainerError, match=message):
            decode_container(blob)
        with pytest.raises(ContainerError, match=message):
            read_records(blob, [0])


def test_a_header_digest_that_does_not_match_is_refused_even_with_a_valid_trailer() -> None:
    """Whoever changes the header must recompute both checksums; the header digest is what a reader of byte
    ranges (no trailer) relies on."""
    header_end = PREAMBLE.size + struct.unpack_from(">I", BLOB, 7)[0]
    for blob in (
        with_trailer(corrupt(BLOB, header_end)[:-TRAILER_BYTES]),  # the digest altered
        with_trailer(corrupt(BLOB, header_end - 1)[:-TRAILER_BYTES]),  # the header altered, its digest kept
    ):
        for read in (decode_container, read_header, lambda blob: read_records(blob, [0])):
            with pytest.raises(ContainerError, match="header checksum mismatch"):
                read(blob)


# --- malformed version 2 headers (with a valid trailer) ----------------------------------------------------

BAD_UTF8 = b"\xff" + b"essage"  # "message" with its first byte replaced: same length, not UTF-8
HEADER_REFUSALS = [
    # the tables' sizes
    pytest.param(
        fixed("N", 5), "tables of 5 records, 6 aliases .* not the header length", id="one record more than stored"
    ),
    pytest.param(fixed("N", 3), "not the header length", id="one record less than stored"),
    pytest.param(fixed("A", 5), "not the header length", id="alias count too high"),
    pytest.param(fixed("S", 50), "not the header length", id="string count too high"),
    pytest.param(fixed("L", 1), "not the header length", id="string bytes too few"),
    pytest.param(fixed("N", 2**32 - 1), "not the header length", id="absurd record count"),
    pytest.param(
        lambda p: p.string_ends.__setitem__(-1, p.fixed["L"] - 1), "string table ends at byte", id="strings short"
    ),
    pytest.param(column("alias_end", 3, 3), "aliases end at entry 3, not at the 6 entries", id="aliases end early"),
    pytest.param(column("body_end", 3, len(BODY) - 1), "belong to no record", id="stray body byte"),
    pytest.param(extra_body, "belong to no record", id="stray bytes at the end"),
    pytest.param(column("body_end", 3, len(BODY) + 1), "record 3 range .* outside the body", id="past the body"),
    # the header's own fields
    pytest.param(fixed("topic", 0), "topic must be a string, not null", id="null topic"),
    pytest.param(fixed("topic", 10_000), "topic refers to string 10000", id="topic beyond the strings"),
    pytest.param(replace_string("wa.events.v1", b""), "topic must not be empty", id="empty topic"),
    pytest.param(fixed("created_at", 0), "created_at must be a string", id="null created_at"),
    pytest.param(replace_string(CREATED_AT, b"yesterday"), "created_at is not an RFC 3339", id="not RFC 3339"),
    pytest.param(
        replace_string(CREATED_AT, CREATED_AT[:-1].encode()), "created_at is not an RFC 3339", id="no UTC offset"
    ),
    pytest.param(fixed("first", 104), "after last_offset", id="inverted source range"),
    # the string table
    pytest.param(replace_string("message", BAD_UTF8), "string .* is not UTF-8", id="string not UTF-8"),
    pytest.param(lambda p: p.string_ends.__setitem__(2, p.string_ends[1] - 1), "spans \\[", id="string ends decrease"),
    pytest.param(add_string(b"16505551234"), "string .* is referenced by no field", id="unreferenced string"),
    pytest.param(add_string(b"message"), "repeats string", id="string stored twice"),
    pytest.param(swap_strings(3, 4), "not numbered in order of first use", id="strings out of order"),
    # one record's entry
    pytest.param(column("event_id", 2, 0), "record 2 field 'event_id' must be a string, not null", id="null event_id"),
    pytest.param(column("kind", 2, 0), "record 2 field 'kind' must be a string", id="null kind"),
    pytest.param(column("type", 2, 10_000), "record 2 field 'type' refers to string 10000", id="ref out of table"),
    pytest.param(column("subject_ref", 2, 2**32 - 1), "'subject_ref' refers to string 4294967295", id="max ref"),
    pytest.param(lambda p: p.aliases.__setitem__(3, 0), "record 1 alias 1 must be a string", id="null alias"),
    pytest.param(lambda p: p.aliases.__setitem__(0, 999), "record 0 alias 0 refers to string 999", id="bad alias"),
    pytest.param(column("alias_end", 0, 5), "record 1 aliases \\[5, 4\\)", id="alias ends decrease"),
    pytest.param(column("has_timestamp", 2, 2), "record 2 timestamp flag is 2", id="timestamp flag 2"),
    pytest.param(column("timestamp", 3, 7), "record 3 has no timestamp but a timestamp value 7", id="hidden ts"),
    pytest.param(column("offset", 2, 99), "record 2 offset 99 is outside the source range", id="offset < source"),
    pytest.param(column("offset", 2, 104), "record 2 offset 104 is outside the source range", id="offset > source"),
    pytest.param(
        column("body_end", 1, 0), "record 1 range \\[509, 0\\) falls outside the body", id="body ends decrease"
    ),
    pytest.param(
        column("body_end", 1, len(BODY) + 10), "record 1 range .* outside the body", id="record past the body"
    ),
]


@pytest.mark.parametrize(("change", "message"), HEADER_REFUSALS)
def test_malformed_version_2_headers_are_refused_even_with_a_valid_trailer(
    change: Callable[[Parts], object], message: str
) -> None:
    blob = forged(change)
    with pytest.raises(ContainerError, match=message):
        decode_container(blob)
    with pytest.raises(ContainerError, match=message):
        read_header(blob)


def test_the_forging_helper_changes_nothing_by_itself() -> None:
    assert forged(lambda parts: None) == BLOB


@pytest.mark.parametrize(
    ("change", "record", "message"),
    [
        pytest.param(column("event_id", 2, 0), 2, "'event_id' must be a string", id="null event_id"),
        pytest.param(column("type", 2, 10_000), 2, "refers to string 10000", id="ref out of table"),
        pytest.param(lambda p: p.aliases.__setitem__(1, 0), 0, "record 0 alias 1 must be", id="null alias"),
        pytest.param(column("alias_end", 0, 7), 0, "record 0 aliases \\[0, 7\\)", id="aliases past the list"),
        pytest.param(column("has_timestamp", 2, 2), 2, "timestamp flag is 2", id="timestamp flag"),
        pytest.param(column("timestamp", 3, 7), 3, "has no timestamp but", id="hidden timestamp"),
        pytest.param(column("offset", 2, 99), 2, "outside the source range", id="offset"),
        pytest.param(
            column("body_end", 1, 0), 1, "record 1 range \\[509, 0\\) falls outside the body", id="inverted range"
        ),
        pytest.param(column("body_end", 1, 10**9), 1, "record 1 range .* outside the body", id="past the body"),
        pytest.param(replace_string("message", BAD_UTF8), 0, "is not UTF-8", id="string not UTF-8"),
        pytest.param(
            lambda p: p.string_ends.__setitem__(2, p.string_ends[1] - 1), 0, "spans \\[", id="string ends decrease"
        ),
    ],
)
def test_read_records_checks_the_requested_entries(
    change: Callable[[Parts], object], record: int, message: str
) -> None:
    blob = forged(change)
    with pytest.raises(ContainerError, match=message):
        read_records(blob, [record])
    with pytest.raises(ContainerError, match=message):
        read_records(blob, [*range(4)])  # also when many are asked at once (the bulk path)


def test_read_records_does_not_decode_the_entries_it_is_not_asked_for() -> None:
    """What lets a conversation read only its records: the trailer vouches for the rest."""
    broken = forged(column("has_timestamp", 2, 2))
    assert read_records(broken, [0, 1, 3]) == {i: RECORDS[i] for i in (0, 1, 3)}
    with pytest.raises(ContainerError, match="timestamp flag"):
        read_header(broken)


# --- read_records without the whole-object hash (what ArchiveReader does) ------------------------------------


def test_read_records_without_the_trailer_gives_the_same_records() -> None:
    for indexes in ([0], [3, 1], [*range(4)], []):
        assert read_records(BLOB, indexes, verify_trailer=False) == read_records(BLOB, indexes)


def test_read_records_without_the_trailer_relies_on_the_header_digest_and_aes_gcm() -> None:
    header_end = PREAMBLE.size + struct.unpack_from(">I", BLOB, 7)[0]
    body_start = header_end + 32
    # The trailer itself, or a body byte of a record not asked for: not this read's concern.
    assert read_records(corrupt(BLOB, len(BLOB) - 1), [1], verify_trailer=False) == {1: RECORDS[1]}
    assert read_records(corrupt(BLOB, body_start), [1], verify_trailer=False) == {1: RECORDS[1]}
    # A byte of a requested record: handed out as it is, and AES-GCM refuses it when it is opened.
    [record] = read_records(corrupt(BLOB, body_start), [0], verify_trailer=False).values()
    with pytest.raises(RecordTampered):
        open_record(record.sealed, DEK, event_id=record.meta.event_id, subject_ref=record.meta.subject_ref)
    # The header, its digest, the body's length: refused as before.
    refused = [
        (corrupt(BLOB, HEADER_START + 20), "header checksum mismatch"),
        (corrupt(BLOB, header_end), "header checksum mismatch"),
        (BLOB[:-1], "record 3 range .* outside the body"),
        (BLOB[:-40], "outside the body"),
        (BLOB + b"\x00", "belong to no record"),
        (BLOB[:6] + b"\x04" + BLOB[7:], "unsupported format version 4"),
        (b"tiny", "too short"),
    ]
    for blob, message in refused:
        with pytest.raises(ContainerError, match=message):
            read_records(blob, [0], verify_trailer=False)


def test_a_version_1_object_is_always_read_whole() -> None:
    """It has no header digest: its trailer is what vouches for the header."""
    with pytest.raises(ContainerError, match="checksum mismatch"):
        read_records(corrupt(V1_BLOB, len(V1_BLOB) - 1), [0], verify_trailer=False)
    assert read_records(V1_BLOB, [2, 0], verify_trailer=False) == {2: RECORDS[2], 0: RECORDS[0]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(fixed("N", 5), "not the header length", id="table sizes"),
        pytest.param(column("body_end", 3, len(BODY) - 1), "belong to no record", id="stray body byte"),
        pytest.param(column("alias_end", 3, 3), "aliases end at entry", id="aliases end early"),
        pytest.param(lambda p: p.string_ends.__setitem__(-1, 1), "string table ends at byte", id="strings short"),
        pytest.param(fixed("topic", 0), "topic must be a string", id="null topic"),
        pytest.param(replace_string(CREATED_AT, b"yesterday"), "created_at", id="created_at"),
        pytest.param(fixed("first", 104), "after last_offset", id="source range"),
    ],
)
def test_read_records_checks_the_header_itself(change: Callable[[Parts], object], message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        read_records(forged(change), [0])


def test_header_shorter_than_its_fixed_part_is_refused() -> None:
    blob = with_header_digest(MAGIC + b"\x02" + struct.pack(">I", 43) + bytes(43))
    with pytest.raises(ContainerError, match="43 bytes, under the 44 of its fixed part"):
        decode_container(blob)
    with pytest.raises(ContainerError, match="under the 44"):
        read_records(blob, [])


# --- malformed version 1 headers (with a valid trailer) ----------------------------------------------------

V1_HEADER_LENGTH: int = struct.unpack_from(">I", V1_BLOB, 7)[0]
V1_HEADER = json.loads(V1_BLOB[HEADER_START : HEADER_START + V1_HEADER_LENGTH])


def assemble_v1(header: object, body: bytes = BODY) -> bytes:
    """A version 1 object with a correct trailer around any header (JSON-encoded unless bytes)."""
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return with_trailer(b"".join([MAGIC, b"\x01", struct.pack(">I", len(raw)), raw, body]))


def with_record(index: int, **changes: Any) -> dict[str, Any]:
    """A copy of the version 1 header with fields of one record changed."""
    header: dict[str, Any] = json.loads(json.dumps(V1_HEADER))
    header["records"][index].update(changes)
    return header


def without(mapping: dict[str, Any], name: str) -> dict[str, Any]:
    return {key: value for key, value in mapping.items() if key != name}


def test_version_1_layout() -> None:
    assert assemble_v1(V1_BLOB[HEADER_START : HEADER_START + V1_HEADER_LENGTH]) == V1_BLOB
    lengths = [len(record.sealed) for record in RECORDS]
    ranges = [(entry["start"], entry["length"]) for entry in V1_HEADER["records"]]
    assert ranges == [(sum(lengths[:i]), length) for i, length in enumerate(lengths)]  # contiguous, in order


def test_version_1_read_records_checks_the_requested_entries() -> None:
    broken = assemble_v1(with_record(2, type=7))
    assert read_records(broken, [0, 3]).keys() == {0, 3}  # the trailer vouches for the entries not read
    with pytest.raises(ContainerError, match="'type'"):
        read_records(broken, [2])
    past_the_body = assemble_v1(with_record(3, length=6000))
    with pytest.raises(ContainerError, match="outside the body"):
        read_records(past_the_body, [3])


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        pytest.param(assemble_v1(with_record(1, start=0)), "overlaps", id="record overlaps the previous one"),
        pytest.param(assemble_v1(with_record(3, length=6000)), "outside the body", id="record past the body"),
        pytest.param(assemble_v1(with_record(0, start=-1)), "outside the body", id="negative start"),
        pytest.param(assemble_v1(with_record(0, length=-1)), "outside the body", id="negative length"),
        pytest.param(assemble_v1(V1_HEADER, BODY + b"junk"), "belong to no record", id="stray bytes at the end"),
        pytest.param(
            assemble_v1(with_record(0, start=4, length=V1_HEADER["records"][0]["length"] - 4)),
            "belong to no record",
            id="gap before the first record",
        ),
        pytest.param(assemble_v1(with_record(0, wa_id=WA_ID)), "unexpected \\['wa_id'\\]", id="unknown field"),
        pytest.param(assemble_v1(without(V1_HEADER, "created_at")), "missing", id="missing top field"),
        pytest.param(
            assemble_v1({**V1_HEADER, "records": [without(record, "dek_id") for record in V1_HEADER["records"]]}),
            "missing \\['dek_id'\\]",
            id="missing record field",
        ),
        pytest.param(assemble_v1(with_record(0, offset="100")), "must be integers", id="offset as a string"),
        pytest.param(assemble_v1(with_record(0, timestamp=True)), "'timestamp'", id="timestamp as a boolean"),
        pytest.param(assemble_v1(with_record(0, timestamp=1.5)), "'timestamp'", id="timestamp as a float"),
        pytest.param(assemble_v1(with_record(0, type=7)), "'type'", id="type as a number"),
        pytest.param(assemble_v1(with_record(0, event_id=None)), "'event_id'", id="null event_id"),
        pytest.param(assemble_v1(with_record(0, alias_refs=[1])), "'alias_refs'", id="alias_refs of numbers"),
        pytest.param(assemble_v1(with_record(0, offset=99)), "outside the source range", id="offset < source"),
        pytest.param(assemble_v1({**V1_HEADER, "format": 2}), "format 2 is not version 1", id="format mismatch"),
        pytest.param(assemble_v1({**V1_HEADER, "created_at": "yesterday"}), "created_at", id="not RFC 3339"),
        pytest.param(assemble_v1({**V1_HEADER, "created_at": CREATED_AT[:-1]}), "created_at", id="no UTC offset"),
        pytest.param(
            assemble_v1({**V1_HEADER, "source": {**V1_HEADER["source"], "first_offset": 104}}),
            "after last_offset",
            id="inverted source range",
        ),
        pytest.param(assemble_v1({**V1_HEADER, "source": [1, 2]}), "source is not a JSON", id="source a list"),
        pytest.param(assemble_v1({**V1_HEADER, "records": {}}), "records is not a list", id="records an object"),
        pytest.param(assemble_v1([1, 2]), "header is not a JSON object", id="header a list"),
        pytest.param(assemble_v1(b"{not json"), "not UTF-8 JSON", id="header not JSON"),
        pytest.param(assemble_v1(b'{"created_at": "\xff"}'), "not UTF-8 JSON", id="header not UTF-8"),
        pytest.param(assemble_v1(b"[" * 100_000 + b"]" * 100_000), "not UTF-8 JSON", id="absurd nesting"),
    ],
)
def test_malformed_version_1_headers_are_refused_even_with_a_valid_trailer(blob: bytes, message: str) -> None:
    with pytest.raises(ContainerError, match=message):
        decode_container(blob)


# --- what the encoder refuses to write ---------------------------------------------------------------------


@pytest.mark.parametrize("version", [1, 2])
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
    records: list[ContainerRecord], source: SourceRange, created_at: str, message: str, version: int
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_container(records, source=source, created_at=created_at, version=version)


@pytest.mark.parametrize(
    ("records", "source", "message"),
    [
        pytest.param(
            [ContainerRecord(make_meta(0, timestamp=2**63), b"")], SOURCE, "signed 64-bit", id="timestamp 2**63"
        ),
        pytest.param(
            [ContainerRecord(make_meta(0, timestamp=-(2**63) - 1), b"")], SOURCE, "signed 64-bit", id="below int64"
        ),
        pytest.param([], SourceRange("t", 2**32, 0, 0), "32 bits", id="partition beyond 32 bits"),
        pytest.param([], SourceRange("t", 0, 0, 2**64), "64 bits", id="offset beyond 64 bits"),
        pytest.param(
            [ContainerRecord(make_meta(0, type="\udc80"), b"")], SOURCE, "not valid Unicode", id="lone surrogate"
        ),
    ],
)
def test_version_2_encoder_refuses_what_its_columns_cannot_hold(
    records: list[ContainerRecord], source: SourceRange, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        encode_container(records, source=source, created_at=CREATED_AT)


@pytest.mark.parametrize("version", [0, 3])
def test_encoder_refuses_an_unknown_version(version: int) -> None:
    with pytest.raises(ValueError, match=f"cannot write format version {version}"):
        encode_container(RECORDS, source=SOURCE, created_at=CREATED_AT, version=version)


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


# --- property: any batch round-trips, in both versions -----------------------------------------------------

optional_text = st.none() | st.text(max_size=40)
metas = st.builds(
    RecordMeta,
    event_id=st.text(min_size=1, max_size=70),
    subject_ref=st.text(max_size=64),
    alias_refs=st.lists(st.text(max_size=64), max_size=3).map(tuple),
    dek_id=st.text(max_size=36),
    kind=st.sampled_from(["message", "status", "echo", "history", "error", "outbound", "media"]),
    type=optional_text,
    timestamp=st.none() | st.integers(-(2**63), 2**63 - 1),
    received_at=optional_text,
    waba_id=optional_text,
    phone_number_id=optional_text,
    message_ref=optional_text,
    original_message_ref=optional_text,
    offset=st.integers(0, 1_000),
)
batches = st.lists(st.tuples(metas, st.binary(max_size=300)), max_size=20)


@settings(max_examples=150, deadline=None)
@given(batches, st.text(min_size=1, max_size=40), st.integers(0, 2**31), st.sampled_from([1, 2]))
def test_round_trip_property(batch: list[tuple[RecordMeta, bytes]], topic: str, partition: int, version: int) -> None:
    records = [ContainerRecord(meta, sealed) for meta, sealed in batch]
    source = SourceRange(topic, partition, 0, 1_000)
    blob = encode_container(records, source=source, created_at=CREATED_AT, version=version)
    assert blob[6] == version
    assert decode_container(blob) == Container(source=source, created_at=CREATED_AT, records=tuple(records))
    assert read_header(blob) == (source, CREATED_AT, tuple(meta for meta, _ in batch))


@settings(max_examples=150, deadline=None)
@given(batches.filter(bool), st.data())
def test_read_records_property(batch: list[tuple[RecordMeta, bytes]], data: st.DataObject) -> None:
    """Any subset, in any order, read from a version 2 object is what decoding the whole object gives; and the
    document's layout reads the same records."""
    records = [ContainerRecord(meta, sealed) for meta, sealed in batch]
    source = SourceRange("wa.events.v1", 0, 0, 1_000)
    blob = encode_container(records, source=source, created_at=CREATED_AT)
    wanted = data.draw(st.lists(st.integers(0, len(records) - 1), max_size=len(records) + 2))
    assert read_records(blob, wanted) == {index: records[index] for index in wanted}
    assert spec_decode(blob) == (source, CREATED_AT, records)


HEADER_END = PREAMBLE.size + struct.unpack_from(">I", BLOB, 7)[0]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.tuples(st.integers(HEADER_START, HEADER_END - 1), st.integers(1, 255)), min_size=1, max_size=3))
def test_any_changed_header_with_recomputed_checksums_is_refused_or_canonical(changes: list[tuple[int, int]]) -> None:
    """Header bytes changed by someone who also recomputes both checksums: the reader refuses the object, or
    reads metadata that satisfies every rule — then the bytes are exactly the encoding of that metadata. It never
    fails otherwise, and read_records agrees with decode_container."""
    header = bytearray(BLOB[:HEADER_END])
    for position, mask in changes:
        header[position] ^= mask
    changed = with_header_digest(bytes(header), BODY)
    try:
        container = decode_container(changed)
    except ContainerError:
        return
    assert encode_container(container.records, source=container.source, created_at=container.created_at) == changed
    assert read_records(changed, range(len(container.records))) == dict(enumerate(container.records))
