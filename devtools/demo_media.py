"""The demo's media files (``make run``, and the end-to-end test of the services).

The sample webhooks are Meta's (tests/data/whatsapp): their media ``sha256`` is the hash of Meta's files, which
the local Graph API stand-in cannot serve, so the archiver would refuse every demo file ("sha256 mismatch") and
mark it missing. The stand-in serves :func:`demo_media_bytes` for each media id instead, and :func:`with_demo_media`
gives the webhooks the hash Meta would put there for those bytes, so the demo's media are archived like real ones.

The demo's own webhooks (the crisis, devtools/demo_crisis.py) carry media no sample carries:
:data:`GENERATED_MEDIA` names them for the stand-in, and their webhooks carry :func:`demo_sha256` of their id.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import struct
import zlib
from typing import Any, Final

import orjson

# The crisis's photo of a parcel damaged on arrival: a real picture, so that whoever opens it from the archive
# sees one, where the samples' files are 4 KiB of noise.
PARCEL_PHOTO_ID: Final = "9000000000004471"
# The media of the demo's generated webhooks, which no sample webhook names: id -> MIME type.
GENERATED_MEDIA: Final[dict[str, str]] = {PARCEL_PHOTO_ID: "image/png"}


def demo_media_bytes(media_id: str) -> bytes:
    """The deterministic content of the demo's media file ``media_id``: :func:`parcel_photo` for
    :data:`PARCEL_PHOTO_ID`, else 4 KiB derived from the id."""
    if media_id == PARCEL_PHOTO_ID:
        return parcel_photo()
    return hashlib.sha256(media_id.encode("utf-8", "surrogatepass")).digest() * 128


@functools.cache
def parcel_photo() -> bytes:
    """A 160x120 PNG of a cardboard box on a grey floor, one corner crushed in and its tape torn."""
    width, height = 160, 120
    floor, cardboard, tape, crease = (198, 198, 192), (196, 152, 96), (164, 124, 72), (92, 62, 34)
    left, top, right, bottom = 28, 22, 132, 100

    def pixel(x: int, y: int) -> tuple[int, int, int]:
        if not (left <= x < right and top <= y < bottom):
            return floor
        dent = (x - 96) - (y - top)  # the crushed corner: above the diagonal from (96, top) to (right, 58)
        if dent > 1:
            return floor if dent > 12 else crease
        if abs(dent) <= 1 or (55 <= y < 65 and (x + 3 * y) % 17 == 0):
            return crease  # the corner's fold, and the cuts in the tape
        if 40 <= x < 84 and abs(y - 82 - abs(x % 8 - 4)) <= 1:
            return crease  # a tear in the side
        return tape if 55 <= y < 65 else cardboard

    rows = b"".join(b"\x00" + bytes(c for x in range(width) for c in pixel(x, y)) for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(rows, 9))
        + _png_chunk(b"IEND", b"")
    )


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def demo_sha256(media_id: str) -> str:
    """Base64 of the SHA-256 of :func:`demo_media_bytes`, as a webhook carries it."""
    return base64.b64encode(hashlib.sha256(demo_media_bytes(media_id)).digest()).decode()


def media_objects(node: Any) -> list[dict[str, Any]]:
    """Every media object of a webhook body: ``{"type": T, T: {"id": …}}`` anywhere in it."""
    found: list[dict[str, Any]] = []
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            kind = item.get("type")
            media = item.get(kind) if isinstance(kind, str) else None
            if isinstance(media, dict) and isinstance(media.get("id"), str):
                found.append(media)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def with_demo_media(raw: bytes) -> bytes:
    """``raw`` with each media object's ``sha256`` set to :func:`demo_sha256` of its id; unchanged (the same
    bytes) when it has no media with a ``sha256``."""
    body = orjson.loads(raw)
    media = [m for m in media_objects(body) if "sha256" in m]
    if not media:
        return raw
    for item in media:
        item["sha256"] = demo_sha256(item["id"])
    return orjson.dumps(body)
