"""Settings of the backup tooling (``python -m services.backups``): where barman-cloud keeps the backups, with
which S3 identity, and the exporter's database login and port. Prefix ``WA_PGBACKUP_``."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.backups.barman import BackupStore
from services.core.settings import PostgresSettings


class BackupSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_PGBACKUP_", env_nested_delimiter="__", extra="ignore")

    # The backup store: its own bucket (no Object Lock: old base backups are deleted by retention policy) and an
    # S3 identity limited to it; the archive's identities never touch it.
    s3_endpoint_url: str
    s3_access_key: str
    s3_secret_key: SecretStr
    bucket: str = "wa-archive-pg-backups"
    prefix: str = ""
    server_name: str = "local"
    # The barman-cloud executables (a virtualenv the database server's system user can run; stack.sh install).
    tools: Path
    # Where the AWS credentials file for barman-cloud is written: outside the data directory (base backups copy it).
    credentials_file: Path
    # At least one segment archived this often when anything was written: the RPO of a quiet database.
    archive_timeout_s: int = Field(default=60, ge=1)
    # The exporter: pg_stat_archiver is readable by any login; pg_ls_archive_statusdir() needs pg_monitor.
    pg: PostgresSettings = PostgresSettings()
    host: str = "127.0.0.1"
    port: int = 9084
    refresh_interval_s: float = Field(default=15.0, gt=0)
    base_refresh_interval_s: float = Field(default=60.0, gt=0)

    def store(self) -> BackupStore:
        return BackupStore(
            tools=self.tools,
            endpoint_url=self.s3_endpoint_url,
            bucket=self.bucket,
            prefix=self.prefix,
            server_name=self.server_name,
            credentials_file=self.credentials_file,
        )
