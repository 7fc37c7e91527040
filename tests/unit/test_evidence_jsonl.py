"""JSON Lines of the events as archived and the media files (services/evidence/jsonl.py): each line is the record's
bytes as sealed (a lone surrogate's escape kept), one JSON value per line whatever the record; media streamed to
files named safely, a corrupt one never left half written."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest

from services.core.crypto import RecordTampered
from services.evidence.jsonl import jsonl_line, media_name, write_jsonl, write_media


@pytest.mark.parametrize(
    ("plaintext", "line"),
    [
        pytest.param(b'{"event_id":"e1","payload":{"text":"caf\xc3\xa9"}}', None, id="compact JSON as it is"),
        pytest.param(b'{"event_id":"e1","text":"\\ud83d half an emoji"}', None, id="a lone surrogate's escape kept"),
        pytest.param(b'{"n":123456789012345678901234567890}', None, id="an integer beyond 64 bits kept"),
        pytest.param(b'{"a":1,\n "b":"x\\ny"\r\n}', b'{"a":1,  "b":"x\\ny"  }\n', id="line breaks between tokens"),
    ],
)
def test_a_readable_record_is_its_archived_bytes(plaintext: bytes, line: bytes | None) -> None:
    written = jsonl_line("e1", plaintext)
    assert written == (line if line is not None else plaintext + b"\n")
    assert written.count(b"\n") == 1
    assert json.loads(written) == json.loads(plaintext)


@pytest.mark.parametrize("plaintext", [b"\xff\xfe not UTF-8", b"not json", b"[" * 5000], ids=["bytes", "text", "deep"])
def test_an_unreadable_record_keeps_its_bytes_in_base64(plaintext: bytes) -> None:
    written = jsonl_line("e9", plaintext)
    assert written.endswith(b"\n")
    assert written.count(b"\n") == 1
    value = orjson.loads(written)
    assert value["event_id"] == "e9"
    assert value["unreadable"]
    assert base64.b64decode(value["plaintext_base64"]) == plaintext


def test_write_jsonl(tmp_path: Path) -> None:
    records = [("e1", b'{"event_id":"e1"}'), ("e2", b'{"event_id":"e2"}')]
    assert write_jsonl(records, tmp_path / "events.jsonl") == 2
    assert (tmp_path / "events.jsonl").read_bytes().splitlines() == [p for _, p in records]


@pytest.mark.parametrize(
    ("mime_type", "name"),
    [
        ("image/jpeg", "e1.jpeg"),
        ("audio/ogg; codecs=opus", "e1.ogg"),
        ("image/svg+xml", "e1.svgxml"),
        ("application/../../etc/passwd", "e1.passwd"),
        ("text/x\nevil name", "e1.xevilname"),
        ("", "e1.bin"),
        ("///", "e1.bin"),
    ],
)
def test_media_names_are_safe_in_a_path_and_a_manifest(mime_type: str, name: str) -> None:
    assert media_name("e1", mime_type) == name


@dataclass(frozen=True)
class Medium:
    event_id: str
    mime_type: str
    chunks: AsyncGenerator[bytes, None]


async def pieces(*chunks: bytes, fail: bool = False) -> AsyncGenerator[bytes, None]:
    for chunk in chunks:
        yield chunk
    if fail:
        raise RecordTampered("chunk 3 does not authenticate")


async def streams(*media: Medium) -> AsyncIterator[Medium]:
    for medium in media:
        yield medium


async def test_media_are_written_chunk_by_chunk(tmp_path: Path) -> None:
    files = await write_media(
        streams(Medium("e1", "image/png", pieces(b"ab", b"cd")), Medium("e2", "video/mp4", pieces())), tmp_path
    )
    assert files.by_event == {"e1": Path("media/e1.png"), "e2": Path("media/e2.mp4")}
    assert files.path("e1") == tmp_path / "media" / "e1.png"
    assert (tmp_path / "media" / "e1.png").read_bytes() == b"abcd"
    assert (tmp_path / "media" / "e2.mp4").read_bytes() == b""


async def test_a_medium_found_corrupt_midway_is_not_left_half_written(tmp_path: Path) -> None:
    with pytest.raises(RecordTampered):
        await write_media(streams(Medium("e1", "image/png", pieces(b"ab", fail=True))), tmp_path)
    assert list((tmp_path / "media").iterdir()) == []
