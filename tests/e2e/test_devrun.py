"""``make run``'s driver (devtools/devrun.py) as a process: a held message goes round the whole loop (gateway,
archiver, four eyes, gateway, relay, inbox), and, stopped with SIGTERM, it stops what it started.

A supervisor, ``kill`` or a CI job stops the driver with SIGTERM, not Ctrl-C: only a terminal sends SIGINT to the
whole process group, so the driver must stop its children itself — the four services and the Graph API stand-in —
or they outlive it, holding the ports of the next ``make run``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from devtools.devrun import relay_commands, service_commands
from devtools.samples import REPO_ROOT
from tests.e2e.processes import PORTS

pytestmark = pytest.mark.e2e

RUNNING = "wa-archive is running"


def children_of(pid: int) -> dict[int, str]:
    """The live child processes of ``pid`` (from /proc), with their command lines."""
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid …: comm may hold spaces, so split after its closing parenthesis.
            state, ppid = stat.rpartition(")")[2].split()[:2]
            if int(ppid) == pid and state != "Z":
                found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


def metrics() -> str:
    return httpx.get("http://127.0.0.1:8086/metrics", timeout=5).text


def delivered_to_inbox() -> int:
    found = re.search(r'wa_relay_deliveries_total\{destination="inbox",outcome="delivered"\} ([0-9.e+]+)', metrics())
    return int(float(found.group(1))) if found else 0


def until(check: Callable[[], Any], what: str, timeout_s: float = 60) -> Any:
    """``check()``'s first truthy value, polled until ``timeout_s``; fails naming ``what``."""
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"no {what} within {timeout_s} s"
        time.sleep(0.5)
    return found


def held_message_is_approved_sent_and_reported() -> None:
    """The whole loop of a sensitive message in `make run`: the demo policy holds a refund; the archiver opens its
    four-eyes request; its author may not approve it, a DPO does (admin API); the gateway sends it once, with the
    number's token, and the relay reports its `sent` status to the inbox, which verifies the app's signature."""
    before = delivered_to_inbox()
    held = httpx.post(
        "http://127.0.0.1:8084/v21.0/106540352242922/messages",
        json={
            "messaging_product": "whatsapp",
            "to": "33612345678",
            "type": "text",
            "text": {"body": "Votre remboursement de 49,90 € est validé."},
        },
        headers={"Authorization": "Bearer the-company-token", "X-WA-Archive-Author": "demo-dpo-2"},
        timeout=30,
    )
    assert held.status_code == 200, held.text
    (answer,) = held.json()["messages"]
    assert answer["message_status"] == "held_for_quality_assessment"
    api = "http://127.0.0.1:8082/v1/approvals"
    dpo, author = ({"Authorization": f"Bearer demo-{who}-token-local-only"} for who in ("dpo", "dpo-2"))

    def request() -> dict[str, Any] | None:
        listed = httpx.get(api, headers=dpo, timeout=10).json()
        return next((r for r in listed if r["kind"] == "send" and r["target"]["message_id"] == answer["id"]), None)

    found = until(request, "four-eyes request for the held message")
    assert found["requested_by"] == "demo-dpo-2"
    refused = httpx.post(f"{api}/{found['request_id']}/approve", json={"reason": "mine"}, headers=author, timeout=30)
    assert refused.status_code == 403, refused.text
    approved = httpx.post(
        f"{api}/{found['request_id']}/approve", json={"reason": "amount checked"}, headers=dpo, timeout=30
    )
    assert approved.status_code == 200, approved.text

    def gateway_metrics() -> str:
        return httpx.get("http://127.0.0.1:9086/metrics", timeout=5).text

    until(lambda: 'wa_gateway_decisions_total{result="approved_sent"} 1.0' in gateway_metrics(), "approved send")
    until(lambda: delivered_to_inbox() > before, "status delivered to the inbox")


def test_sigterm_stops_the_services_and_the_graph_api_stand_in(tmp_path: Path) -> None:
    for name, port in {**PORTS, "graph-api": 8099, "relay": 8086, "inbox": 8087}.items():
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
            pytest.fail(f"port {port} ({name}) is busy: stop `make run` before the e2e tests", pytrace=False)
    output = tmp_path / "devrun.out"
    with output.open("wb") as out:
        driver = subprocess.Popen(
            [sys.executable, "-m", "devtools.devrun"],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    started: dict[int, str] = {}
    try:
        deadline = time.monotonic() + 240
        while RUNNING not in output.read_text(errors="replace"):
            assert driver.poll() is None, output.read_text(errors="replace")[-3000:]
            assert time.monotonic() < deadline, output.read_text(errors="replace")[-3000:]
            time.sleep(0.5)
        started = children_of(driver.pid)
        expected = {**service_commands("token"), **relay_commands("secret")}
        for name, command in expected.items():
            module = command[command.index("-m") + 1]
            assert any(f"-m {module}" in line for line in started.values()), f"{name} not running: {started}"
        assert len(started) == len(expected), started
        # The relay feeds the "existing inbox", which accepts Meta's signature over the bytes it gets.
        deadline = time.monotonic() + 60
        while not re.search(r'wa_relay_deliveries_total\{destination="inbox",outcome="delivered"\} [1-9]', metrics()):
            assert time.monotonic() < deadline, metrics()[-3000:]
            time.sleep(0.5)

        held_message_is_approved_sent_and_reported()

        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 0, output.read_text(errors="replace")[-3000:]
        deadline = time.monotonic() + 10
        while any(alive(pid) for pid in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert [started[pid] for pid in started if alive(pid)] == []
        assert "stopping" in output.read_text(errors="replace")
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(timeout=10)
        for pid in started:  # what the driver failed to stop must not outlive the test
            if alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
