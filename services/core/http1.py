"""One small HTTP/1.1 client for the requests the services make thousands of times a second: the relay's deliveries
(services/relay/) and the send gateway's calls to the Graph API (services/gateway/).

Why not httpx: its layers (URL and header models, an async-library abstraction, the pool's tracing, auth and
redirect machinery) cost about a millisecond of CPU per request on the benchmark machine, ten times what the
exchange itself costs over asyncio's streams with httptools' parser (the one uvicorn serves with); see
bench/relay.py and bench/gateway.py. What :class:`Http1Pool` does, and nothing else:

- one origin (``http://`` or ``https://`` host and port; TLS with the system's CA certificates and host name
  verification, or a given context); any method and target; connections kept alive and reused, one exchange at a
  time each, at most ``max_idle`` kept idle, none reused after ``idle_s`` idle or once the server closed it;
- request bodies as bytes (``Content-Length``) or streamed from an async iterable (its announced length, or
  ``chunked``); answers read whole (:meth:`Http1Pool.request`, bounded) or streamed (:meth:`Http1Pool.stream`),
  sized, chunked or ending with the connection; interim answers (``100 Continue``, ``103``) skipped; redirects are
  answers like any other (never followed); no proxy, no cookies, no decompression (bytes come back as sent).

Failure contract — what a caller may conclude depends on it:

- :class:`NotSent` (:class:`ConnectTimeout` when it was the connect timeout): no connection could be made (refused,
  unreachable, TLS handshake or certificate refused): nothing of the request left;
- :class:`AnswerLost` (:class:`AnswerTimeout` when it was the answer timeout): the request was, or may have been,
  written and no complete answer came (reset, closed early, not HTTP/1.x, larger than allowed): the server may
  have acted on it.

It never sends a request twice unless the caller says it may (``resend_if_stale``, for requests delivered at
least once anyway): then a request that got no byte of answer on a *reused* connection — the server had closed it
while idle — is sent once more on a new one. A header value or name with a line break is refused (ValueError)
before anything is sent: it would smuggle headers or a second request.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

import httptools

Headers = list[tuple[bytes, bytes]]

READ_BYTES: Final = 64 * 1024
# The connection's own headers: set here from the body and the origin, never taken from the caller.
FRAMING: Final = frozenset({b"host", b"content-length", b"transfer-encoding", b"connection"})


class RequestFailed(Exception):
    """No complete HTTP answer (module docstring: :class:`NotSent` or :class:`AnswerLost`)."""


class TimedOut(RequestFailed):
    """The connection or the answer took longer than allowed (with :class:`NotSent` or :class:`AnswerLost`)."""


class NotSent(RequestFailed):
    """No connection could be made: nothing of the request left."""


class AnswerLost(RequestFailed):
    """The request may have reached the server, and no complete answer came back."""


class ConnectTimeout(NotSent, TimedOut):
    """No connection within the connect timeout: nothing of the request left."""


class AnswerTimeout(AnswerLost, TimedOut):
    """No (complete) answer within the timeout: the server may have acted on the request."""


class _ClosedBeforeAnswer(Exception):
    """A reused connection gave no byte of answer: the server had closed it while it was idle."""


@dataclass(slots=True)
class Answer:
    """A whole answer: the status, the headers as received (names lowercased) and the body."""

    status: int
    headers: Headers
    body: bytes


class _Parse:
    """httptools' callbacks for one answer; interim (1xx) answers are skipped."""

    __slots__ = ("chunks", "done", "head_done", "headers", "keep_alive", "parser", "size", "status", "until_close")

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.status = 0
        self.headers: Headers = []
        self.chunks: list[bytes] = []
        self.size = 0  # bytes of body received
        self.head_done = False
        self.done = False
        self.keep_alive = False
        self.until_close = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            self.headers = []  # an interim answer: the real one follows on the same connection
            return
        self.status = status
        self.head_done = True
        # Read here: once the message is complete the parser resets and says False whatever the answer said.
        self.keep_alive = self.parser.should_keep_alive()
        framed = status in (204, 304) or any(
            name in (b"content-length", b"transfer-encoding") for name, _ in self.headers
        )
        self.until_close = not framed

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.size += len(body)

    def on_message_complete(self) -> None:
        if self.head_done:
            self.done = True


@dataclass(slots=True)
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float

    def close(self) -> None:
        self.writer.close()


