"""The demo's media files (``make run``, and the end-to-end test of the services).

The sample webhooks are Meta's (tests/data/whatsapp): their media ``sha256`` is the hash of Meta's files, which
the local Graph API stand-in cannot serve, so the archiver would refuse every demo file ("sha256 mismatch") and
mark it missing. The stand-in serves :func:`demo_media_bytes` for each media id instead, and :func:`with_demo_media`
gives the webhooks the hash Meta would put there for those bytes, so the demo's media are archived like real ones.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson


def demo_media_bytes(media_id: str) -> bytes:
    """The deterministic content of the demo's media file ``media_id`` (4 KiB)."""
    return hashlib.sha256(media_id.encode("utf-8", "surrogatepass")).digest() * 128


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
