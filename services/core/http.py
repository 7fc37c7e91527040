"""Limits every HTTP surface of the services shares: request heads, bodies, connections; refusals that say why.

- :func:`server_options`: the uvicorn options each service starts with: at most ``max_concurrency`` connections and
  requests at once (beyond, 503 before the app runs), a request head (request line and headers) of at most
  :data:`MAX_HEAD_BYTES` under either HTTP implementation (:class:`BoundedHttpToolsProtocol`; h11 has its own
  option), no ``Server`` header.
- :class:`BodyLimit`: a pure ASGI middleware that answers 413 when a body is announced (``Content-Length``) or
  streamed (chunked) beyond its limit, before the application has read more than the limit.
- :func:`read_body`: a raw ASGI app's whole request body, :class:`BodyTooLarge` beyond its limit.
- :func:`refuse`: an answer sent before the body is read (401, 403, 413), with ``Connection: close`` so that the
  server drops the connection instead of draining a body nobody will read.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Final

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# A request line and headers: browsers send under 8 KiB (cookies included), Meta and API clients far less.
MAX_HEAD_BYTES: Final = 16 * 1024


def server_options(max_concurrency: int) -> dict[str, Any]:
    """uvicorn keyword arguments (``uvicorn.run`` / ``uvicorn.Config``) that bound what a client can make a
    service hold: connections, request heads, and the ``Server`` header it would learn the software from."""
    return {
        "http": BoundedHttpToolsProtocol,
        "limit_concurrency": max_concurrency,
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "server_header": False,
    }


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a bound on the request head. httptools keeps a header being received in
    memory however long it grows (uvicorn's ``h11_max_incomplete_event_size`` applies to h11 only), so a client
    could send megabytes of one header; this counts the bytes of each head as they arrive, before httptools parses
    them, and answers 431 and closes once they pass the limit (``h11_max_incomplete_event_size``,
    :data:`MAX_HEAD_BYTES` by :func:`server_options`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head_bytes = self.config.h11_max_incomplete_event_size or MAX_HEAD_BYTES
        self._head_bytes = 0
        self._in_head = True
        self._tail = b""  # the last bytes of the previous chunk: the blank line may straddle two chunks

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._tail = True, 0, b""

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            window = self._tail + data
            end = window.find(b"\r\n\r\n")
            self._head_bytes += len(data) if end < 0 else max(0, end + 4 - len(self._tail))
            self._tail = window[-3:] if end < 0 else b""
            if self._head_bytes > self._max_head_bytes:
                self._refuse_head()
                return
        super().data_received(data)

    def _refuse_head(self) -> None:
        body = f"the request head exceeds {self._max_head_bytes} bytes\n".encode()
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: text/plain; charset=utf-8\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        self.transport.close()
        self._in_head = False


async def refuse(send: Send, status: int, reason: str, headers: dict[str, str] | None = None) -> None:
    """A JSON answer ``{"detail": reason}`` given before the request body is read; the connection is closed after
    it (the body, possibly large, is not drained)."""
    body = orjson.dumps({"detail": reason})
    extra = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in (headers or {}).items()]
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def announced_length(scope: Scope) -> int | None:
    """The request's ``Content-Length``, or None when it has none (chunked, or no body)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            text = bytes(value).decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class BodyLimit:
    """Pure ASGI middleware: request bodies of at most ``max_bytes``.

    A body announced larger is answered 413 at once, before the application runs. A body streamed without a length
    is counted as the application reads it; the chunk that passes the limit is not given to the application, which
    sees the client disconnect instead, while the client gets 413 (if no answer was started yet). ``on_refused``
    is called once per refusal (a metric).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, on_refused: Callable[[], None] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_refused = on_refused or (lambda: None)

    def reason(self) -> str:
        return f"the request body exceeds {self.max_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        announced = announced_length(scope)
        if announced is not None and announced > self.max_bytes:
            self.on_refused()
            await refuse(send, 413, self.reason())
            return
        received = 0
        refused = False
        started = False

        async def counted_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    refused = True
                    self.on_refused()
                    if not started:
                        await refuse(send, 413, self.reason())
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 is the answer; what the application says after its client "left" is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            # The application's reaction to the disconnect it was shown (e.g. ClientDisconnect) is not an error.
            if not refused:
                raise


class BodyTooLarge(Exception):
    """A request body beyond the limit its reader was given (announced by ``Content-Length`` or actual)."""


async def read_body(
    scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[MutableMapping[str, Any]]], limit: int
) -> bytes:
    """The whole request body of a raw ASGI request, or :class:`BodyTooLarge` as soon as it exceeds ``limit``
    (announced or actual). A client that disconnects ends the body where it stopped."""
    announced = next((bytes(v) for k, v in scope["headers"] if k == b"content-length"), None)
    if announced is not None and announced.isdigit() and int(announced) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)
