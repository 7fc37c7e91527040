"""The demo's media hashes: every sample webhook with media gets the hash of the bytes the Graph API stand-in
serves for it, and nothing else in it changes."""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest

from services.tools.demo_media import demo_media_bytes, media_objects, with_demo_media
from tests.support import PAYLOADS_DIR

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
