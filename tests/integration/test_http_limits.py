"""The HTTP surfaces as the services really run them (``python -m services.X``, on free ports, against the stack):
published secrets refused at start-up, refusals decided before the body is read, bodies, forms and request heads
capped, no ``Server`` header, the admin API's metrics and documentation on its ops port only."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from devtools.samples import REPO_ROOT
from devtools.serving import free_port
from services.core.published import LOCAL_DEMO_FLAG
from tests.helpers.support import ServiceProcess, answer_before_body, stream_until_answered

pytestmark = pytest.mark.integration

HUGE = 200 * 1024 * 1024  # the body a refused client announces: 200 MiB, never sent


def demo_tokens(env: dict[str, str]) -> dict[str, str]:
    return {name: entry["token"] for name, entry in json.loads(env["WA_RETENTION_ADMIN_TOKENS"]).items()}


def service_env(demo_env: dict[str, str], **overrides: str) -> dict[str, str]:
    return {**os.environ, **demo_env, LOCAL_DEMO_FLAG: "1", "WA_LOG_FORMAT": "text", **overrides}


@pytest.fixture(scope="module")
def logs_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("http-limits")


@pytest.fixture(scope="module")
async def retention(demo_env: dict[str, str], logs_dir: Path) -> AsyncIterator[tuple[int, int]]:
    """The retention service (admin API, ops port) on free ports; no scheduled run, a prefix of its own."""
    port, ops_port = free_port(), free_port()
    env = service_env(
        demo_env,
        WA_RETENTION_PORT=str(port),
        WA_RETENTION_OPS_PORT=str(ops_port),
        WA_RETENTION_RUN_INTERVAL_S="0",
        WA_RETENTION_S3__PREFIX=f"test/{uuid.uuid4().hex[:8]}",
    )
    process = ServiceProcess("services.retention", port, env, logs_dir / "retention.log")
    process.start()
    try:
        await process.wait_ready()
        yield port, ops_port
    finally:
        process.stop()


@pytest.fixture(scope="module")
async def ingest(demo_env: dict[str, str], logs_dir: Path) -> AsyncIterator[int]:
    port = free_port()
    process = ServiceProcess("services.ingest", port, service_env(demo_env, WA_INGEST_PORT=str(port)), logs_dir / "i")
    process.start()
    try:
        await process.wait_ready()
        yield port
    finally:
        process.stop()


@pytest.fixture(scope="module")
async def console(demo_env: dict[str, str], logs_dir: Path) -> AsyncIterator[int]:
    port, ops_port = free_port(), free_port()
    env = service_env(demo_env, WA_CONSOLE_PORT=str(port), WA_CONSOLE_OPS_PORT=str(ops_port))
    process = ServiceProcess("services.console", ops_port, env, logs_dir / "console.log")
    process.start()
    try:
        await process.wait_ready()
        yield port
    finally:
        process.stop()


# ------------------------------------------------------------------------------------------ published secrets


@pytest.mark.parametrize(
    ("module", "variable"),
    [
        pytest.param(["services.ingest"], "WA_INGEST_APP_SECRETS", id="ingest"),
        pytest.param(["services.archiver"], "WA_ARCHIVER_KEYS__KEKS", id="archiver"),
        pytest.param(["services.retention"], "WA_RETENTION_ADMIN_TOKENS__TOKEN", id="retention"),
        pytest.param(["services.console"], "WA_CONSOLE_PG__DSN", id="console"),
        pytest.param(["services.cli", "erasures"], "WA_RETENTION_PG__DSN", id="the wa-archive CLI"),
    ],
)
def test_a_service_with_a_demo_secret_and_no_local_flag_exits_with_the_message(
    module: list[str], variable: str, demo_env: dict[str, str]
) -> None:
    """demo.env as a Secret would give it: every service (and the CLI) refuses to start, naming the variables."""
    env = {k: v for k, v in os.environ.items() if k != LOCAL_DEMO_FLAG} | demo_env
    done = subprocess.run(
        [sys.executable, "-m", *module], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2, done.stderr
    assert "published in the repository" in done.stderr
    assert variable in done.stderr
    assert f"{LOCAL_DEMO_FLAG}=1" in done.stderr
    assert demo_env["WA_RETENTION_KEYS__PEPPER"] not in done.stderr


async def test_with_the_local_flag_the_services_run(retention: tuple[int, int], ingest: int, console: int) -> None:
    """The fixtures started them with the demo secrets and WA_LOCAL_DEMO=1: each answers."""
    async with httpx.AsyncClient(timeout=10) as client:
        for port in (retention[0], ingest):
            assert (await client.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200
        assert (await client.get(f"http://127.0.0.1:{console}/signin")).status_code == 200


# ------------------------------------------------------------------------------------------ the admin API


async def test_admin_api_refuses_before_the_body_is_read(retention: tuple[int, int], demo_env: dict[str, str]) -> None:
    port, _ = retention
    tokens = demo_tokens(demo_env)

    def post(length: int, token: str | None = None) -> str:
        auth = f"Authorization: Bearer {token}\n" if token else ""
        return f"POST /v1/erasures HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {length}\n{auth}"

    # 200 MiB announced: 413 at once, before the token is even looked at.
    for token in (None, tokens["demo-dpo"]):
        answer = answer_before_body(port, post(HUGE, token))
        assert (answer.status, answer.headers.get("connection")) == (413, "close")
        assert json.loads(answer.body)["detail"] == "the request body exceeds 65536 bytes"
    # 60,000 bytes announced (under the cap) and never sent: no token or a wrong one is 401, a reader erasing is
    # 403, all answered while the body is still unsent (a server that read it first would still be waiting).
    for token in (None, "not-a-known-token"):
        answer = answer_before_body(port, post(60_000, token), timeout_s=5)
        assert (answer.status, answer.headers.get("connection")) == (401, "close")
        assert answer.headers["www-authenticate"] == "Bearer"
    answer = answer_before_body(port, post(60_000, tokens["demo-reader"]), timeout_s=5)
    assert answer.status == 403
    assert "dpo" in json.loads(answer.body)["detail"]


async def test_admin_api_stops_a_chunked_body_past_the_limit(
    retention: tuple[int, int], demo_env: dict[str, str]
) -> None:
    port, _ = retention
    head = (
        "POST /v1/erasures HTTP/1.1\nHost: x\nContent-Type: application/json\nTransfer-Encoding: chunked\n"
        f"Authorization: Bearer {demo_tokens(demo_env)['demo-dpo']}\n"
    )
    answer = stream_until_answered(port, head, give_up_bytes=HUGE)
    assert answer.status == 413
    # Answered after the limit, not after the body: the client had sent a few MiB at most (socket buffers).
    assert answer.body_bytes_sent < 16 * 1024 * 1024


async def test_admin_api_metrics_and_docs_on_the_ops_port_only(retention: tuple[int, int]) -> None:
    port, ops_port = retention
    async with httpx.AsyncClient(timeout=10) as client:
        for path in ("/metrics", "/docs", "/openapi.json"):
            assert (await client.get(f"http://127.0.0.1:{port}{path}")).status_code == 401, path
            assert (await client.get(f"http://127.0.0.1:{ops_port}{path}")).status_code == 200, path
        metrics = (await client.get(f"http://127.0.0.1:{ops_port}/metrics")).text
        assert 'wa_retention_api_refusals_total{reason="token",status="401"}' in metrics


# ------------------------------------------------------------------------------------------ every surface


def surfaces(retention: tuple[int, int], ingest: int, console: int) -> dict[str, int]:
    return {
        "admin API": retention[0],
        "admin ops": retention[1],
        "ingest": ingest,
        "console": console,
    }


async def test_no_server_header_and_a_bounded_request_head(
    retention: tuple[int, int], ingest: int, console: int
) -> None:
    for name, port in surfaces(retention, ingest, console).items():
        answer = answer_before_body(port, "GET /healthz HTTP/1.1\nHost: x\n")
        assert "server" not in answer.headers, name
        # 64 KiB of one header (httptools would keep growing it): 431, and the connection is closed.
        answer = answer_before_body(port, f"GET /healthz HTTP/1.1\nHost: x\nX-Padding: {'a' * 64 * 1024}\n")
        assert answer.status == 431, name


async def test_ingest_refuses_before_the_body(ingest: int) -> None:
    outbound = "POST /v1/outbound HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {}\n"
    answer = answer_before_body(ingest, outbound.format(HUGE))
    assert (answer.status, answer.headers.get("connection")) == (413, "close")
    answer = answer_before_body(ingest, outbound.format(1024 * 1024), timeout_s=5)  # under the cap, never sent
    assert (answer.status, answer.headers.get("connection")) == (401, "close")
    webhook = f"POST /webhooks/whatsapp HTTP/1.1\nHost: x\nContent-Type: application/json\nContent-Length: {HUGE}\n"
    answer = answer_before_body(ingest, webhook)
    assert answer.status == 413
    assert "exceeds 4194304 bytes" in answer.body.decode()


async def test_console_caps_bodies_and_forms_before_sign_in(console: int) -> None:
    url = f"http://127.0.0.1:{console}"
    form = "application/x-www-form-urlencoded"
    # Announced over the cap: 413 before a byte of it is read, and before any session or sign-in check.
    answer = answer_before_body(
        console, f"POST /signin HTTP/1.1\nHost: x\nContent-Type: {form}\nContent-Length: {HUGE}\n"
    )
    assert answer.status == 413
    # Under the byte cap but past the form limits: too many fields, a field too long.
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        many = await client.post("/language", data={f"f{i}": "x" for i in range(200)})
        assert many.status_code == 413
        assert "fields" in many.text
        long = await client.post("/signin", data={"name": "x" * 20_000})
        assert long.status_code == 413
        assert (await client.post("/language", data={"locale": "fr"})).status_code == 303
    # Signed out: a POST of a page is sent to the sign-in page without its body being read (the 60,000 bytes
    # announced, under the cap, are never sent: a server that read them would still be waiting).
    answer = answer_before_body(
        console, f"POST /search HTTP/1.1\nHost: x\nContent-Type: {form}\nContent-Length: 60000\n", timeout_s=5
    )
    assert (answer.status, answer.headers["location"]) == (303, "/signin?ended=1")


async def test_connections_beyond_the_concurrency_limit_get_503(demo_env: dict[str, str], logs_dir: Path) -> None:
    """WA_INGEST_MAX_CONCURRENCY=3: with three connections held open, a fourth request is answered 503 at once
    (Meta retries), and served again once they close."""
    port = free_port()
    env = service_env(demo_env, WA_INGEST_PORT=str(port), WA_INGEST_MAX_CONCURRENCY="3")
    process = ServiceProcess("services.ingest", port, env, logs_dir / "ingest-limited.log")
    process.start()
    try:
        await process.wait_ready()
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(3)]
        try:
            await asyncio.sleep(0.2)  # the server has accepted them
            answer = await asyncio.to_thread(answer_before_body, port, "GET /healthz HTTP/1.1\nHost: x\n")
            assert answer.status == 503
        finally:
            for conn in held:
                conn.close()
        await asyncio.sleep(0.2)
        answer = await asyncio.to_thread(answer_before_body, port, "GET /healthz HTTP/1.1\nHost: x\n")
        assert answer.status == 200
    finally:
        process.stop()
