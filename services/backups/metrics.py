"""Prometheus metrics of the backup exporter: how fresh the PostgreSQL backups are. No label names anything but
the probe (``base``, ``wal``). Catalogue: docs/METRICS.md; alerts: deploy/prometheus/rules.yml."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class BackupMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_base = Gauge(
            "wa_pg_backup_last_base_timestamp_seconds",
            "When the newest complete base backup in the backup store ended (0: none). Its age is the replay a "
            "restore faces, and with the WAL the oldest point in time a restore can reach.",
            registry=registry,
        )
        self.base_backups = Gauge(
            "wa_pg_backup_base_backups",
            "Complete base backups in the backup store.",
            registry=registry,
        )
        self.last_wal_archived = Gauge(
            "wa_pg_backup_last_wal_archived_timestamp_seconds",
            "When PostgreSQL last archived a WAL segment (pg_stat_archiver.last_archived_time; 0: never since the "
            "statistics were reset). What was committed after it lives only on the database server.",
            registry=registry,
        )
        self.wal_ready = Gauge(
            "wa_pg_backup_wal_ready_segments",
            "WAL segments complete but not archived yet (pg_wal/archive_status/*.ready): 0 or 1 when archiving "
            "keeps up.",
            registry=registry,
        )
        self.wal_failures = Counter(
            "wa_pg_backup_wal_archive_failures",
            "Failed attempts of archive_command (pg_stat_archiver.failed_count, followed across restarts).",
            registry=registry,
        )
        self.probe_success = Gauge(
            "wa_pg_backup_probe_success",
            "1 when the last probe of this source answered (base: the backup list in S3; wal: pg_stat_archiver).",
            ["probe"],
            registry=registry,
        )
        self.probe_timestamp = Gauge(
            "wa_pg_backup_probe_timestamp_seconds",
            "When this source was last probed successfully.",
            ["probe"],
            registry=registry,
        )
