"""A small HTTP/1.1 client for the relay's one request: ``POST`` bytes to a fixed URL, keep the connection, read the
status and drop the answer's body.

Why not httpx: the relay makes one kind of request, thousands a second, and httpx's layers (models, anyio, the
connection pool's tracing) cost about a millisecond of CPU per request on the benchmark machine against well under
a tenth of that for the same exchange over asyncio's streams (bench/relay.py). What it does:

- ``http://`` and ``https://`` (TLS with the system's CA certificates and host name verification, or a given
  context); connections are kept alive and reused, one request at a time each (a relay lane delivers one record at
  a time), at most ``max_idle`` kept idle.
- The answer's body is read and discarded (``Content-Length``, ``chunked``, or until the server closes), bounded by
  ``max_response_bytes``; a larger one closes the connection instead of being read. Redirects are not followed.
- A request on a reused connection that the server had closed meanwhile (no answer byte came back) is sent once
  more on a new connection: delivery is at least once anyway.

:meth:`Http1Client.post` returns the status code, or raises :class:`DeliveryTimeout` (connect or answer slower than
the timeouts) or :class:`DeliveryFailed` (refused, reset, not HTTP/1.x).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

# Status line and headers of an answer: more is not an HTTP server worth waiting for.
MAX_HEAD_BYTES: Final = 64 * 1024
READ_CHUNK: Final = 64 * 1024


class DeliveryFailed(Exception):
    """No HTTP answer: refused, reset, closed early, or not HTTP/1.x."""


class DeliveryTimeout(DeliveryFailed):
    """The connection or the answer took longer than allowed."""


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True, slots=True)
class _Head:
    status: int
    length: int | None  # Content-Length, None when absent
    chunked: bool
    keep_alive: bool


class Http1Client:
    """POSTs to one URL over kept-alive HTTP/1.1 connections (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 16,
        max_response_bytes: int = 1024 * 1024,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an absolute http or https URL is required")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls: ssl.SSLContext | None = None
        if parts.scheme == "https":
            self.tls = ssl_context if ssl_context is not None else ssl.create_default_context()
        authority = parts.netloc.rpartition("@")[2]  # never send credentials of the URL in the Host header
        target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self._request_line = f"POST {target} HTTP/1.1\r\nHost: {authority}\r\n".encode("ascii")
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self.max_response_bytes = max_response_bytes
        self._idle: list[_Connection] = []

    async def post(self, body: bytes, headers: Mapping[str, str]) -> int:
        """Send ``body`` with ``headers`` (values without CR or LF: refused with ValueError) and return the status."""
        request = self._request(body, headers)
        reused = self._idle.pop() if self._idle else None
        if reused is not None:
            try:
                return await self._exchange(reused, request, reused=True)
            except _ClosedBeforeAnswer:
                pass  # the server closed it while idle: once more on a new connection
        connection = await self._connect()
        try:
            return await self._exchange(connection, request, reused=False)
        except _ClosedBeforeAnswer as exc:
            raise DeliveryFailed("the connection was closed before an answer") from exc

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()

    def _request(self, body: bytes, headers: Mapping[str, str]) -> bytes:
        lines = [self._request_line, b"Content-Length: %d\r\n" % len(body)]
        for name, value in headers.items():
            if any(c in name for c in "\r\n:") or any(c in value for c in "\r\n"):
                raise ValueError(f"header {name!r}: a line break, or a colon in the name")
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        lines.append(b"\r\n")
        lines.append(body)
        return b"".join(lines)

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                    limit=MAX_HEAD_BYTES,
                )
        except TimeoutError as exc:
            raise DeliveryTimeout(f"no connection within {self.connect_timeout_s}s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryFailed(type(exc).__name__) from exc
        return _Connection(reader, writer)

    async def _exchange(self, connection: _Connection, request: bytes, *, reused: bool) -> int:
        answered = False
        try:
            async with asyncio.timeout(self.timeout_s):
                connection.writer.write(request)
                await connection.writer.drain()
                head = await self._read_head(connection.reader)
                answered = True
                keep = await self._discard_body(connection.reader, head)
        except TimeoutError as exc:
            connection.close()
            raise DeliveryTimeout(f"no answer within {self.timeout_s}s") from exc
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, ssl.SSLError) as exc:
            connection.close()
            if reused and not answered:
                raise _ClosedBeforeAnswer from exc
            raise DeliveryFailed(type(exc).__name__) from exc
        if keep and len(self._idle) < self.max_idle:
            self._idle.append(connection)
        else:
            connection.close()
        return head.status

    @staticmethod
    async def _read_head(reader: asyncio.StreamReader) -> _Head:
        while True:
            raw = await reader.readuntil(b"\r\n\r\n")
            lines = raw.decode("latin-1").split("\r\n")
            version, _, rest = lines[0].partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit():
                raise ValueError("not an HTTP/1.x answer")
            status = int(code)
            if 100 <= status < 200:
                continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
            fields: dict[str, str] = {}
            for line in lines[1:]:
                name, colon, value = line.partition(":")
                if colon:
                    fields[name.strip().lower()] = value.strip()
            connection = fields.get("connection", "").lower()
            keep_alive = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
            length = fields.get("content-length")
            if length is not None and not length.isdigit():
                raise ValueError("a Content-Length that is not a number")
            chunked = "chunked" in fields.get("transfer-encoding", "").lower()
            return _Head(status, None if length is None else int(length), chunked, keep_alive)

    async def _discard_body(self, reader: asyncio.StreamReader, head: _Head) -> bool:
        """Read the answer's body and drop it; whether the connection can be used again."""
        if head.status in (204, 304):
            return head.keep_alive
        if head.chunked:
            total = 0
            while True:
                size_line = await reader.readuntil(b"\r\n")
                size = int(size_line.split(b";", 1)[0].strip(), 16)
                if size == 0:
                    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                        pass
                    return head.keep_alive
                total += size
                if total > self.max_response_bytes:
                    return False
                await reader.readexactly(size + 2)
        if head.length is not None:
            if head.length > self.max_response_bytes:
                return False
            await reader.readexactly(head.length)
            return head.keep_alive
        # Neither: the body ends when the server closes the connection.
        read = 0
        while chunk := await reader.read(READ_CHUNK):
            read += len(chunk)
            if read > self.max_response_bytes:
                break
        return False


class _ClosedBeforeAnswer(Exception):
    """A reused connection gave no answer byte: the server had closed it while it was idle."""
