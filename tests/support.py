"""Helpers shared by tests and benchmarks: where things are, and the demo configuration."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import uvicorn
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from services.core.settings import read_env_file

REPO_ROOT = Path(__file__).resolve().parents[1]
DEMO_ENV_FILE = REPO_ROOT / "deploy" / "local" / "demo.env"


def payloads_dir() -> Path:
    """The shared sample webhooks (../shared/whatsapp/payloads), overridable with WA_PAYLOADS_DIR."""
    override = os.environ.get("WA_PAYLOADS_DIR")
    return Path(override) if override else REPO_ROOT.parent / "shared" / "whatsapp" / "payloads"


def load_demo_env(path: Path = DEMO_ENV_FILE) -> dict[str, str]:
    """The demo configuration (deploy/local/demo.env), parsed the way the services' tools read it."""
    return read_env_file(path)


@contextlib.asynccontextmanager
async def serve_asgi(app: Any, *, lifespan: Literal["auto", "on", "off"] = "on", port: int = 0) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn on 127.0.0.1 (a free port by default) inside the running loop; yields its URL."""
    config = uvicorn.Config(app, host="127.0.0.1", port=port, lifespan=lifespan, access_log=False, log_level="warning")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    for _ in range(400):
        if server.started or task.done():
            break
        await asyncio.sleep(0.01)
    if task.done():
        task.result()
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def create_topic(bootstrap: str, partitions: int = 3, prefix: str = "t") -> str:
    topic = f"test.{prefix}.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        await admin.close()
    return topic


async def read_topic(bootstrap: str, topic: str, expected: int, partitions: int = 3) -> list[tuple[bytes, bytes]]:
    """(key, value) of the first ``expected`` records of every partition (bounded wait)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[bytes, bytes]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                found.extend((r.key, r.value) for r in records)
            if len(found) >= expected:
                break
    finally:
        await consumer.stop()
    return found


async def committed_offsets(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    """The consumer group's committed offset per partition (0 where nothing was committed)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return {p: (await consumer.committed(TopicPartition(topic, p))) or 0 for p in range(partitions)}
    finally:
        await consumer.stop()