class StreamedAnswer:
    """An answer whose head has been read; the body is read with :meth:`chunks`, :meth:`read` or :meth:`discard`.
    Closing it (:meth:`aclose`, or leaving :meth:`Http1Pool.stream`) gives the connection back to the pool when the
    body was read to its end and the server keeps the connection, and closes it otherwise."""

    def __init__(self, pool: Http1Pool, connection: _Connection, parse: _Parse, *, head_only: bool) -> None:
        self._pool = pool
        self._connection: _Connection | None = connection
        self._parse = parse
        self.status = parse.status
        self.headers = parse.headers
        if head_only:  # the answer to HEAD has no body whatever its headers say; the parser cannot know that
            parse.done, parse.keep_alive, parse.chunks = True, False, []

    @property
    def complete(self) -> bool:
        return self._parse.done

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body's bytes as they come (without chunked framing). AnswerLost / AnswerTimeout when the connection
        fails or each wait exceeds the pool's timeout before the end."""
        parse = self._parse
        while True:
            if parse.chunks:
                ready, parse.chunks = parse.chunks, []
                for chunk in ready:
                    yield chunk
            if parse.done:
                return
            connection = self._connection
            assert connection is not None, "the answer was closed"
            try:
                async with asyncio.timeout(self._pool.timeout_s):
                    data = await connection.reader.read(READ_BYTES)
            except TimeoutError as exc:
                self._close()
                raise AnswerTimeout(f"no answer within {self._pool.timeout_s}s") from exc
            except (OSError, ssl.SSLError) as exc:
                self._close()
                raise AnswerLost(type(exc).__name__) from exc
            if not data:
                if parse.until_close:
                    parse.done, parse.keep_alive = True, False
                    continue
                self._close()
                raise AnswerLost("the connection closed before the answer was complete")
            try:
                parse.parser.feed_data(data)
            except httptools.HttpParserError as exc:
                self._close()
                raise AnswerLost(type(exc).__name__) from exc

    async def read(self, limit: int) -> bytes:
        """The whole body; AnswerLost when it is larger than ``limit`` (the connection is then closed)."""
        parts: list[bytes] = []
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                self._close()
                raise AnswerLost(f"an answer larger than {limit} bytes")
            parts.append(chunk)
        return b"".join(parts)

    async def discard(self, limit: int) -> None:
        """Read the body and drop it; past ``limit`` bytes the connection is closed instead of read further."""
        size = 0
        async for chunk in self.chunks():
            size += len(chunk)
            if size > limit:
                self._close()
                return

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._pool._release(connection, self._parse)

    def _close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()


