"""The services as real processes on their local ports (as `make run` starts them), for the e2e tests."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Final

import httpx
import pytest

from devtools.devrun import apply_migrations, service_commands, stop_processes
from devtools.samples import REPO_ROOT

# The port of each service's /healthz, /readyz and /metrics (the console's ops port; the Graph API stand-in has none).
PORTS: Final = {"ingest": 8080, "archiver": 8081, "retention": 8082, "console": 9083}


@contextlib.contextmanager
def running_services(env: Mapping[str, str], names: Sequence[str], logs_dir: Path) -> Iterator[dict[str, Path]]:
    """Start the named processes of :func:`service_commands` with ``env``, wait until each is ready (60 s at
    most), yield their log files, and stop them (SIGTERM, then the services drain)."""
    for name in names:
        port = PORTS.get(name)
        if port is None:
            continue
        try:
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=0.5)
        except httpx.HTTPError:
            continue
        pytest.fail(f"port {port} ({name}) is busy: stop `make run` before the e2e tests", pytrace=False)
    commands = service_commands(env["WA_ARCHIVER_GRAPH__TOKEN"])
    apply_migrations(env)
    processes: dict[str, subprocess.Popen[bytes]] = {}
    logs: dict[str, Path] = {}
    try:
        for name in names:
            logs[name] = logs_dir / f"{name}.log"
            processes[name] = subprocess.Popen(
                commands[name], cwd=REPO_ROOT, env=dict(env), stdout=logs[name].open("wb"), stderr=subprocess.STDOUT
            )
        for name in names:
            port = PORTS.get(name)
            if port is None:
                continue
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert processes[name].poll() is None, logs[name].read_text()
                time.sleep(0.2)
            else:
                pytest.fail(f"{name} not ready: {logs[name].read_text()[-2000:]}")
        yield logs
    finally:
        stop_processes(processes.values())
