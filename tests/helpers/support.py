"""What the tests share: services as processes, raw HTTP, the CLI in-process, the slots of a JSON value. The
broker, the sample data and the in-process server (which the benchmarks use too) are in devtools/."""

from __future__ import annotations

import asyncio
import contextlib
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.samples import REPO_ROOT
from services.cli import main as cli_main


def json_slots(node: Any) -> Iterator[tuple[Any, Any]]:
    """Every (container, key or index) of a decoded JSON value, depth first."""
    if isinstance(node, dict):
        for key, child in node.items():
            yield node, key
            yield from json_slots(child)
    elif isinstance(node, list):
        for index, child in enumerate(node):
            yield node, index
            yield from json_slots(child)


class ServiceProcess:
    """One service as a real process (``python -m MODULE``), its output in a log file; killable and restartable."""

    def __init__(self, module: str, port: int, env: dict[str, str], log: Path) -> None:
        self.module, self.port, self.env, self.log = module, port, env, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.module], cwd=REPO_ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )

    def kill(self) -> None:
        """SIGKILL: no drain, no goodbye."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self, timeout_s: float = 90) -> int:
        """SIGTERM and wait; returns the exit code (the services drain and exit 0)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            raise

    async def wait_ready(self, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(timeout=2) as client:
            while time.monotonic() < deadline:
                assert self.process is not None
                assert self.process.poll() is None, self.log_tail()
                with contextlib.suppress(httpx.HTTPError):
                    if (await client.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200:
                        return
                await asyncio.sleep(0.1)
        raise AssertionError(f"{self.module} not ready within {timeout_s}s: {self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


@dataclass(frozen=True, slots=True)
class RawAnswer:
    """What a server answered on a raw connection, and how many body bytes the client had sent by then."""

    status: int
    headers: dict[str, str]
    body: bytes
    body_bytes_sent: int


def _read_answer(conn: socket.socket, sent: int) -> RawAnswer:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            raise AssertionError(f"connection closed before an answer: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip() for name, _, value in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        rest += chunk
    return RawAnswer(int(lines[0].split()[1]), headers, rest[:length], sent)


def answer_before_body(port: int, head: str, timeout_s: float = 10) -> RawAnswer:
    """Send only a request's line and headers (``head``, whose Content-Length announces a body that is never sent)
    and read the answer: a server that answers has decided without the body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as conn:
        conn.sendall(head.replace("\n", "\r\n").rstrip("\r\n").encode("latin-1") + b"\r\n\r\n")
        return _read_answer(conn, 0)


def stream_until_answered(port: int, head: str, *, chunk_bytes: int = 64 * 1024, give_up_bytes: int) -> RawAnswer:
    """Send ``head`` (chunked transfer) and then chunks of a body until the server answers or ``give_up_bytes`` were
    sent; the answer records how much of the body the client had sent by then."""
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.replace("\n", "\r\n").rstrip("\r\n").encode("latin-1") + b"\r\n\r\n")
        chunk = f"{chunk_bytes:x}\r\n".encode() + b"x" * chunk_bytes + b"\r\n"
        while sent < give_up_bytes:
            readable, _, _ = select.select([conn], [], [], 0)
            if readable:
                break
            try:
                conn.sendall(chunk)
            except OSError:
                break  # closed by the server: its answer is waiting
            sent += chunk_bytes
        return _read_answer(conn, sent)


async def run_cli(argv: Sequence[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``wa-archive ARGV`` in-process (in a thread: the command runs its own event loop); (exit code, out, err)."""

    def run() -> int:
        try:
            cli_main(argv)
        except SystemExit as exit_:
            return int(exit_.code or 0)
        return 0

    capsys.readouterr()
    code = await asyncio.to_thread(run)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