class Http1Pool:
    """Requests to one origin over kept-alive HTTP/1.1 connections (see the module's docstring).

    ``connect_timeout_s`` bounds the TCP connection and the TLS handshake; ``timeout_s`` bounds :meth:`request`
    from its first byte written to its answer's last byte read, and in :meth:`stream` each write of a streamed body,
    then the wait for the answer's head, then each wait for a piece of its body."""

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float,
        timeout_s: float,
        ssl_context: ssl.SSLContext | None = None,
        max_idle: int = 16,
        idle_s: float = 20.0,
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
        self._host_line = b"\r\nhost: " + authority.encode("idna") + b"\r\n"
        self.connect_timeout_s = connect_timeout_s
        self.timeout_s = timeout_s
        self.max_idle = max_idle
        self.idle_s = idle_s
        self._idle: deque[_Connection] = deque()

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | None = None,
        *,
        max_answer_bytes: int,
        discard_body: bool = False,
        resend_if_stale: bool = False,
    ) -> Answer:
        """One exchange with a body held in memory (or none), the whole answer read: at most ``max_answer_bytes``
        of body, AnswerLost beyond; with ``discard_body``, the body is read and dropped (the answer's is empty) and
        past ``max_answer_bytes`` the connection is closed instead of read further, the status still returned.
        ``headers`` exclude the framing ones (:data:`FRAMING`: dropped, set here)."""
        head = self._head(method, target, headers, body, None)
        whole = None if method == "HEAD" else max_answer_bytes  # HEAD: the answer has no body, whatever it says
        connection, parse = await self._open(head, None, chunked=False, resend_if_stale=resend_if_stale, whole=whole)
        if whole is None or not parse.done or parse.size > max_answer_bytes:
            connection.close()  # after HEAD the parser still expects a body; past the bound, the rest is unread
            if whole is not None and not discard_body:
                raise AnswerLost(f"an answer larger than {max_answer_bytes} bytes")
            return Answer(parse.status, parse.headers, b"")
        self._release(connection, parse)
        if discard_body or not parse.chunks:
            return Answer(parse.status, parse.headers, b"")
        content = parse.chunks[0] if len(parse.chunks) == 1 else b"".join(parse.chunks)
        return Answer(parse.status, parse.headers, content)

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None = None,
        *,
        length: int | None = None,
        resend_if_stale: bool = False,
    ) -> AsyncIterator[StreamedAnswer]:
        """Send the request and yield its answer once the head has come; the body is read from the answer.

        ``body``: bytes, sent with their length; an async iterable, sent as it yields, with ``length`` as its
        ``Content-Length`` when given (the iterable must yield exactly that) or ``chunked`` otherwise; None, no
        body. An exception the iterable raises closes the connection and propagates (the server got a truncated
        request). ``resend_if_stale`` applies to a bytes body only (module docstring)."""
        head = self._head(method, target, headers, body, length)
        streamed = body if isinstance(body, AsyncIterable) else None
        chunked = streamed is not None and length is None
        connection, parse = await self._open(
            head, streamed, chunked=chunked, resend_if_stale=resend_if_stale, whole=None
        )
        answer = StreamedAnswer(self, connection, parse, head_only=method == "HEAD")
        try:
            yield answer
        finally:
            await answer.aclose()

    async def _open(
        self,
        head: bytes,
        streamed: AsyncIterable[bytes] | None,
        *,
        chunked: bool,
        resend_if_stale: bool,
        whole: int | None,
    ) -> tuple[_Connection, _Parse]:
        """A connection on which the request (``head``, then ``streamed`` when given) was written and its answer's
        head read, or with ``whole`` the whole answer (or its first ``whole`` bytes of body and more)."""
        connection, reused = self._reusable()
        if connection is None:
            connection = await self._connect()
        try:
            parse = await self._exchange(
                connection, head, streamed, chunked, may_resend=resend_if_stale and reused, whole=whole
            )
        except _ClosedBeforeAnswer:
            connection = await self._connect()
            parse = await self._exchange(connection, head, streamed, chunked, may_resend=False, whole=whole)
        return connection, parse

    async def aclose(self) -> None:
        idle, self._idle = self._idle, deque()
        for connection in idle:
            connection.close()
        for connection in idle:
            with contextlib.suppress(Exception):
                await connection.writer.wait_closed()

    def _head(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[bytes, bytes]],
        body: bytes | AsyncIterable[bytes] | None,
        length: int | None,
    ) -> bytes:
        if not target.startswith("/") or any(c in target for c in " \r\n"):
            raise ValueError("a request target is a path (and query) without spaces or line breaks")
        lines = [method.encode("ascii"), b" ", target.encode("latin-1"), b" HTTP/1.1", self._host_line]
        for name, value in headers:
            if b"\r" in value or b"\n" in value or b"\r" in name or b"\n" in name or b":" in name:
                raise ValueError(f"header {name!r}: a line break, or a colon in the name")
            if name.lower() not in FRAMING:
                lines += [name, b": ", value, b"\r\n"]
        if isinstance(body, bytes):
            lines += [b"content-length: ", b"%d" % len(body), b"\r\n\r\n", body]
        elif body is None:
            lines.append(b"\r\n")
        elif length is not None:
            lines += [b"content-length: ", b"%d" % length, b"\r\n\r\n"]
        else:
            lines.append(b"transfer-encoding: chunked\r\n\r\n")
        return b"".join(lines)

    def _reusable(self) -> tuple[_Connection | None, bool]:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self.idle_s and not connection.reader.at_eof():
                return connection, True
            connection.close()
        return None, False

    async def _connect(self) -> _Connection:
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                reader, writer = await asyncio.open_connection(
                    self.host,
                    self.port,
                    ssl=self.tls,
                    server_hostname=self.host if self.tls is not None else None,
                    limit=READ_BYTES,
                )
        except TimeoutError as exc:
            raise ConnectTimeout(f"no connection within {self.connect_timeout_s}s") from exc
        except (OSError, ssl.SSLError) as exc:
            raise NotSent(type(exc).__name__) from exc
        return _Connection(reader, writer, 0.0)

    async def _exchange(
        self,
        connection: _Connection,
        head: bytes,
        streamed: AsyncIterable[bytes] | None,
        chunked: bool,
        *,
        may_resend: bool,
        whole: int | None,
    ) -> _Parse:
        """Write the request and read its answer's head — or with ``whole``, the whole answer, stopping early once
        its body passes ``whole`` bytes: a held-in-memory body and the answer within one ``timeout_s``; a streamed
        body within ``timeout_s`` a write, then the answer within ``timeout_s``."""
        parse = _Parse()
        answered = False
        try:
            writer = connection.writer
            writer.write(head)
            if streamed is not None:
                await self._write_streamed(writer, streamed, chunked=chunked)
                may_resend = False  # the body cannot be sent again
            async with asyncio.timeout(self.timeout_s):
                await writer.drain()
                reader, parser = connection.reader, parse.parser
                while not (parse.head_done if whole is None else parse.done or parse.size > whole):
                    data = await reader.read(READ_BYTES)
                    if not data:
                        if parse.head_done and parse.until_close:  # a body that ends with the connection
                            parse.done, parse.keep_alive = True, False
                            break
                        raise ConnectionResetError("closed before the answer was complete")
                    answered = True
                    parser.feed_data(data)
        except TimeoutError as exc:
            connection.close()
            raise AnswerTimeout(f"no answer within {self.timeout_s}s") from exc
        except (OSError, ssl.SSLError, httptools.HttpParserError) as exc:
            connection.close()
            if may_resend and not answered:
                raise _ClosedBeforeAnswer from exc
            raise AnswerLost(type(exc).__name__) from exc
        except BaseException:  # a failed body iterable, a cancellation: the connection is in an unknown state
            connection.close()
            raise
        return parse

    async def _write_streamed(self, writer: asyncio.StreamWriter, body: AsyncIterable[bytes], *, chunked: bool) -> None:
        async for chunk in body:
            if not chunk:
                continue
            writer.write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
            async with asyncio.timeout(self.timeout_s):
                await writer.drain()
        if chunked:
            writer.write(b"0\r\n\r\n")

    def _release(self, connection: _Connection, parse: _Parse) -> None:
        if parse.done and parse.keep_alive and len(self._idle) < self.max_idle:
            connection.idle_since = time.monotonic()
            self._idle.append(connection)
        else:
            connection.close()
