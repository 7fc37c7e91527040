"""A small local HTTP server that behaves like Meta's Graph API for media — the only fake in the project
(the Graph API is an external SaaS this machine cannot reach).

``GET /{version}/{media_id}`` (or ``/{media_id}``) with the bearer token → media metadata whose ``url`` points back
here; ``GET /download/{token}`` with the same bearer → the bytes. Wrong token → 401 (Graph-style OAuthException),
unknown id → 404. Knobs for tests: :meth:`fail_next` (answer N requests with a status), :meth:`corrupt` and
:meth:`stall` (hold the metadata answer of one id: a download still in flight when a test kills the archiver).
Large media (:meth:`add_generated_media`) are generated as they are sent, never held: a burst of 100 MB documents
costs the stand-in a megabyte.

    python -m devtools.graph_api --port 8099 --token T --seed tests/data/whatsapp

``--seed`` serves the demo's media (:func:`seed_demo_media`): the sample webhooks' and the crisis's photo.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from pydantic import SecretStr

from devtools.demo_media import GENERATED_MEDIA, demo_media_bytes, media_objects
from devtools.serving import serve_asgi
from services.archiver.media import Egress
from services.archiver.settings import GraphSettings

Message = MutableMapping[str, Any]


GENERATED_BLOCK = 1024 * 1024


def generated_bytes(media_id: str, size: int) -> Iterator[bytes]:
    """The bytes of a generated medium, 1 MiB at a time: block i repeats the sha256 of ``media_id:i`` (so every
    block differs, and a misplaced one is seen). Deterministic: a test regenerates them to compare."""
    for index, start in enumerate(range(0, size, GENERATED_BLOCK)):
        block = hashlib.sha256(f"{media_id}:{index}".encode()).digest() * (GENERATED_BLOCK // 32)
        yield block[: min(GENERATED_BLOCK, size - start)]


class FakeGraphApi:
    def __init__(self, *, token: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.token = token
        self.host, self.port = host, port
        self.media: dict[str, tuple[bytes, str]] = {}
        self.generated: dict[str, tuple[int, str, str]] = {}  # media id -> (size, mime type, sha256 hex)
        self.downloads: dict[str, str] = {}
        self.corrupted: set[str] = set()
        self.failures: list[int] = []
        self.stalled: dict[str, float] = {}
        self._stopping = asyncio.Event()
        self.elsewhere: dict[str, str] = {}  # media id -> the download URL its metadata gives instead of ours
        self.redirects: dict[str, str] = {}  # media id -> where its download answers 302
        self.requests: list[tuple[str, str]] = []
        self._base_url: str | None = None
        self._server: Any = None

    @property
    def base_url(self) -> str:
        assert self._base_url is not None, "start() first"
        return self._base_url

    @property
    def egress(self) -> Egress:
        """The local override that lets the fetcher reach this stand-in (plain http on 127.0.0.1)."""
        return Egress(download_hosts=("127.0.0.1",), loopback_http=True)

    def graph_settings(self, **overrides: Any) -> GraphSettings:
        """The archiver's Graph API settings for this stand-in (as deploy/local/demo.env sets them for the demo)."""
        return GraphSettings(
            base_url=self.base_url,
            token=SecretStr(self.token),
            download_hosts=self.egress.download_hosts,
            loopback_http=True,
            **overrides,
        )

    def add_media(self, media_id: str, data: bytes, mime_type: str = "image/jpeg") -> str:
        """Register media; returns the base64 sha256 a webhook would carry for it."""
        self.media[media_id] = (data, mime_type)
        return base64.b64encode(hashlib.sha256(data).digest()).decode()

    def add_generated_media(self, media_id: str, size: int, mime_type: str = "application/pdf") -> str:
        """Register a medium of ``size`` bytes made by :func:`generated_bytes` as it is served; returns the
        base64 sha256 a webhook would carry for it."""
        digest = hashlib.sha256()
        for block in generated_bytes(media_id, size):
            digest.update(block)
        self.generated[media_id] = (size, mime_type, digest.hexdigest())
        return base64.b64encode(digest.digest()).decode()

    def fail_next(self, count: int, status: int = 500) -> None:
        self.failures.extend([status] * count)

    def corrupt(self, media_id: str) -> None:
        self.corrupted.add(media_id)

    def stall(self, media_id: str, seconds: float) -> None:
        """Answer the metadata request of ``media_id`` only after ``seconds``."""
        self.stalled[media_id] = seconds

    def point_elsewhere(self, media_id: str, url: str) -> None:
        """The metadata of ``media_id`` gives ``url`` as its download URL (a host off the allow-list, http)."""
        self.elsewhere[media_id] = url

    def redirect(self, media_id: str, url: str) -> None:
        """The download of ``media_id`` answers ``302 Location: url``."""
        self.redirects[media_id] = url

    async def __call__(
        self, scope: Message, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        self.requests.append((scope["method"], path))
        headers = dict(scope["headers"])
        stall = self.stalled.get(path.rsplit("/", 1)[-1])
        if stall:
            # Cut short by stop(): the server's shutdown waits for the requests it is answering.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), stall)
        streamed = self._generated_download(path, headers.get(b"authorization", b"").decode())
        if streamed is not None:
            size, mime_type, media_id = streamed
            start_headers = [(b"content-type", mime_type.encode()), (b"content-length", str(size).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": start_headers})
            for block in generated_bytes(media_id, size):
                await send({"type": "http.response.body", "body": block, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
            return
        status, body, content_type = self._answer(path, headers.get(b"authorization", b"").decode())
        extra: list[tuple[bytes, bytes]] = []
        if status == 302:
            extra.append((b"location", body))
            body = b""
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode()), *extra],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _generated_download(self, path: str, authorization: str) -> tuple[int, str, str] | None:
        """(size, mime type, media id) when ``path`` is the download of a generated medium this request may have."""
        parts = [p for p in path.split("/") if p]
        if self.failures or authorization != f"Bearer {self.token}" or len(parts) != 2 or parts[0] != "download":
            return None
        media_id = self.downloads.get(parts[1])
        if media_id is None or media_id not in self.generated:
            return None
        size, mime_type, _digest = self.generated[media_id]
        return size, mime_type, media_id

    def _answer(self, path: str, authorization: str) -> tuple[int, bytes, str]:
        if self.failures:
            status = self.failures.pop(0)
            return status, self._error(f"simulated {status}", 2), "application/json"
        if authorization != f"Bearer {self.token}":
            return 401, self._error("Invalid OAuth access token.", 190), "application/json"
        parts = [p for p in path.split("/") if p]
        if len(parts) == 2 and parts[0] == "download":
            media_id = self.downloads.get(parts[1])
            if media_id is None or media_id not in self.media:
                return 404, self._error("Unknown download", 100), "application/json"
            if media_id in self.redirects:
                return 302, self.redirects[media_id].encode(), "text/plain"
            data, mime = self.media[media_id]
            return 200, (bytes([data[0] ^ 1]) + data[1:] if media_id in self.corrupted else data), mime
        media_id = parts[-1] if parts else ""
        if media_id in self.generated:
            size, mime, sha256_hex = self.generated[media_id]
        elif media_id in self.media:
            data, mime = self.media[media_id]
            size, sha256_hex = len(data), hashlib.sha256(data).hexdigest()
        else:
            return 404, self._error("Unsupported get request.", 100), "application/json"
        ticket = secrets.token_urlsafe(16)
        self.downloads[ticket] = media_id
        info = {
            "messaging_product": "whatsapp",
            "url": self.elsewhere.get(media_id, f"{self.base_url}/download/{ticket}"),
            "mime_type": mime,
            "sha256": sha256_hex,
            "file_size": size,
            "id": media_id,
        }
        return 200, orjson.dumps(info), "application/json"

    @staticmethod
    def _error(message: str, code: int) -> bytes:
        return orjson.dumps({"error": {"message": message, "type": "OAuthException", "code": code}})

    async def start(self) -> None:
        self._server = serve_asgi(self, lifespan="off", port=self.port)
        self._base_url = await self._server.__aenter__()

    async def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            await self._server.__aexit__(None, None, None)
            self._server = None

    async def __aenter__(self) -> FakeGraphApi:
        await self.start()
        return self

    async def __aexit__(
        self, _type: type[BaseException] | None, _value: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.stop()


def seed_from_webhooks(api: FakeGraphApi, directory: Path) -> int:
    """Register every media id found in the webhooks of ``directory`` with the demo's deterministic bytes
    (devtools/demo_media.py: the demo sends the webhooks with the matching hashes)."""
    count = 0
    for path in sorted(directory.glob("*.json")):
        for media in media_objects(json.loads(path.read_bytes())):
            api.add_media(
                media["id"], demo_media_bytes(media["id"]), str(media.get("mime_type", "application/octet-stream"))
            )
            count += 1
    return count


def seed_demo_media(api: FakeGraphApi, samples: Path) -> int:
    """Register every media file ``make run`` sends: those of the sample webhooks in ``samples``
    (:func:`seed_from_webhooks`) and those of its generated webhooks (demo_media.GENERATED_MEDIA: the crisis's
    photo), each with the demo's deterministic bytes. Returns how many media ids were registered."""
    for media_id, mime_type in GENERATED_MEDIA.items():
        api.add_media(media_id, demo_media_bytes(media_id), mime_type)
    return seed_from_webhooks(api, samples) + len(GENERATED_MEDIA)


async def serve_forever(port: int, token: str, seed: Path | None) -> None:
    api = FakeGraphApi(token=token, port=port)
    if seed is not None:
        print(f"seeded {seed_demo_media(api, seed)} media id(s)")
    async with api:
        print(f"fake Graph API on {api.base_url}")
        await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--token", required=True)
    parser.add_argument("--seed", type=Path)
    arguments = parser.parse_args()
    asyncio.run(serve_forever(arguments.port, arguments.token, arguments.seed))
