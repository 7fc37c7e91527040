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

The send side (what the gateway, services/gateway/, carries), answered as Meta does (the facts, with their
sources: tests/data/whatsapp/SEND_API.md):

- ``POST /{version}/{phone-number-id}/messages`` → ``{"messaging_product": "whatsapp", "contacts": [{"input",
  "wa_id"}], "messages": [{"id": "wamid.…"}]}``; every send is counted in :attr:`FakeGraphApi.sends`.
  :meth:`refuse_next_sends` answers the next sends with a Graph error (131056 pair rate, 130429 throughput, …);
  :meth:`lose_next_sends` takes the next sends and never answers (the answer is lost: the caller times out).
- ``POST /{version}/{phone-number-id}/media`` (multipart: ``file``, ``type``, ``messaging_product``) → ``{"id"}``;
  the medium is then served by the media endpoints like any other.
- ``GET /{version}/{waba-id}/message_templates?name=…`` → ``{"data": [templates…]}`` (:meth:`add_template`).
- ``GET`` of a path registered with :meth:`add_file` → its bytes, to anyone (a document a send names by ``link``).
- Any other path and method → 200 with what it received (method, path, query, body's sha256, a few headers), so a
  test sees that a pass-through changed nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import json
import secrets
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from pydantic import SecretStr
from python_multipart.multipart import MultipartParser, parse_options_header

from devtools.demo_media import GENERATED_MEDIA, demo_media_bytes, media_objects
from devtools.serving import serve_asgi
from services.archiver.media import Egress
from services.archiver.settings import GraphSettings

Message = MutableMapping[str, Any]


GENERATED_BLOCK = 1024 * 1024

# Meta's synchronous send errors (the Graph error envelope), by code: (HTTP status, message, details).
SEND_ERRORS: dict[int, tuple[int, str, str]] = {
    131056: (
        400,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Message failed to send because there were too many messages sent from this phone number to the same "
        "phone number in a short period of time.",
    ),
    130429: (
        400,
        "(#130429) Rate limit hit",
        "Cloud API message throughput has been reached.",
    ),
    131049: (
        400,
        "(#131049) This message was not delivered to maintain healthy ecosystem engagement.",
        "In order to maintain a healthy ecosystem engagement, the message failed to be delivered.",
    ),
}


def graph_error(code: int, message: str, details: str | None = None) -> bytes:
    """Meta's Graph error envelope (``error_data`` only for WhatsApp errors that carry details)."""
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code}
    if details is not None:
        error["error_data"] = {"messaging_product": "whatsapp", "details": details}
    error["fbtrace_id"] = "A" + secrets.token_urlsafe(15)
    return orjson.dumps({"error": error})


