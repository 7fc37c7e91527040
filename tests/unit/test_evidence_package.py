"""An export written to a folder (services/evidence/package.py): which files each ``--format`` writes, the media
read once and shared, a bag only in an empty folder and with a key, and the header of a person's own export."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.evidence.bag import verify_bag
from services.evidence.package import (
    ExportFormat,
    PackageError,
    profile_names,
    subject_access_header,
    write_package,
)
from services.review.assembly import assemble

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
ARCHIVED = [
    (
        "e1",
        b'{"event_id":"e1","kind":"message","type":"text","timestamp":100,"received_at":"2026-11-25T10:00:00Z",'
        b'"message_id":"wamid.1","payload":{"from":"336","type":"text","text":{"body":"hello"}},'
        b'"contact":{"profile":{"name":"L\xc3\xa9a"},"wa_id":"336"}}',
    ),
    (
        "e2",
        b'{"event_id":"e2","kind":"message","type":"image","timestamp":200,"received_at":"2026-11-25T10:00:00Z",'
        b'"message_id":"wamid.2","payload":{"from":"336","type":"image","image":{"mime_type":"image/png"}}}',
    ),
]
MESSAGES = assemble(
    [
        {"event_id": "e1", "kind": "message", "type": "text", "timestamp": 100, "message_id": "wamid.1",
         "payload": {"from": "336", "type": "text", "text": {"body": "hello"}}},
        {"event_id": "e2", "kind": "message", "type": "image", "timestamp": 200, "message_id": "wamid.2",
         "payload": {"from": "336", "type": "image", "image": {"mime_type": "image/png"}}},
    ]
)  # fmt: skip
HEADER = subject_access_header(
    contact="336",
    subject_refs=["c" * 64],
    phone_number_id="1061",
    messages=MESSAGES,
    requested_by="dpo",
    reason="Art. 15",
    generated_at=NOW,
    request_ref="SAR/1",
)


@dataclass(frozen=True)
class Medium:
    event_id: str
    mime_type: str
    chunks: AsyncGenerator[bytes, None]


class Media:
    """The media of the export as the actions stream them; counts how often they were read."""

    def __init__(self) -> None:
        self.reads = 0

    async def __aiter__(self) -> AsyncIterator[Medium]:
        self.reads += 1

        async def chunks() -> AsyncGenerator[bytes, None]:
            yield b"\x89PNG"
            yield b" image"

        yield Medium("e2", "image/png", chunks())


def test_the_header_of_a_persons_own_export() -> None:
    assert HEADER.scope == "subject_access"
    assert HEADER.export_id == "SAR/1"
    assert [(c.kind, c.label) for c in HEADER.custodians] == [("person", "336"), ("business", "1061")]
    assert HEADER.period_start == datetime.fromtimestamp(100, UTC)
    assert HEADER.period_end == datetime.fromtimestamp(200, UTC)


def test_profile_names_come_from_the_envelopes() -> None:
    assert profile_names([*ARCHIVED, ("e3", b"not json")]) == {"336": "Léa"}


@pytest.mark.parametrize(
    ("export_format", "files"),
    [
        pytest.param("json", ["subject-export-SAR_1.json"], id="json"),
        pytest.param("both", ["subject-export-SAR_1.html", "subject-export-SAR_1.json"], id="both"),
        pytest.param("jsonl", ["events.jsonl", "media/e2.png"], id="jsonl with media"),
        pytest.param("rsmf", ["subject-export-SAR_1.rsmf"], id="rsmf: media inside only"),
    ],
)
async def test_each_format_writes_its_files(tmp_path: Path, export_format: ExportFormat, files: list[str]) -> None:
    media = Media()
    written = await write_package(
        tmp_path, export_format, header=HEADER, messages=MESSAGES, archived=ARCHIVED, media=media, request_ref="SAR/1"
    )
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == sorted(
        {*files, *(str(Path(f).parent) for f in files if "/" in f)}
    )  # and nothing else: no folder left behind
    assert sorted(p.relative_to(tmp_path).as_posix() for p in written.paths) == files
    assert media.reads == (1 if export_format in ("jsonl", "rsmf") else 0)


async def test_all_is_a_signed_bag_of_every_format(tmp_path: Path) -> None:
    media = Media()
    key = Ed25519PrivateKey.generate()
    written = await write_package(
        tmp_path / "bag", "all", header=HEADER, messages=MESSAGES, archived=ARCHIVED, media=media,
        request_ref="SAR/1", signing_key=key, with_pdf=False,  # the PDF's volumes: test_evidence_export
    )  # fmt: skip
    assert media.reads == 1
    assert written.bag is not None
    assert sorted(p.relative_to(tmp_path / "bag" / "data").as_posix() for p in written.paths) == [
        "events.jsonl",
        "media/e2.png",
        "subject-export-SAR_1.html",
        "subject-export-SAR_1.json",
        "subject-export-SAR_1.rsmf",
    ]
    assert verify_bag(tmp_path / "bag").failures == []


async def test_a_bag_needs_a_key_and_an_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(PackageError, match="no export signing key"):
        await write_package(tmp_path, "all", header=HEADER, messages=[], archived=[], media=None, request_ref=None)
    (tmp_path / "x").write_text("x")
    with pytest.raises(PackageError, match="is not empty"):
        await write_package(
            tmp_path, "all", header=HEADER, messages=[], archived=[], media=None, request_ref=None,
            signing_key=Ed25519PrivateKey.generate(),
        )  # fmt: skip
