"""barman-cloud, the backup tool: the commands that archive WAL, take, list and restore base backups, and the
PostgreSQL settings that use them. Pure builders and parsers; running the commands is the caller's business
(deploy/local/stack.sh, the drill in tests/, the exporter).

barman-cloud keeps one PostgreSQL server under ``s3://BUCKET/PREFIX/SERVER/``: ``base/BACKUP_ID/`` per base backup
and ``wals/`` for the archived segments. It runs as the database server's system user (``archive_command`` is run
by PostgreSQL, a base backup reads the data directory), so its executables live in a virtualenv of their own that
this user can run (stack.sh ``install``), not in the project's.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

# Not a data directory's file: a base backup copies the data directory, and the credentials must not travel in it.
CREDENTIALS_PROFILE = "wa-pg-backup"
# The settings file stack.sh (and the drill) keep in the data directory, included from postgresql.conf.
CONF_NAME = "wa-backup.conf"
INCLUDE_LINE = f"include_if_exists = '{CONF_NAME}'"

RecoveryTarget = Literal["latest", "base"] | datetime


class BackupListUnreadable(ValueError):
    """``barman-cloud-backup-list --format json`` printed something that is not its list of backups."""


@dataclass(frozen=True, kw_only=True)
class BackupStore:
    """Where one PostgreSQL server's base backups and WAL live, and how barman-cloud reaches them.

    ``credentials_file`` is an AWS shared-credentials file with the profile :data:`CREDENTIALS_PROFILE` (an S3
    identity limited to the backup bucket); it is named in the environment of every command, never on a command
    line or in ``postgresql.conf``, so ``pg_settings`` and ``ps`` never show the secret.
    """

    tools: Path
    endpoint_url: str
    bucket: str
    prefix: str = ""
    server_name: str
    credentials_file: Path

    @property
    def destination(self) -> str:
        folder = self.prefix.strip("/")
        return f"s3://{self.bucket}/{folder}" if folder else f"s3://{self.bucket}"

    @property
    def environment(self) -> dict[str, str]:
        """What every barman-cloud command needs in its environment besides PATH."""
        return {"AWS_SHARED_CREDENTIALS_FILE": str(self.credentials_file)}

    def argv(self, tool: str, *options: str) -> list[str]:
        """``tool`` with the options that name the store, then ``options``, then the destination and server."""
        return [
            str(self.tools / tool),
            "--cloud-provider",
            "aws-s3",
            "--endpoint-url",
            self.endpoint_url,
            "--profile",
            CREDENTIALS_PROFILE,
            *options,
            self.destination,
            self.server_name,
        ]

    def _shell(self, tool: str, *trailing: str) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.environment.items())
        return f"{env} {shlex.join(self.argv(tool))} {' '.join(trailing)}"

    def wal_archive_command(self) -> str:
        """PostgreSQL's ``archive_command``: exit 0 only once the segment is stored (barman-cloud checks it)."""
        return self._shell("barman-cloud-wal-archive", "%p")

    def wal_restore_command(self) -> str:
        """PostgreSQL's ``restore_command`` during a recovery: fetches segment %f into %p."""
        return self._shell("barman-cloud-wal-restore", "%f", "%p")

    def backup_argv(self, *, host: str, port: int, user: str) -> list[str]:
        """Take a base backup now. ``--immediate-checkpoint``: the backup starts at once instead of after the next
        spread checkpoint (minutes); the checkpoint's burst of writes is the price."""
        return self.argv(
            "barman-cloud-backup", "--immediate-checkpoint", "--host", host, "--port", str(port), "--user", user
        )

    def list_argv(self) -> list[str]:
        return self.argv("barman-cloud-backup-list", "--format", "json")

    def restore_argv(self, backup_id: str, data_dir: Path) -> list[str]:
        """Restore base backup ``backup_id`` (or ``latest``) into the empty directory ``data_dir``."""
        return [*self.argv("barman-cloud-restore"), backup_id, str(data_dir)]


def postgres_quote(value: str) -> str:
    """A string value of postgresql.conf: single-quoted, its quotes doubled."""
    return "'" + value.replace("'", "''") + "'"


def archiving_conf(store: BackupStore, *, archive_timeout_s: int) -> str:
    """The settings that archive every WAL segment to the store (``archive_mode`` needs a restart to change).

    ``archive_timeout`` bounds the RPO of a quiet database: a segment is switched and archived at least this often
    even when it is not full, so at most ``archive_timeout_s`` of committed transactions live only on the server.
    """
    return (
        "# Written by services.backups (deploy/local/stack.sh): continuous WAL archiving with barman-cloud.\n"
        "wal_level = replica\n"
        "archive_mode = on\n"
        f"archive_timeout = {archive_timeout_s}\n"
        f"archive_command = {postgres_quote(store.wal_archive_command())}\n"
    )


def recovery_conf(store: BackupStore, target: RecoveryTarget) -> str:
    """The settings of a restored data directory (besides ``recovery.signal``): replay the archived WAL up to
    ``target`` and promote. ``latest``: every archived segment; ``base``: the base backup alone (consistent, no
    WAL after it); a datetime: the last transaction committed before it."""
    lines = [
        "# Written by services.backups for a restore; remove after the promotion.",
        f"restore_command = {postgres_quote(store.wal_restore_command())}",
        "recovery_target_action = promote",
    ]
    if target == "latest":
        lines.append("recovery_target_timeline = latest")
    elif target == "base":
        lines.append("recovery_target = immediate")
    else:
        lines.append(f"recovery_target_time = {postgres_quote(target.astimezone(UTC).isoformat())}")
    return "\n".join(lines) + "\n"


def credentials_file_text(access_key: str, secret_key: str) -> str:
    return f"[{CREDENTIALS_PROFILE}]\naws_access_key_id = {access_key}\naws_secret_access_key = {secret_key}\n"


@dataclass(frozen=True, kw_only=True)
class BaseBackup:
    backup_id: str
    status: str
    end_time: datetime | None
    begin_wal: str | None
    end_wal: str | None

    @property
    def complete(self) -> bool:
        return self.status == "DONE" and self.end_time is not None


def parse_backup_list(text: str) -> list[BaseBackup]:
    """The backups of ``barman-cloud-backup-list --format json``, oldest first.

    Raises :class:`BackupListUnreadable` when the text is not that list (an error message, a changed format):
    the exporter then reports the probe as failed rather than "no backup".
    """
    try:
        listed = json.loads(text)["backups_list"]
        backups = [
            BaseBackup(
                backup_id=str(item["backup_id"]),
                status=str(item["status"]),
                end_time=datetime.fromisoformat(item["end_time_iso"]) if item.get("end_time_iso") else None,
                begin_wal=item.get("begin_wal"),
                end_wal=item.get("end_wal"),
            )
            for item in listed
        ]
    except (ValueError, KeyError, TypeError) as exc:
        raise BackupListUnreadable(f"not a barman-cloud backup list: {exc}") from exc
    return sorted(backups, key=lambda b: b.backup_id)


def newest_complete(backups: list[BaseBackup]) -> BaseBackup | None:
    """The newest backup that finished (a backup in progress or failed cannot be restored)."""
    done = [b for b in backups if b.complete]
    return max(done, key=lambda b: b.end_time or datetime.min.replace(tzinfo=UTC)) if done else None
