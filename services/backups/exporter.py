"""The backup exporter: probes the backup store and PostgreSQL's archiver and keeps :class:`BackupMetrics` current.

Two probes, each on its own so that one failing does not hide the other:

- ``base``: ``barman-cloud-backup-list`` reads the store; the newest complete base backup's end time.
- ``wal``: ``pg_stat_archiver`` (last archived segment, failed attempts) and the segments waiting to be archived.

A probe that fails sets ``wa_pg_backup_probe_success{probe}`` to 0 and leaves the last values as they were, so the
ages keep growing and the freshness alerts still fire; the probe-failure alert says why they cannot be trusted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from services.backups.barman import BackupStore, newest_complete, parse_backup_list
from services.backups.metrics import BackupMetrics

log = logging.getLogger(__name__)

LIST_TIMEOUT_S = 120.0


@dataclass(frozen=True, kw_only=True)
class ArchiverState:
    last_archived: datetime | None
    failed_count: int
    ready_segments: int


async def archiver_state(conn: asyncpg.Connection) -> ArchiverState:
    """What PostgreSQL says of its WAL archiving. Needs pg_monitor (or a superuser) for the archive status
    directory; a role without it fails here with asyncpg's InsufficientPrivilegeError."""
    row = await conn.fetchrow("SELECT last_archived_time, failed_count FROM pg_stat_archiver")
    ready = await conn.fetchval("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'")
    assert row is not None  # the view always has its one row
    return ArchiverState(
        last_archived=row["last_archived_time"], failed_count=row["failed_count"], ready_segments=ready
    )


async def list_backups(store: BackupStore) -> str:
    """The JSON list of the store's base backups; raises RuntimeError with barman-cloud's message on failure."""
    process = await asyncio.create_subprocess_exec(
        *store.list_argv(),
        env={**os.environ, **store.environment},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), LIST_TIMEOUT_S)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise RuntimeError(f"barman-cloud-backup-list did not answer within {LIST_TIMEOUT_S:.0f}s") from None
    if process.returncode != 0:
        raise RuntimeError(f"barman-cloud-backup-list exited {process.returncode}: {err.decode()[-500:]}")
    return out.decode()


class BackupProbe:
    """Refreshes the metrics from the store and the database; :meth:`refresh` never raises."""

    def __init__(self, store: BackupStore, dsn: str, metrics: BackupMetrics) -> None:
        self.store = store
        self.dsn = dsn
        self.metrics = metrics
        self._failed_seen: int | None = None

    async def refresh(self) -> None:
        await asyncio.gather(self.probe_base(), self.probe_wal())

    async def probe_base(self) -> None:
        try:
            backups = parse_backup_list(await list_backups(self.store))
        except Exception as exc:  # any failure is reported as the probe's, never as "no backup"
            log.warning("backup list probe failed: %s", exc)
            self.metrics.probe_success.labels("base").set(0)
            return
        newest = newest_complete(backups)
        self.metrics.last_base.set(newest.end_time.timestamp() if newest and newest.end_time else 0)
        self.metrics.base_backups.set(sum(1 for b in backups if b.complete))
        self.metrics.probe_success.labels("base").set(1)
        self.metrics.probe_timestamp.labels("base").set(time.time())

    async def probe_wal(self) -> None:
        try:
            conn = await asyncpg.connect(self.dsn, timeout=10)
            try:
                state = await archiver_state(conn)
            finally:
                await conn.close()
        except Exception as exc:  # the database down or the role without pg_monitor: the probe failed
            log.warning("archiver probe failed: %s", exc)
            self.metrics.probe_success.labels("wal").set(0)
            return
        self.metrics.last_wal_archived.set(state.last_archived.timestamp() if state.last_archived else 0)
        self.metrics.wal_ready.set(state.ready_segments)
        # pg_stat_archiver's counter restarts with the statistics; the exported counter only ever grows.
        grown = state.failed_count - (self._failed_seen or 0)
        if grown > 0:
            self.metrics.wal_failures.inc(grown)
        self._failed_seen = state.failed_count
        self.metrics.probe_success.labels("wal").set(1)
        self.metrics.probe_timestamp.labels("wal").set(time.time())

    async def run(self, interval_s: float, base_interval_s: float, stop: asyncio.Event) -> None:
        """Probe the archiver every ``interval_s`` and the store every ``base_interval_s`` (listing it starts a
        process and reads every backup's metadata; base backups are daily) until ``stop`` is set."""
        next_base = 0.0
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            if loop.time() >= next_base:
                next_base = loop.time() + base_interval_s
                await self.refresh()
            else:
                await self.probe_wal()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval_s)
