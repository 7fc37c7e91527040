"""The one HTTP/1.1 client (services/core/http1.py) against small servers on 127.0.0.1 that answer as real receivers
and as Meta may: what the relay relies on (kept-alive connections reused, a chunked answer, ``Connection: close``,
a connection the server closed while idle sent again, timeouts, something that is not HTTP, TLS) and what the
gateway relies on (a send that never left told from a lost answer, never sent twice, the whole answer with its
headers, bodies streamed both ways, HEAD)."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ipaddress
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools.serving import free_port
from services.core.http1 import AnswerLost, AnswerTimeout, ConnectTimeout, Http1Pool, NotSent, TimedOut
from services.relay.service import DestinationClient

pytestmark = pytest.mark.unit

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A TCP server on 127.0.0.1 that answers each request with ``answer`` and records what it received."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.connections = 0
        self.bodies: list[bytes] = []
        self.heads: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                length = next(
                    (
                        int(line.split(b":", 1)[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    None,
                )
                if length is None:  # a streamed (chunked) request: not this server's kind
                    break
                self.bodies.append(await reader.readexactly(length))
                writer.write(self.answer)
                await writer.drain()
                lowered = self.answer.lower()
                if b"connection: close" in lowered or not (b"content-length" in lowered or b"chunked" in lowered):
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def serving(handler: Handler, ssl_context: ssl.SSLContext | None = None) -> tuple[asyncio.Server, int]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


@pytest.fixture
async def stop_servers() -> AsyncIterator[list[asyncio.Server]]:
    servers: list[asyncio.Server] = []
    yield servers
    for server in servers:
        server.close()


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n"
CLOSE = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy"


def client(port: int, scheme: str = "http", **options: object) -> DestinationClient:
    return DestinationClient(f"{scheme}://127.0.0.1:{port}/hook?x=1", connect_timeout_s=2, timeout_s=2, **options)  # type: ignore[arg-type]


def pool(port: int, **options: object) -> Http1Pool:
    return Http1Pool(f"http://127.0.0.1:{port}", **{"connect_timeout_s": 2, "timeout_s": 2, **options})  # type: ignore[arg-type]


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nT: 1\r\n\r\n"
CLOSE = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nbusy"


@pytest.mark.parametrize(
    ("answer", "status", "connections"),
    [
        pytest.param(OK, 200, 1, id="content-length, kept alive"),
        pytest.param(CHUNKED, 202, 1, id="chunked with an extension and a trailer, kept alive"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n" + OK, 200, 1, id="an interim answer first"),
        pytest.param(CLOSE, 503, 3, id="connection: close, a new connection each time"),
        pytest.param(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200, 3, id="HTTP/1.0, not kept"),
    ],
)
async def test_answers_and_connection_reuse(
    answer: bytes, status: int, connections: int, stop_servers: list[asyncio.Server]
) -> None:
    receiver = Server(answer)
    server, port = await serving(receiver.handle)
    stop_servers.append(server)
    relay = client(port)
    for n in range(3):
        assert await relay.post(b'{"n":%d}' % n, {"X-Hub-Signature-256": "sha256=00"}) == status
    await relay.aclose()
    assert receiver.bodies == [b'{"n":0}', b'{"n":1}', b'{"n":2}']
    assert receiver.connections == connections
    assert all(head.startswith(b"POST /hook?x=1 HTTP/1.1\r\nhost: 127.0.0.1:") for head in receiver.heads)
    assert all(b"\r\nX-Hub-Signature-256: sha256=00\r\n" in head for head in receiver.heads)


@pytest.mark.parametrize(
    ("answer", "body", "connections"),
    [
        pytest.param(OK, b"ok", 1, id="sized, kept alive"),
        pytest.param(CHUNKED, b"abcde", 1, id="chunked, kept alive"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX-A: 1\r\n\r\nuntil the end", b"until the end", 2, id="until closed"),
    ],
)
async def test_a_whole_answer_with_its_headers(
    answer: bytes, body: bytes, connections: int, stop_servers: list[asyncio.Server]
) -> None:
    """The gateway's sends: the whole answer, its headers as received, and the connection kept for the next send
    when the answer allows it (the keep-alive flag is read with the head: httptools resets it once complete)."""
    receiver = Server(answer)
    server, port = await serving(receiver.handle)
    stop_servers.append(server)
    graph = pool(port)
    json = [(b"Content-Type", b"application/json")]
    for _ in range(2):
        got = await graph.request("POST", "/v21.0/1/messages", json, b"{}", max_answer_bytes=100)
        assert got.body == body
        assert got.headers[0][0] == answer.split(b"\r\n")[1].split(b":")[0].lower()
    await graph.aclose()
    assert b"content-type: application/json" in receiver.heads[0].lower()
    assert receiver.connections == connections


async def test_a_connection_closed_while_idle_is_replaced(stop_servers: list[asyncio.Server]) -> None:
    served = 0

    async def one_request_per_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        head = await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0]))
        served += 1
        writer.write(OK)  # says nothing of closing, then closes: the client finds out on its next request
        await writer.drain()
        writer.close()

    server, port = await serving(one_request_per_connection)
    stop_servers.append(server)
    relay = client(port)
    assert await relay.post(b"1", {}) == 200
    await asyncio.sleep(0.05)
    assert await relay.post(b"2", {}) == 200
    assert served == 2
    await relay.aclose()


async def test_a_send_is_never_written_twice(stop_servers: list[asyncio.Server]) -> None:
    """Without ``resend_if_stale`` (the gateway's sends), a request that met a dead kept-alive connection is lost,
    not sent again: the server may have acted on it."""
    received = 0

    async def answers_then_drops_the_next(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal received
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        received += 1
        writer.write(OK)
        await writer.drain()
        await reader.readuntil(b"\r\n\r\n")  # the second request arrives, and the connection is dropped
        received += 1
        writer.transport.abort()

    server, port = await serving(answers_then_drops_the_next)
    stop_servers.append(server)
    graph = pool(port)
    assert (await graph.request("POST", "/m", [], b"{}", max_answer_bytes=10)).status == 200
    with pytest.raises(AnswerLost):
        await graph.request("POST", "/m", [], b"{}", max_answer_bytes=10)
    assert received == 2


async def test_a_send_that_never_left_is_told_from_a_lost_answer(stop_servers: list[asyncio.Server]) -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    with pytest.raises(NotSent) as refused:
        await pool(port).request("POST", "/v21.0/1/messages", [], b"{}", max_answer_bytes=100)
    assert not isinstance(refused.value, AnswerLost | TimedOut)

    async def half_an_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b'HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n{"messages"')
        await writer.drain()
        writer.close()

    server, port = await serving(half_an_answer)
    stop_servers.append(server)
    with pytest.raises(AnswerLost) as lost:
        await pool(port).request("POST", "/v21.0/1/messages", [], b"{}", max_answer_bytes=100)
    assert not isinstance(lost.value, NotSent)
    receiver = Server(b"HTTP/1.1 200 OK\r\nContent-Length: 20\r\n\r\n" + b"x" * 20)
    big, big_port = await serving(receiver.handle)
    stop_servers.append(big)
    with pytest.raises(AnswerLost, match="larger than 10"):
        await pool(big_port).request("POST", "/m", [], b"{}", max_answer_bytes=10)
    # The relay only needs the status: a body past the bound is not read, and its connection is not kept.
    relay = pool(big_port)
    for _ in range(2):
        dropped = await relay.request("POST", "/m", [], b"{}", max_answer_bytes=10, discard_body=True)
        assert (dropped.status, dropped.body) == (200, b"")
    assert receiver.connections == 3


async def test_failures_are_timeouts_or_failed_requests(stop_servers: list[asyncio.Server]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    quiet, quiet_port = await serving(silent)
    garbled, garbled_port = await serving(not_http)
    stop_servers.extend([quiet, garbled])
    with pytest.raises(AnswerTimeout):
        await DestinationClient(f"http://127.0.0.1:{quiet_port}/", connect_timeout_s=2, timeout_s=0.2).post(b"x", {})
    with pytest.raises(AnswerLost, match="HttpParserError"):
        await client(garbled_port).post(b"x", {})
    with pytest.raises(NotSent):
        await client(free_port()).post(b"x", {})
    with pytest.raises(ValueError, match="line break"):
        await client(garbled_port).post(b"x", {"X-Evil": "a\r\nHost: elsewhere"})
    with pytest.raises(ValueError, match="line break"):
        await pool(garbled_port).request("GET", "/x HTTP/1.1\r\nX: y", [], max_answer_bytes=1)
    # A TLS handshake that never completes is a connect timeout: nothing of the request left.
    with pytest.raises(ConnectTimeout) as slow:
        await Http1Pool(f"https://127.0.0.1:{quiet_port}", connect_timeout_s=0.2, timeout_s=2).request(
            "GET", "/", [], max_answer_bytes=1
        )
    assert isinstance(slow.value, NotSent)
    assert isinstance(slow.value, TimedOut)


async def test_bodies_streamed_both_ways(stop_servers: list[asyncio.Server]) -> None:
    """An upload streamed without a length goes chunked, with its length as it is; the answer streams back in
    the pieces the server wrote, and the connection is kept for the next request once it was read to its end."""
    heads: list[bytes] = []
    bodies: list[bytes] = []
    connections = 0

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError):  # the client closed its kept connection
            while head := await reader.readuntil(b"\r\n\r\n"):
                heads.append(head)
                if b"transfer-encoding: chunked" in head:
                    body = b""
                    while size := int((await reader.readuntil(b"\r\n")).strip(), 16):
                        body += (await reader.readexactly(size + 2))[:-2]
                    await reader.readuntil(b"\r\n")
                else:
                    body = await reader.readexactly(int(head.split(b"content-length: ")[1].split(b"\r\n")[0]))
                bodies.append(body)
                writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
                for piece in (body[:3], body[3:]):
                    writer.write(b"%x\r\n%b\r\n" % (len(piece), piece))
                    await writer.drain()
                writer.write(b"0\r\n\r\n")
                await writer.drain()

    async def upload() -> AsyncIterator[bytes]:
        for piece in (b"--b\r\n", b"", b"a medium", b"\r\n--b--"):
            yield piece

    server, port = await serving(echo)
    stop_servers.append(server)
    graph = pool(port)
    for length in (None, 20):
        async with graph.stream("POST", "/v21.0/1/media", [], upload(), length=length) as answer:
            assert answer.status == 200
            assert b"".join([chunk async for chunk in answer.chunks()]) == b"--b\r\na medium\r\n--b--"
    await graph.aclose()
    assert bodies == [b"--b\r\na medium\r\n--b--"] * 2
    assert b"transfer-encoding: chunked" in heads[0]
    assert b"content-length: 20" in heads[1]
    assert connections == 1


async def test_a_failing_upload_closes_its_connection(stop_servers: list[asyncio.Server]) -> None:
    receiver = Server(OK)
    server, port = await serving(receiver.handle)
    stop_servers.append(server)
    graph = pool(port)

    async def too_large() -> AsyncIterator[bytes]:
        yield b"part"
        raise OverflowError("over the limit")

    with pytest.raises(OverflowError):
        async with graph.stream("POST", "/media", [], too_large()):
            pass
    assert (await graph.request("POST", "/m", [], b"ok", max_answer_bytes=10)).status == 200
    assert receiver.connections == 2


async def test_head_has_no_body(stop_servers: list[asyncio.Server]) -> None:
    receiver = Server(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")

    async def head_only(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(receiver.answer)
        await writer.drain()
        await reader.read()

    server, port = await serving(head_only)
    stop_servers.append(server)
    got = await pool(port, timeout_s=0.5).request("HEAD", "/x", [], max_answer_bytes=10)
    assert (got.status, got.body) == (200, b"")


def self_signed(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


async def test_tls_verifies_the_receiver(tmp_path: Path, stop_servers: list[asyncio.Server]) -> None:
    cert_file, key_file = self_signed(tmp_path)
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_context.load_cert_chain(cert_file, key_file)
    receiver = Server(OK)
    server, port = await serving(receiver.handle, server_context)
    stop_servers.append(server)
    trusting = ssl.create_default_context(cafile=str(cert_file))
    relay = client(port, "https", ssl_context=trusting)
    assert await relay.post(b"secret bytes", {}) == 200
    assert await relay.post(b"more", {}) == 200
    await relay.aclose()
    assert (receiver.bodies, receiver.connections) == ([b"secret bytes", b"more"], 1)
    with pytest.raises(NotSent, match="SSL"):
        await client(port, "https").post(b"x", {})  # the system's CAs do not know this certificate


async def test_an_answer_in_pieces_is_read_whole(stop_servers: list[asyncio.Server]) -> None:
    """A server that writes its head and its body apart (as uvicorn does): the whole answer, on a kept connection."""
    connections = 0

    async def in_pieces(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        with contextlib.suppress(asyncio.IncompleteReadError):
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(2)
                for piece in (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n", b"he", b"llo"):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.01)

    server, port = await serving(in_pieces)
    stop_servers.append(server)
    graph = pool(port)
    assert (await graph.request("POST", "/m", [], b"{}", max_answer_bytes=10)).body == b"hello"
    dropped = await graph.request("POST", "/m", [], b"{}", max_answer_bytes=10, discard_body=True)
    assert (dropped.status, dropped.body) == (200, b"")
    await graph.aclose()
    assert connections == 1
