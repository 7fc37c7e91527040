"""The demo's media hashes: every sample webhook with media gets the hash of the bytes the Graph API stand-in
serves for it, and nothing else in it changes; the media of the demo's own webhooks (the crisis's photo) are
served too, and the photo is a picture."""

from __future__ import annotations

import base64
import hashlib
import struct
import zlib
from typing import Any

import orjson
import pytest

from devtools.demo_media import (
    GENERATED_MEDIA,
    PARCEL_PHOTO_ID,
    demo_media_bytes,
    demo_sha256,
    media_objects,
    parcel_photo,
    with_demo_media,
)
from devtools.graph_api import FakeGraphApi, seed_demo_media
from devtools.samples import PAYLOADS_DIR

pytestmark = pytest.mark.unit

SAMPLES = sorted(PAYLOADS_DIR.glob("*.json"))
WITH_MEDIA = [p for p in SAMPLES if any("sha256" in m for m in media_objects(orjson.loads(p.read_bytes())))]


def without_hashes(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: without_hashes(v) for k, v in node.items() if k != "sha256"}
    if isinstance(node, list):
        return [without_hashes(v) for v in node]
    return node


def test_the_samples_have_media_to_archive() -> None:
    assert len(WITH_MEDIA) >= 5


@pytest.mark.parametrize("path", WITH_MEDIA, ids=lambda p: p.stem)
def test_each_media_gets_the_hash_of_the_demo_bytes_and_nothing_else_changes(path: Any) -> None:
    raw = path.read_bytes()
    rewritten = orjson.loads(with_demo_media(raw))
    for media in media_objects(rewritten):
        if "sha256" in media:
            expected = base64.b64encode(hashlib.sha256(demo_media_bytes(media["id"])).digest()).decode()
            assert media["sha256"] == expected
    assert without_hashes(rewritten) == without_hashes(orjson.loads(raw))


def test_a_body_without_media_is_left_as_it_is() -> None:
    plain = next(p for p in SAMPLES if not media_objects(orjson.loads(p.read_bytes())))
    assert with_demo_media(plain.read_bytes()) == plain.read_bytes()


def test_the_stand_in_serves_every_demo_media_with_the_hash_the_webhooks_carry() -> None:
    stand_in = FakeGraphApi(token="t")
    seeded = seed_demo_media(stand_in, PAYLOADS_DIR)
    sample_ids = {m["id"] for p in SAMPLES for m in media_objects(orjson.loads(p.read_bytes()))}
    assert set(stand_in.media) == sample_ids | set(GENERATED_MEDIA)
    assert seeded >= len(stand_in.media)
    for media_id, (data, _mime) in stand_in.media.items():
        assert base64.b64encode(hashlib.sha256(data).digest()).decode() == demo_sha256(media_id)
        if media_id in sample_ids:
            assert data == hashlib.sha256(media_id.encode()).digest() * 128  # as before the crisis: 4 KiB
    for media_id, mime_type in GENERATED_MEDIA.items():
        assert stand_in.media[media_id][1] == mime_type


def test_the_generated_media_are_no_sample_media() -> None:
    sample_ids = {m["id"] for p in SAMPLES for m in media_objects(orjson.loads(p.read_bytes()))}
    assert not set(GENERATED_MEDIA) & sample_ids


def test_the_parcel_photo_is_a_png_picture() -> None:
    photo = demo_media_bytes(PARCEL_PHOTO_ID)
    assert photo == parcel_photo()
    assert GENERATED_MEDIA[PARCEL_PHOTO_ID] == "image/png"
    assert photo.startswith(b"\x89PNG\r\n\x1a\n")
    chunks: dict[bytes, bytes] = {}
    position = 8
    while position < len(photo):
        (length,) = struct.unpack(">I", photo[position : position + 4])
        kind, data = photo[position + 4 : position + 8], photo[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", photo[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + data)
        chunks[kind] = data
        position += 12 + length
    width, height, depth, colour, *_ = struct.unpack(">IIBBBBB", chunks[b"IHDR"])
    assert (width, height, depth, colour) == (160, 120, 8, 2)
    pixels = zlib.decompress(chunks[b"IDAT"])
    assert len(pixels) == height * (1 + 3 * width)
    assert len(set(pixels)) > 4  # a picture, not a flat colour
    assert list(chunks) == [b"IHDR", b"IDAT", b"IEND"]