def multipart_form(body: bytes, content_type: str) -> dict[str, tuple[bytes, str | None]]:
    """The parts of a ``multipart/form-data`` body by name: (bytes, the part's content type)."""
    _kind, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        return {}
    parts: dict[str, tuple[bytes, str | None]] = {}
    current: dict[str, Any] = {}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        current["field"] = current.get("field", b"") + data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        current["value"] = current.get("value", b"") + data[start:end]

    def on_header_end() -> None:
        current.setdefault("headers", {})[current.pop("field", b"").lower()] = current.pop("value", b"")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        current["data"] = current.get("data", b"") + data[start:end]

    def on_part_end() -> None:
        headers = current.get("headers", {})
        _disposition, params = parse_options_header(headers.get(b"content-disposition", b""))
        name = params.get(b"name", b"").decode()
        kind = headers.get(b"content-type")
        parts[name] = (current.get("data", b""), kind.decode() if kind else None)
        current.clear()

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    parser.write(body)
    parser.finalize()
    return parts


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
        # The send side: what was sent (phone number id, the request body as JSON), what to answer next.
        self.sends: list[tuple[str, Any]] = []
        self.answers: list[tuple[int, bytes]] = []  # what each answered send was answered, in order
        self.uploads: list[str] = []  # media ids made by POST …/media, in order
        self.send_refusals: list[int] = []  # Graph error codes of SEND_ERRORS for the next sends
        self.lost_sends = 0  # the next sends taken and never answered
        self.templates: dict[tuple[str, str], dict[str, Any]] = {}  # (waba id, name) -> the template object
        self.template_reads = 0
        self.passed: list[dict[str, Any]] = []  # what other paths received
        self.files: dict[str, tuple[bytes, str]] = {}  # path -> (bytes, MIME type): files a send names by link
        self.file_failures: dict[str, list[int]] = {}  # path -> the statuses its next downloads answer
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

    def refuse_next_sends(self, *codes: int) -> None:
        """Answer the next sends with these Graph error codes (keys of :data:`SEND_ERRORS`), one each."""
        self.send_refusals.extend(codes)

    def lose_next_sends(self, count: int) -> None:
        """Take the next ``count`` sends (counted in :attr:`sends`) and never answer them."""
        self.lost_sends += count

    def add_file(self, path: str, data: bytes, mime_type: str) -> str:
        """Serve ``data`` at ``path`` to anyone (a file a send names by ``link``); returns its URL."""
        self.files[path] = (data, mime_type)
        return f"{self.base_url}{path}"

    def fail_file(self, path: str, count: int, status: int = 503) -> None:
        """Answer the next ``count`` downloads of the file at ``path`` (:meth:`add_file`) with ``status``."""
        self.file_failures.setdefault(path, []).extend([status] * count)

    def add_template(self, waba_id: str, template: dict[str, Any]) -> None:
        """Serve ``template`` (Meta's template object: name, language, category, components) for its WABA."""
        self.templates[(waba_id, template["name"])] = template

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
        if scope["method"] == "GET" and path in self.files and self.file_failures.get(path):
            status = self.file_failures[path].pop(0)
            await send({"type": "http.response.start", "status": status, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        if scope["method"] == "GET" and path in self.files:
            data, mime_type = self.files[path]
            start = [(b"content-type", mime_type.encode()), (b"content-length", str(len(data)).encode())]
            await send({"type": "http.response.start", "status": 200, "headers": start})
            await send({"type": "http.response.body", "body": data})
            return
        if self._send_side(scope["method"], path):
            body = await _read(receive)
            status, answer = await self._send_answer(scope, path, headers, body)
            await send(
                {
                    "type": "http.response.start",
                    "status": status,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())],
                }
            )
            await send({"type": "http.response.body", "body": answer})
            return
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
    def _send_side(method: str, path: str) -> bool:
        """Whether a request is the send side's (sends, uploads, templates, any path the media API does not
        answer); the media API keeps ``GET /{version}/{media-id}`` and ``GET /download/{ticket}``."""
        parts = [p for p in path.split("/") if p]
        return not (method == "GET" and (len(parts) <= 2 or parts[0] == "download"))

    async def _send_answer(
        self, scope: Message, path: str, headers: dict[bytes, bytes], body: bytes
    ) -> tuple[int, bytes]:
        if headers.get(b"authorization", b"").decode() != f"Bearer {self.token}":
            return 401, graph_error(190, "Invalid OAuth access token - Cannot parse access token")
        parts = [p for p in path.split("/") if p]
        method = scope["method"]
        if method == "POST" and len(parts) == 3 and parts[2] == "messages":
            return await self._message(parts[1], body)
        if method == "POST" and len(parts) == 3 and parts[2] == "media":
            return self._upload(body, headers.get(b"content-type", b"").decode("latin-1"))
        if method == "GET" and len(parts) == 3 and parts[2] == "message_templates":
            self.template_reads += 1
            query = dict(
                pair.split("=", 1) for pair in bytes(scope.get("query_string", b"")).decode().split("&") if "=" in pair
            )
            found = [t for (waba, name), t in self.templates.items() if waba == parts[1] and name == query.get("name")]
            return 200, orjson.dumps({"data": found, "paging": {"cursors": {"before": "MAZDZD", "after": "MAZDZD"}}})
        received = {
            "method": method,
            "path": path,
            "query": bytes(scope.get("query_string", b"")).decode("latin-1"),
            "body_sha256": hashlib.sha256(body).hexdigest(),
            "content_type": headers.get(b"content-type", b"").decode("latin-1"),
            "x_custom": headers.get(b"x-custom", b"").decode("latin-1"),
        }
        self.passed.append(received)
        return 200, orjson.dumps({"success": True, "received": received})

    async def _message(self, phone_number_id: str, body: bytes) -> tuple[int, bytes]:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            return 400, graph_error(100, "(#100) Invalid parameter")
        self.sends.append((phone_number_id, request))
        if self.lost_sends:
            self.lost_sends -= 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), 60)
            return 500, b"{}"
        if self.send_refusals:
            code = self.send_refusals.pop(0)
            status, message, details = SEND_ERRORS[code]
            self.answers.append((status, graph_error(code, message, details)))
            return self.answers[-1]
        to = request.get("to", "") if isinstance(request, dict) else ""
        wamid = "wamid." + base64.b64encode(f"{phone_number_id}:{to}:{time.time_ns()}".encode()).decode()
        answer = {
            "messaging_product": "whatsapp",
            "contacts": [{"input": to, "wa_id": to.lstrip("+")}],
            "messages": [{"id": wamid}],
        }
        self.answers.append((200, orjson.dumps(answer)))
        return self.answers[-1]

    def _upload(self, body: bytes, content_type: str) -> tuple[int, bytes]:
        form = multipart_form(body, content_type)
        if "file" not in form or form.get("messaging_product", (b"",))[0] != b"whatsapp":
            return 400, graph_error(100, "(#100) The parameter messaging_product is required.")
        data, part_type = form["file"]
        mime = form.get("type", (b"",))[0].decode() or part_type or "application/octet-stream"
        media_id = str(10**15 + len(self.media) + len(self.generated) + len(self.uploads))
        self.add_media(media_id, data, mime)
        self.uploads.append(media_id)
        return 200, orjson.dumps({"id": media_id})

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


async def _read(receive: Callable[[], Awaitable[Message]]) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if message["type"] != "http.request" or not message.get("more_body", False):
            return b"".join(chunks)


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
