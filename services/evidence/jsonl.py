"""JSON Lines of the events as archived, and the media files, written for an export.

**Events.** One line per archived event, in the index's order: the record's plaintext as the archive sealed it
(the event envelope's JSON, byte for byte: docs/ARCHIVE_FORMAT.md "Sealed records"), not the read side's view of it
(services/core/plaintext.py replaces a lone surrogate by U+FFFD for display; here the escape stays as archived). The
envelope's ``delivery`` (the SHA-256 and Meta's signature of the POST that carried it) stays too: it is what ties
the record to Meta's delivery, and a digest discloses nothing of the other updates that POST may have held.
Two exceptions keep every line one JSON value:

- a carriage return or line feed between the JSON's tokens (the archiver writes compact JSON, so never, but a
  record is the bytes Kafka carried) becomes a space: inside a JSON string they are always escaped, so the value
  is the same;
- a record whose plaintext is not JSON the read side can decode is written as
  ``{"event_id": …, "unreadable": <why, fixed words>, "plaintext_base64": …}``: its bytes are kept, not dropped.

**Media.** Each medium is decrypted as it is read from the bucket (services/core/reader.py ``open_media``: every
chunk authenticated before it is handed on) and written to ``media/<event id>.<subtype>`` chunk by chunk: a large
medium is never held whole in memory. A file found corrupt midway is removed, not left half written, and the error
propagates. The result is the :class:`~services.evidence.header.MediaFiles` every renderer takes.
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections.abc import AsyncGenerator, AsyncIterable, Iterable
from pathlib import Path
from typing import Final, Protocol

import orjson

from services.core.plaintext import UndecodableRecord, decode_record
from services.evidence.header import MediaFiles

EVENTS_FILE: Final = "events.jsonl"
MEDIA_DIR: Final = "media"
_NEWLINES: Final = bytes.maketrans(b"\r\n", b"  ")
_SUBTYPE: Final = re.compile(r"[^a-z0-9]+")


def jsonl_line(event_id: str, plaintext: bytes) -> bytes:
    """One line of the events file (see the module docstring), its line feed included."""
    decoded = decode_record(plaintext)
    if isinstance(decoded, UndecodableRecord):
        return (
            orjson.dumps(
                {
                    "event_id": event_id,
                    "unreadable": decoded.reason,
                    "plaintext_base64": base64.b64encode(plaintext).decode("ascii"),
                }
            )
            + b"\n"
        )
    return plaintext.translate(_NEWLINES) + b"\n"


def write_jsonl(records: Iterable[tuple[str, bytes]], path: Path) -> int:
    """Write ``records`` (event id, plaintext as archived), one line each; return how many were written."""
    count = 0
    with path.open("wb") as out:
        for event_id, plaintext in records:
            out.write(jsonl_line(event_id, plaintext))
            count += 1
    return count


class MediaStream(Protocol):
    """A medium being decrypted (services/actions/reading.py ``MediaFile``): ``chunks`` may raise where the object
    is found corrupt."""

    @property
    def event_id(self) -> str: ...

    @property
    def mime_type(self) -> str: ...

    @property
    def chunks(self) -> AsyncGenerator[bytes, None]: ...


def media_name(event_id: str, mime_type: str) -> str:
    """The file name of a medium: its event id (a fixed alphabet) and its MIME subtype reduced to letters and
    digits (Meta's ``mime_type`` is the sender's word: never a path, a space or a line feed in a manifest)."""
    subtype = _SUBTYPE.sub("", mime_type.split(";", maxsplit=1)[0].rsplit("/", maxsplit=1)[-1].lower())[:16]
    return f"{event_id}.{subtype or 'bin'}"


async def write_stream(path: Path, chunks: AsyncGenerator[bytes, None]) -> int:
    """Write ``chunks`` to ``path`` as they come; return the size. A failure midway removes the file and
    propagates."""
    size = 0
    handle = await asyncio.to_thread(path.open, "wb")
    try:
        async for chunk in chunks:
            await asyncio.to_thread(handle.write, chunk)
            size += len(chunk)
    except BaseException:
        await asyncio.to_thread(handle.close)
        await asyncio.to_thread(path.unlink, missing_ok=True)
        raise
    await asyncio.to_thread(handle.close)
    return size


async def write_media(streams: AsyncIterable[MediaStream], root: Path) -> MediaFiles:
    """Write every medium of ``streams`` under ``root/media/``, one at a time; return them as :class:`MediaFiles`
    (paths relative to ``root``)."""
    folder = root / MEDIA_DIR
    await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    async for medium in streams:
        relative = Path(MEDIA_DIR) / media_name(medium.event_id, medium.mime_type)
        await write_stream(root / relative, medium.chunks)
        written[medium.event_id] = relative
    return MediaFiles(root, written)
