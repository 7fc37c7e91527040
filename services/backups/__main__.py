"""``python -m services.backups COMMAND``: the PostgreSQL backups of the local stack (deploy/local/stack.sh).

    configure DATA_DIR   write the credentials file and DATA_DIR/wa-backup.conf (continuous WAL archiving), and
                         include it from DATA_DIR/postgresql.conf; idempotent. archive_mode takes effect at the
                         next start of PostgreSQL.
    backup               take a base backup now (run as the data directory's owner)
    exporter             serve the backup freshness metrics on WA_PGBACKUP_HOST:WA_PGBACKUP_PORT

Settings: services/backups/settings.py (``WA_PGBACKUP_*``, deploy/local/demo.env).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

from prometheus_client import CollectorRegistry

from services.backups.barman import CONF_NAME, INCLUDE_LINE, archiving_conf, credentials_file_text
from services.backups.exporter import BackupProbe
from services.backups.metrics import BackupMetrics
from services.backups.settings import BackupSettings
from services.core.logs import configure_logging
from services.core.ops_http import OpsServer, ops_app
from services.core.settings import load_settings


def configure(settings: BackupSettings, data_dir: Path) -> None:
    """Write what archiving needs; files are owned by the data directory's owner (the server's system user)."""
    owner = data_dir.stat()
    credentials = settings.credentials_file
    credentials.parent.mkdir(parents=True, exist_ok=True)
    credentials.write_text(
        credentials_file_text(settings.s3_access_key, settings.s3_secret_key.get_secret_value()), encoding="utf-8"
    )
    credentials.chmod(0o600)
    conf = data_dir / CONF_NAME
    conf.write_text(archiving_conf(settings.store(), archive_timeout_s=settings.archive_timeout_s), encoding="utf-8")
    main_conf = data_dir / "postgresql.conf"
    if INCLUDE_LINE not in main_conf.read_text(encoding="utf-8").splitlines():
        with main_conf.open("a", encoding="utf-8") as handle:
            handle.write(f"\n{INCLUDE_LINE}\n")
    if os.geteuid() == 0:
        for path in (credentials, conf):
            os.chown(path, owner.st_uid, owner.st_gid)


def backup(settings: BackupSettings, *, host: str, port: int, user: str, data_dir: Path) -> int:
    """A base backup now, as the data directory's owner (barman-cloud reads its files)."""
    argv = settings.store().backup_argv(host=host, port=port, user=user)
    if os.geteuid() == 0:
        owner = data_dir.stat()
        argv = ["setpriv", f"--reuid={owner.st_uid}", f"--regid={owner.st_gid}", "--init-groups", *argv]
    return subprocess.run(argv, env={**os.environ, **settings.store().environment}, check=False).returncode


async def serve_exporter(settings: BackupSettings) -> None:
    registry = CollectorRegistry()
    probe = BackupProbe(settings.store(), settings.pg.dsn.get_secret_value(), BackupMetrics(registry))
    server = OpsServer(ops_app(registry, lambda: True), settings.host, settings.port)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await probe.run(settings.refresh_interval_s, settings.base_refresh_interval_s, stop)
    finally:
        await server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.backups", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    conf = commands.add_parser("configure")
    conf.add_argument("data_dir", type=Path)
    take = commands.add_parser("backup")
    take.add_argument("--host", default="127.0.0.1")
    take.add_argument("--port", type=int, default=5432)
    take.add_argument("--user", default="postgres")
    take.add_argument("--data-dir", type=Path, required=True)
    commands.add_parser("exporter")
    args = parser.parse_args(argv)
    settings = load_settings(BackupSettings)
    configure_logging("INFO")
    if args.command == "configure":
        configure(settings, args.data_dir)
        return 0
    if args.command == "backup":
        return backup(settings, host=args.host, port=args.port, user=args.user, data_dir=args.data_dir)
    asyncio.run(serve_exporter(settings))
    return 0


if __name__ == "__main__":
    sys.exit(main())
