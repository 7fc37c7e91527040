"""Helpers shared by tests and benchmarks: topics and offsets on the real broker, service processes, raw HTTP,
the CLI in-process. Where the sample data and the demo configuration are: devtools/samples.py."""

from __future__ import annotations

import asyncio
import contextlib
import select
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools.samples import REPO_ROOT
from services.cli import main as cli_main
from services.core.kafka import MAX_RECORD_BYTES, PROTOCOL_OVERHEAD_BYTES


async def create_topic(bootstrap: str, partitions: int = 3, prefix: str = "t") -> str:
    topic = f"test.{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        large = {"max.message.bytes": str(MAX_RECORD_BYTES + PROTOCOL_OVERHEAD_BYTES)}
        await admin.create_topics(
            [NewTopic(topic, num_partitions=partitions, replication_factor=1, topic_configs=large)]
        )
    finally:
        await admin.close()
    return topic


@contextlib.asynccontextmanager
async def topic_from_start(bootstrap: str, topic: str, partitions: int) -> AsyncIterator[AIOKafkaConsumer]:
    """A group-less consumer assigned every partition of ``topic``, positioned at the beginning."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        yield consumer
    finally:
        await consumer.stop()


async def read_topic(bootstrap: str, topic: str, expected: int, partitions: int = 3) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first ``expected`` records of every partition (bounded wait)."""
    found: list[tuple[bytes, bytes]] = []
    async with topic_from_start(bootstrap, topic, partitions) as consumer:
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend((r.key, r.value) for r in records)
            if len(found) >= expected:
                break
    return found


async def read_records(
    bootstrap: str, topic: str, expected: int, partitions: int = 3
) -> list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]:
    """(key, value, headers) of the first ``expected`` records of every partition (bounded wait)."""
    found: list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]] = []
    async with topic_from_start(bootstrap, topic, partitions) as consumer:
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend((r.key, r.value, tuple(r.headers or ())) for r in records)
            if len(found) >= expected:
                break
    return found


async def read_to_end(
    bootstrap: str, topic: str, partitions: int = 3
) -> list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]]:
    """(key, value, headers) of every record up to the log end as it is when called (bounded wait).

    Unlike :func:`read_topic` it does not stop at an expected count, so a record that should not be there is
    read too.
    """
    found: list[tuple[bytes, bytes, tuple[tuple[str, bytes], ...]]] = []
    async with topic_from_start(bootstrap, topic, partitions) as consumer:
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        for _ in range(300):
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                return found
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend((r.key, r.value, tuple(r.headers or ())) for r in records)
    raise AssertionError(f"{topic}: only {len(found)} records read, short of the log end {ends}")


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


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offset per partition (0 where nothing was committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    """The log-end offset per partition (what a caught-up group has committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in range(partitions)])
        return {tp.partition: offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


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
