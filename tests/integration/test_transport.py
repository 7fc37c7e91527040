"""A service outside a local demo says in its log which of its links are in clear (services/core/transport.py)."""

from __future__ import annotations

import secrets
import subprocess
import sys
import time
from pathlib import Path

import pytest

from devtools.samples import REPO_ROOT
from devtools.serving import free_port

pytestmark = pytest.mark.integration


def test_ingest_started_outside_a_local_demo_warns_in_its_log(tmp_path: Path) -> None:
    """A real process: ingest with secrets of its own and Kafka in clear starts, and says so in its log."""
    token = secrets.token_urlsafe(32)
    env = {
        "PATH": "/usr/bin:/bin",
        "WA_INGEST_APP_SECRETS": f'["{token}"]',
        "WA_INGEST_VERIFY_TOKEN": token,
        "WA_INGEST_PORT": str(free_port()),
        "WA_INGEST_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",  # nobody: it keeps trying, and keeps running
    }
    log = tmp_path / "ingest.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "services.ingest"], cwd=REPO_ROOT, env=env, stderr=out)
    try:
        for _ in range(300):  # bounded: 30 s
            if "INSECURE TRANSPORT" in log.read_text(errors="replace") or process.poll() is not None:
                break
            time.sleep(0.1)
    finally:
        process.terminate()
        process.wait(timeout=30)
    text = log.read_text(errors="replace")
    assert "INSECURE TRANSPORT WA_INGEST_KAFKA: Kafka security_protocol PLAINTEXT (use SASL_SSL)" in text
    assert token not in text
