"""The one request a send makes to Meta: HTTP/1.1 over a pool of keep-alive connections, with nothing else.

A general client (httpx) spends about a millisecond of CPU per request on what a send does not use (URL and header
models, auth and redirect machinery, an async-library abstraction); this is the gateway's largest cost per send
(bench/gateway.py). :class:`UpstreamPool` writes the request line, the headers and the body itself and parses the
answer with httptools (the parser uvicorn serves with): chunked or sized bodies, keep-alive as the answer says.

Failure contract of :meth:`UpstreamPool.post` — what the archive records of a send depends on it:

- :class:`NotSent`: no connection could be made (refused, unreachable, TLS handshake failed, connect timeout):
  nothing of the request left;
- :class:`AnswerLost`: the request was (or may have been) written and no complete answer came (timeout, reset,
  a malformed answer): Meta may have sent the message.

It never retries. A connection is reused only while idle for less than ``idle_s`` and not closed by the server, so
that a request is not written onto a connection Meta already dropped (that send would be "unknown").
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httptools

READ_BYTES = 64 * 1024
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # Meta's send answers are a few hundred bytes; an error page a few KB


class NotSent(Exception):
    """No connection to the Graph API: nothing was sent."""


class AnswerLost(Exception):
    """The request may have reached the Graph API, and no complete answer came back."""


@dataclass(slots=True)
class UpstreamAnswer:
    status: int = 0
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    complete: bool = False

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_body(self, body: bytes) -> None:
        if len(self.body) + len(body) > MAX_ANSWER_BYTES:
            raise AnswerLost("the answer is larger than any send answer")
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float


class UpstreamPool:
    def __init__(
        self,
        base_url: str,
        *,
        connect_timeout_s: float,
        answer_timeout_s: float,
        max_idle: int = 64,
        idle_s: float = 20.0,
    ) -> None:
        parts = urlsplit(base_url)
        self._tls = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port or (443 if self._tls else 80)
        self._host_header = parts.netloc.encode("idna" if not parts.netloc.isascii() else "ascii")
        self._connect_timeout_s = connect_timeout_s
        self._answer_timeout_s = answer_timeout_s
        self._idle: deque[_Connection] = deque()
        self._max_idle = max_idle
        self._idle_s = idle_s
        self._ssl = ssl.create_default_context() if self._tls else None

    async def _connection(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self._idle_s and not connection.reader.at_eof():
                return connection
            connection.writer.close()
        try:
            async with asyncio.timeout(self._connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self._host, self._port, ssl=self._ssl, server_hostname=self._host if self._tls else None
                )
        except (OSError, TimeoutError, ssl.SSLError) as exc:
            raise NotSent(type(exc).__name__) from None
        return _Connection(reader, writer, now)

    async def post(self, target: str, headers: list[tuple[bytes, bytes]], body: bytes) -> UpstreamAnswer:
        """POST ``body`` to ``target`` (path and query) with ``headers`` (no hop-by-hop, no Host, no length: they
        are set here); the whole answer, or NotSent / AnswerLost (module docstring)."""
        connection = await self._connection()
        head = [b"POST ", target.encode("latin-1"), b" HTTP/1.1\r\nhost: ", self._host_header, b"\r\n"]
        for name, value in headers:
            head += [name, b": ", value, b"\r\n"]
        head += [b"content-length: ", str(len(body)).encode(), b"\r\n\r\n"]
        answer = UpstreamAnswer()
        parser = httptools.HttpResponseParser(answer)
        try:
            async with asyncio.timeout(self._answer_timeout_s):
                connection.writer.write(b"".join(head) + body)
                await connection.writer.drain()
                while not answer.complete:
                    data = await connection.reader.read(READ_BYTES)
                    if not data:
                        raise AnswerLost("the connection closed before the answer was complete")
                    parser.feed_data(data)
            answer.status = parser.get_status_code()
        except (OSError, TimeoutError, httptools.HttpParserError, AnswerLost) as exc:
            connection.writer.close()
            raise AnswerLost(type(exc).__name__) from None
        except BaseException:
            connection.writer.close()
            raise
        if parser.should_keep_alive() and len(self._idle) < self._max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.writer.close()
        return answer

    async def aclose(self) -> None:
        while self._idle:
            connection = self._idle.pop()
            connection.writer.close()
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()
