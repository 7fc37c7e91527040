"""The relay's HTTP/1.1 client (services/relay/http1.py) against small servers on 127.0.0.1 that answer as real
receivers may: kept-alive connections reused, a chunked answer, ``Connection: close``, a connection the server
closed while idle, an answer that never comes, a refused port, something that is not HTTP, and TLS."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devtools.serving import free_port
from services.relay.http1 import DeliveryFailed, DeliveryTimeout, Http1Client

pytestmark = pytest.mark.integration

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class Server:
    """A TCP server on 127.0.0.1 that answers each request with ``answer`` and records what it received."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.connections = 0
        self.bodies: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = next(
                    int(line.split(b":", 1)[1])
                    for line in head.split(b"\r\n")
                    if line.lower().startswith(b"content-length:")
                )
                self.bodies.append(await reader.readexactly(length))
                writer.write(self.answer)
                await writer.drain()
                if b"connection: close" in self.answer.lower():
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


def client(port: int, scheme: str = "http", **options: object) -> Http1Client:
    return Http1Client(f"{scheme}://127.0.0.1:{port}/hook?x=1", connect_timeout_s=2, timeout_s=2, **options)  # type: ignore[arg-type]


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


async def test_failures_are_timeouts_or_failed_deliveries(stop_servers: list[asyncio.Server]) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # never answers

    async def not_http(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH\r\n\r\n")
        await writer.drain()

    quiet, quiet_port = await serving(silent)
    garbled, garbled_port = await serving(not_http)
    stop_servers.extend([quiet, garbled])
    with pytest.raises(DeliveryTimeout):
        await Http1Client(f"http://127.0.0.1:{quiet_port}/", connect_timeout_s=2, timeout_s=0.2).post(b"x", {})
    with pytest.raises(DeliveryFailed, match="ValueError"):
        await client(garbled_port).post(b"x", {})
    with pytest.raises(DeliveryFailed):
        await client(free_port()).post(b"x", {})
    with pytest.raises(ValueError, match="line break"):
        await client(garbled_port).post(b"x", {"X-Evil": "a\r\nHost: elsewhere"})


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
    with pytest.raises(DeliveryFailed, match="SSL"):
        await client(port, "https").post(b"x", {})  # the system's CAs do not know this certificate
