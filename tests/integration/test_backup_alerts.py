"""The backup freshness alerts in a real Prometheus: they fire when WAL archiving stops, and clear when it resumes.

A PostgreSQL server of the test's own archives its WAL to the local S3 with barman-cloud (tests/pg_drill.py); the
backup exporter (services/backups) probes it every second; a Prometheus of the test's own (the Debian binary the
stack runs, on a free port, so the stack's Prometheus keeps its configuration) scrapes the exporter every second
and evaluates the group ``wa-archive-pg-backups`` of deploy/prometheus/rules.yml as it is, with its two durations
scaled to the test: 15 minutes without an archived segment become ``STALE_AFTER_S``, every ``for:`` becomes 2 s.

Archiving is stopped the way it fails in production: ``archive_command`` fails (the store refuses it). Both
WaPgWalArchivingStalled and WaPgWalArchiveFailing fire; the command is restored, PostgreSQL archives the waiting
segments, WaPgWalArchivingStalled clears.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from prometheus_client import CollectorRegistry

from devtools.samples import REPO_ROOT
from devtools.serving import free_port
from services.backups.exporter import BackupProbe
from services.backups.metrics import BackupMetrics
from services.core.ops_http import OpsServer, ops_app
from tests.pg_drill import DrillServer, drill_server

pytestmark = pytest.mark.integration

RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"
GROUP = "wa-archive-pg-backups"
STALE_AFTER_S = 6  # WaPgWalArchivingStalled's 15 minutes, scaled to a test


def scaled_rules() -> dict[str, Any]:
    """The backup group of rules.yml, its thresholds scaled; everything else as committed."""
    group = next(g for g in yaml.safe_load(RULES.read_text())["groups"] if g["name"] == GROUP)
    for rule in group["rules"]:
        if rule["alert"] == "WaPgWalArchivingStalled":
            assert "> 15 * 60" in rule["expr"], rule["expr"]
            rule["expr"] = rule["expr"].replace("> 15 * 60", f"> {STALE_AFTER_S}")
        rule["for"] = "2s"
    return {"groups": [group]}


@pytest.fixture
async def server(demo_env: dict[str, str]) -> AsyncIterator[DrillServer]:
    async with drill_server(demo_env) as started:
        yield started


@pytest.fixture
async def exporter(server: DrillServer) -> AsyncIterator[int]:
    """The exporter on a free port, probing the archiver every second (the store every minute)."""
    registry = CollectorRegistry()
    probe = BackupProbe(server.settings.store(), server.dsn(), BackupMetrics(registry))
    ops = OpsServer(ops_app(registry, lambda: True), "127.0.0.1", 0)
    await ops.start()
    stop = asyncio.Event()
    task = asyncio.create_task(probe.run(1.0, 60.0, stop))
    try:
        yield ops.port
    finally:
        stop.set()
        await task
        await ops.stop()


@pytest.fixture
def prometheus(exporter: int, tmp_path: Path) -> Iterator[str]:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not on PATH: run make stack-up (installs it)", pytrace=False)
    rules = tmp_path / "rules.yml"
    rules.write_text(yaml.safe_dump(scaled_rules()))
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                "rule_files": [str(rules)],
                "scrape_configs": [
                    {"job_name": "wa-pg-backup", "static_configs": [{"targets": [f"127.0.0.1:{exporter}"]}]}
                ],
            }
        )
    )
    port = free_port()
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [
            binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}", "--rules.alert.resend-delay=1s",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/-/ready", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, "Prometheus not ready within 60 s"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


async def firing(prometheus: str) -> set[str]:
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as client:
        body = (await client.get("/api/v1/alerts")).json()
    assert body["status"] == "success", body
    return {alert["labels"]["alertname"] for alert in body["data"]["alerts"] if alert["state"] == "firing"}


async def wait_until(check: Callable[[], Awaitable[bool]], what: str, timeout_s: float) -> float:
    started = time.monotonic()
    while not await check():
        assert time.monotonic() - started < timeout_s, f"{what}: not within {timeout_s}s"
        await asyncio.sleep(0.5)
    return time.monotonic() - started


async def scraped_archive_time(prometheus: str) -> float:
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as client:
        body = await client.get("/api/v1/query", params={"query": "wa_pg_backup_last_wal_archived_timestamp_seconds"})
    result = body.json()["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


async def write_and_switch(server: DrillServer) -> None:
    """Some WAL, then a segment switch: one segment complete, to be archived."""
    conn = await asyncpg.connect(server.dsn())
    try:
        await conn.execute("CREATE TABLE IF NOT EXISTS churn (n int); INSERT INTO churn SELECT generate_series(1, 100)")
        await conn.execute("SELECT pg_switch_wal()")
    finally:
        await conn.close()


async def set_archive_command(server: DrillServer, command: str | None) -> None:
    """``None``: back to the configured command (wa-backup.conf)."""
    conn = await asyncpg.connect(server.dsn())
    try:
        if command is None:
            await conn.execute("ALTER SYSTEM RESET archive_command")
        else:
            await conn.execute(f"ALTER SYSTEM SET archive_command = '{command}'")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()


async def test_the_wal_freshness_alert_fires_when_archiving_stops_and_clears_when_it_resumes(
    server: DrillServer, prometheus: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await server.archive_current_wal()
    await wait_until(lambda: _positive(scraped_archive_time(prometheus)), "an archived segment scraped", 60)
    # Before the first scrapes WaPgBackupProbeFailing{probe="exporter"} may fire (no exporter reported yet): it clears.
    await wait_until(lambda: _lacks_all(firing(prometheus)), "no backup alert while archiving works", 30)

    # The store refuses: archive_command fails, segments pile up.
    await set_archive_command(server, "exit 1")
    await write_and_switch(server)
    fired_s = await wait_until(
        lambda: _contains(firing(prometheus), {"WaPgWalArchivingStalled", "WaPgWalArchiveFailing"}),
        "the WAL archiving alerts firing",
        STALE_AFTER_S + 60,
    )

    # Archiving works again: PostgreSQL archives what waited, the alert clears.
    await set_archive_command(server, None)
    await write_and_switch(server)
    cleared_s = await wait_until(
        lambda: _lacks(firing(prometheus), "WaPgWalArchivingStalled"), "WaPgWalArchivingStalled cleared", 90
    )
    with capsys.disabled():
        print(f"\nWaPgWalArchivingStalled fired {fired_s:.1f} s after archiving stopped; cleared {cleared_s:.1f} s")


async def _positive(value: Awaitable[float]) -> bool:
    return await value > 0


async def _contains(names: Awaitable[set[str]], wanted: set[str]) -> bool:
    return wanted <= await names


async def _lacks_all(names: Awaitable[set[str]]) -> bool:
    return not await names


async def _lacks(names: Awaitable[set[str]], unwanted: str) -> bool:
    return unwanted not in await names
