"""A burst of large documents in one webhook POST, archived by an archiver process with its memory measured: the
test and the benchmark of issue #22 (tests/integration/test_media_burst.py, bench/media.py).

The Graph API stand-in serves the documents as streams it generates (it holds none of them); the POST is signed as
Meta signs it and sent to an ingest process, which journals it; the archiver runs as a process of its own with the
demo configuration, so its peak RSS (VmHWM) is its own; every document is then read back from the archive as a
stream and compared by sha256 with what the stand-in served.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import orjson

from devtools import pipeline
from devtools.broker import create_topic
from devtools.graph_api import FakeGraphApi
from devtools.samples import REPO_ROOT
from devtools.serving import free_port
from services.actions.access import open_access
from services.core.container import media_record_id
from services.core.index import binary_keys
from services.ingest.signature import sign


@dataclass(frozen=True, slots=True, kw_only=True)
class BurstOutcome:
    documents: int
    document_bytes: int
    archived: int  # media rows 'archived'
    byte_exact: int  # read back with the sha256 the stand-in served
    failures: dict[str, int]  # missing media by reason
    archiver_alive: bool
    archiver_peak_rss_mb: float
    seconds_to_archive: float
    seconds_to_read_back: float


def documents_post(person: pipeline.Person, media: dict[str, str], mime_type: str = "application/pdf") -> bytes:
    """One webhook POST carrying one document message per ``media`` entry (media id -> base64 sha256)."""
    messages = [
        {
            "from": person.wa_id,
            "id": f"wamid.BURST{uuid.uuid4().hex}",
            "timestamp": str(1_760_000_000 + i),
            "type": "document",
            "document": {"mime_type": mime_type, "sha256": digest, "id": media_id, "filename": f"contract-{i}.pdf"},
        }
        for i, (media_id, digest) in enumerate(media.items())
    ]
    return pipeline.envelope(person, "messages", {"messages": messages})


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of ``pid``, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


async def _service(module: str, env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    """``python -m module`` from the repository, its output to ``log``."""
    with log.open("wb") as output:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", module, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
        )


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.terminate()
    try:
        await asyncio.wait_for(process.wait(), 60)
    except TimeoutError:
        process.kill()
        await process.wait()


async def post_through_ingest(demo_env: dict[str, str], topic: str, body: bytes, log: Path) -> None:
    """Send ``body`` to an ingest process as Meta would (signed with the demo app secret); it must answer 200,
    that is, have journaled it to ``topic``."""
    port = free_port()
    env = {
        **os.environ,
        **demo_env,
        "WA_INGEST_KAFKA__EVENTS_TOPIC": topic,
        "WA_INGEST_PORT": str(port),
        "WA_INGEST_LOG_LEVEL": "WARNING",
    }
    ingest = await _service("services.ingest", env, log)
    try:
        await _wait_healthy(f"http://127.0.0.1:{port}/readyz", ingest)
        secret = orjson.loads(demo_env["WA_INGEST_APP_SECRETS"])[0].encode()
        headers = {"content-type": "application/json", "x-hub-signature-256": sign(body, secret)}
        async with httpx.AsyncClient() as client:
            answer = await client.post(f"http://127.0.0.1:{port}/webhooks/whatsapp", content=body, headers=headers)
        if answer.status_code != 200:
            raise AssertionError(f"ingest answered {answer.status_code}: {log.read_text()[-2000:]}")
    finally:
        await _stop(ingest)


async def _wait_healthy(url: str, process: asyncio.subprocess.Process, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as client:
        while time.monotonic() < deadline:
            if process.returncode is not None:
                raise AssertionError(f"the archiver exited with {process.returncode} while starting")
            try:
                if (await client.get(url, timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{url} did not answer 200 within {timeout_s}s")


async def _media_rows(pool: asyncpg.Connection, event_ids: list[str]) -> list[Any]:
    return list(
        await pool.fetch(
            "SELECT encode(event_id, 'hex') AS event_id, status, object_key, size_bytes, failure FROM archived_media"
            " WHERE event_id = ANY($1::bytea[])",
            binary_keys(event_ids),
        )
    )


async def run_burst(
    demo_env: dict[str, str],
    *,
    documents: int = 8,
    document_bytes: int = 100_000_000,
    log: Path,
    timeout_s: float = 900,
) -> BurstOutcome:
    """Archive ``documents`` generated documents of ``document_bytes`` each, sent in one POST, with an archiver
    process; then read each back. Raises AssertionError when the archiver does not start."""
    bootstrap = f"127.0.0.1:{demo_env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=1, prefix="media-burst")
    dlq = await create_topic(bootstrap, partitions=1, prefix="dlq")
    prefix, group, port = f"burst/{uuid.uuid4().hex[:8]}", f"burst-{uuid.uuid4().hex[:8]}", free_port()
    person = pipeline.Person.fresh()
    pool = await asyncpg.connect(demo_env["WA_ARCHIVER_PG__DSN"])
    try:
        async with FakeGraphApi(token=demo_env["WA_ARCHIVER_GRAPH__TOKEN"]) as api:
            run_id = uuid.uuid4().hex[:12]
            media = {
                f"{run_id}{i:03d}": api.add_generated_media(f"{run_id}{i:03d}", document_bytes)
                for i in range(documents)
            }
            body = documents_post(person, media)
            events = pipeline.events_of([body])
            event_ids = [e.event_id for e in events]
            await post_through_ingest(demo_env, topic, body, log.with_name(f"{log.stem}-ingest.log"))
            env = {
                **os.environ,
                **demo_env,
                "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
                "WA_ARCHIVER_KAFKA__DLQ_TOPIC": dlq,
                "WA_ARCHIVER_GROUP_ID": group,
                "WA_ARCHIVER_S3__PREFIX": prefix,
                "WA_ARCHIVER_PORT": str(port),
                "WA_ARCHIVER_LOG_LEVEL": "WARNING",
                "WA_ARCHIVER_GRAPH__BASE_URL": api.base_url,
            }
            process = await _service("services.archiver", env, log)
            try:
                await _wait_healthy(f"http://127.0.0.1:{port}/healthz", process)
                started = time.monotonic()
                rows: list[Any] = []
                while time.monotonic() - started < timeout_s and process.returncode is None:
                    rows = await _media_rows(pool, event_ids)
                    if len(rows) == documents:
                        break
                    await asyncio.sleep(0.5)
                archived_s = time.monotonic() - started
                alive = process.returncode is None
                peak = peak_rss_mb(process.pid) if alive else 0.0
            finally:
                await _stop(process)
            served = {media_id: api.generated[media_id][2] for media_id in media}
    finally:
        await pool.close()
    by_event = {row["event_id"]: row for row in rows}
    failures: dict[str, int] = {}
    for row in rows:
        if row["status"] != "archived":
            failures[row["failure"]] = failures.get(row["failure"], 0) + 1
    started = time.monotonic()
    exact = 0
    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        for event, media_id in zip(events, media, strict=True):
            row = by_event.get(event.event_id)
            if row is None or row["status"] != "archived":
                continue
            opened = await access.reader.open_media(media_record_id(event.event_id), row["object_key"])
            if opened is None:
                continue
            digest = hashlib.sha256()
            async for chunk in opened.chunks:
                digest.update(chunk)
            exact += digest.hexdigest() == served[media_id] and opened.size == document_bytes
        # The burst's objects are gigabytes of the shared local store: removed once checked (their index rows stay,
        # like those of any test; a later read of them finds no object).
        keys = [stored.key async for stored in access.bucket.list_objects(prefix + "/")]
        await access.bucket.delete_permanently(keys)
    finally:
        await access.close()
    return BurstOutcome(
        documents=documents,
        document_bytes=document_bytes,
        archived=sum(row["status"] == "archived" for row in rows),
        byte_exact=exact,
        failures=failures,
        archiver_alive=alive,
        archiver_peak_rss_mb=round(peak, 1),
        seconds_to_archive=round(archived_s, 1),
        seconds_to_read_back=round(time.monotonic() - started, 1),
    )
