"""The replay tool: sign payload files and POST them to a webhook URL as Meta would.

Used by ``wa-archive replay``, ``make run``, the tests and the benchmarks. Meta signs the raw bytes it sends and
escapes non-ASCII characters as ``\\uXXXX`` and ``/`` as ``\\/``; with ``meta_escaping`` (the default) each file
is re-encoded that way before signing, otherwise its bytes are sent as they are. Like Meta, the tool retries any
non-2xx answer with backoff, a bounded number of times.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from services.core.retry import Attempt, RetryPolicy
from services.ingest.signature import sign


def meta_encode(raw: bytes) -> bytes:
    """Re-encode a JSON document the way Meta's senders do: compact, ASCII only, ``/`` escaped."""
    compact = json.dumps(json.loads(raw), ensure_ascii=True, separators=(",", ":"))
    return compact.replace("/", "\\/").encode("ascii")


def payload_files(paths: Iterable[Path]) -> list[Path]:
    """Every ``*.json`` under the given directories, plus the given files, in a stable order."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(sorted(path.glob("*.json")))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")
    return files


@dataclass
class ReplayReport:
    sent: int = 0
    acknowledged: int = 0
    retries: int = 0
    failed: list[str] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)


class Unacknowledged(Exception):
    """A webhook POST that got no 2xx: ``status`` is the HTTP status, 0 for no answer (connection error)."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status or 'no answer'}")
        self.status = status


# Answers that a retry cannot change (Meta stops too): a body the endpoint refuses, a bad signature, too large.
FINAL_STATUSES = frozenset({400, 401, 413})


async def post_signed(
    client: httpx.AsyncClient,
    url: str,
    body: bytes,
    app_secret: bytes,
    *,
    attempts: int = 5,
    backoff_s: float = 0.2,
    report: ReplayReport | None = None,
) -> int:
    """POST one signed body, retrying non-2xx and connection errors; returns the last HTTP status (0: no answer)."""
    headers = {"content-type": "application/json", "x-hub-signature-256": sign(body, app_secret)}

    async def post() -> int:
        try:
            status = (await client.post(url, content=body, headers=headers)).status_code
        except httpx.HTTPError:
            status = 0
        if report is not None:
            report.statuses[status] += 1
        if 200 <= status < 300 or status in FINAL_STATUSES:
            return status
        raise Unacknowledged(status)

    def count(_attempt: Attempt) -> None:
        if report is not None:
            report.retries += 1

    policy = RetryPolicy(
        initial_s=backoff_s, max_s=max(backoff_s, backoff_s * 2 ** max(attempts - 2, 0)), attempts=attempts
    )
    try:
        return await policy.run(post, retry_on=lambda exc: isinstance(exc, Unacknowledged), on_retry=count)
    except Unacknowledged as exc:
        return exc.status


async def replay(
    bodies: Sequence[tuple[str, bytes]],
    *,
    url: str,
    app_secret: bytes,
    concurrency: int = 8,
    attempts: int = 5,
    timeout_s: float = 30.0,
) -> ReplayReport:
    """Send (name, body) pairs concurrently; a body counts as acknowledged on a 2xx."""
    report = ReplayReport()
    limiter = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(timeout=timeout_s) as client:

        async def one(name: str, body: bytes) -> None:
            async with limiter:
                status = await post_signed(client, url, body, app_secret, attempts=attempts, report=report)
            report.sent += 1
            if 200 <= status < 300:
                report.acknowledged += 1
            else:
                report.failed.append(f"{name}: HTTP {status or 'no answer'}")

        await asyncio.gather(*(one(name, body) for name, body in bodies))
    return report


def load_bodies(
    paths: Iterable[Path], *, meta_escaping: bool = True, transform: Callable[[bytes], bytes] | None = None
) -> list[tuple[str, bytes]]:
    """(file name, body) of every payload file; ``transform`` rewrites each body first (the demo's media hashes)."""
    bodies = []
    for path in payload_files(paths):
        raw = path.read_bytes()
        if transform is not None:
            raw = transform(raw)
        bodies.append((path.name, meta_encode(raw) if meta_escaping else raw))
    return bodies
