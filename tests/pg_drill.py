"""A PostgreSQL server of a test's own, backed up with barman-cloud to the local S3 as deploy/local/stack.sh backs up
the stack's: its own data directory, port and backup folder, so that a test may destroy it (the shared server on
5432 is never touched). Used by the backup drill and the backup-freshness alert test.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import boto3
from botocore.client import Config
from mypy_boto3_s3.type_defs import ObjectIdentifierTypeDef
from pydantic import SecretStr

from devtools.samples import REPO_ROOT
from devtools.serving import free_port
from services.backups.__main__ import configure
from services.backups.barman import RecoveryTarget, newest_complete, parse_backup_list, recovery_conf
from services.backups.settings import BackupSettings
from services.core.settings import PostgresSettings

STACK_SH = REPO_ROOT / "deploy" / "local" / "stack.sh"
SERVICE_DSN_VARS = ("WA_ARCHIVER_PG__DSN", "WA_RETENTION_PG__DSN", "WA_CONSOLE_PG__DSN")


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("no PostgreSQL under /usr/lib/postgresql: run `make stack-up`")
    return found[-1].parent


def barman_tools() -> Path:
    """The barman-cloud virtualenv of this checkout's stack (stack.sh installs it, idempotent)."""
    stack = Path(os.environ.get("WA_STACK_DIR", REPO_ROOT / ".stack"))
    tools = stack / "cache" / "barman" / "bin"
    if not (tools / "barman-cloud-backup").exists():
        subprocess.run([str(STACK_SH), "install", "pgbackup"], check=True, capture_output=True, timeout=600)
    return tools


def _server_user() -> list[str]:
    """initdb and the server refuse to run as root: run them as `postgres` then."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


def _chown_to_server(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        for root, dirs, files in os.walk(path):
            for name in [*dirs, *files]:
                os.chown(os.path.join(root, name), user.pw_uid, user.pw_gid)
        os.chown(path, user.pw_uid, user.pw_gid)


@dataclass
class DrillServer:
    """One PostgreSQL server under ``home`` (data/, run/, log) on ``port``, archiving to ``settings``' store."""

    home: Path
    port: int
    settings: BackupSettings
    demo_env: dict[str, str]

    @property
    def data(self) -> Path:
        return self.home / "data"

    @property
    def socket_dir(self) -> Path:
        return self.home / "run"

    def dsn(self, user: str = "postgres", database: str = "postgres") -> str:
        # The drill's server trusts 127.0.0.1 (a test's throwaway server); the roles keep their demo passwords.
        return f"postgresql://{user}@127.0.0.1:{self.port}/{database}"

    def owner_dsn(self) -> str:
        return f"postgresql://{self.demo_env['WA_PG_USER']}@127.0.0.1:{self.port}/{self.demo_env['WA_PG_DATABASE']}"

    def service_env(self) -> dict[str, str]:
        """The demo configuration with every database login moved to this server."""
        moved = {}
        for var in (*SERVICE_DSN_VARS, "WA_MIGRATOR_PG__DSN"):
            parts = urlsplit(self.demo_env[var])
            moved[var] = parts._replace(netloc=parts.netloc.rsplit(":", 1)[0] + f":{self.port}").geturl()
        return {**self.demo_env, **moved}

    def _run(self, *argv: str, timeout: float = 120, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            [*_server_user(), *argv],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, **(env or {})},
        )
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} exited {done.returncode}: {done.stderr[-2000:]}")
        return done.stdout

    def initdb(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        _chown_to_server(self.home)
        self._run(
            str(pg_bin() / "initdb"), "-D", str(self.data), "-U", "postgres", "-E", "UTF8", "--locale=C.UTF-8",
            "--auth-local=trust", "--auth-host=trust",
        )  # fmt: skip
        configure(self.settings, self.data)

    def start(self) -> None:
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.socket_dir} -c max_connections=50"
        self._run(
            str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-l", str(self.home / "postgres.log"), "-w", "-t", "120",
            "-o", options, "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(str(pg_bin() / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def destroy(self) -> None:
        """The loss: the server killed without a checkpoint, its data directory gone."""
        self.stop("immediate")
        shutil.rmtree(self.data)

    async def provision(self) -> None:
        """The demo's owner, database and service roles, as stack.sh creates them on the shared server."""
        conn = await asyncpg.connect(self.dsn())
        try:
            owner = self.demo_env["WA_PG_USER"]
            await conn.execute(f"CREATE ROLE {owner} LOGIN PASSWORD '{self.demo_env['WA_PG_PASSWORD']}'")
            await conn.execute(f"CREATE DATABASE {self.demo_env['WA_PG_DATABASE']} OWNER {owner}")
            for var in SERVICE_DSN_VARS:
                parts = urlsplit(self.demo_env[var])
                await conn.execute(f"CREATE ROLE {parts.username} LOGIN PASSWORD '{parts.password}'")
        finally:
            await conn.close()

    def base_backup(self) -> str:
        """A base backup now; returns its id."""
        store = self.settings.store()
        self._run(*store.backup_argv(host=str(self.socket_dir), port=self.port, user="postgres"), env=store.environment)
        newest = newest_complete(parse_backup_list(self._run(*store.list_argv(), env=store.environment)))
        assert newest is not None, "barman-cloud-backup succeeded but lists no complete backup"
        return newest.backup_id

    async def archive_current_wal(self, timeout_s: float = 60) -> None:
        """Switch to a new WAL segment and wait until the old one is archived (bounded)."""
        conn = await asyncpg.connect(self.dsn())
        try:
            segment = await conn.fetchval("SELECT pg_walfile_name(pg_switch_wal())")
            deadline = time.monotonic() + timeout_s
            while True:
                archived = await conn.fetchval("SELECT last_archived_wal FROM pg_stat_archiver")
                if archived is not None and archived >= segment:
                    return
                if time.monotonic() > deadline:
                    raise AssertionError(f"WAL segment {segment} not archived within {timeout_s}s (last: {archived})")
                await asyncio.sleep(0.2)
        finally:
            await conn.close()

    def restore(self, backup_id: str, target: RecoveryTarget) -> None:
        """Restore ``backup_id`` into the (gone) data directory, replay WAL to ``target``, start and wait for the
        promotion."""
        store = self.settings.store()
        self.data.mkdir()
        _chown_to_server(self.data)
        self._run(*store.restore_argv(backup_id, self.data), env=store.environment, timeout=300)
        with (self.data / "postgresql.auto.conf").open("a", encoding="utf-8") as handle:
            handle.write(recovery_conf(store, target))
        (self.data / "recovery.signal").touch()
        self.data.chmod(0o700)
        _chown_to_server(self.data)
        self.start()

    async def wait_promoted(self, timeout_s: float = 120) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                conn = await asyncpg.connect(self.dsn(), timeout=5)
                try:
                    if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                        return
                finally:
                    await conn.close()
            except (OSError, asyncpg.PostgresError):
                pass  # still starting
            if time.monotonic() > deadline:
                raise AssertionError(f"the restored server was not promoted within {timeout_s}s")
            await asyncio.sleep(0.2)


def drill_settings(demo_env: dict[str, str], home: Path, prefix: str, *, port: int) -> BackupSettings:
    """The backup settings of demo.env, in a folder of the test's own. ``WA_PGBACKUP_S3_ACCESS_KEY``/``_SECRET_KEY``
    in the environment override demo.env's identity (a gateway started before that identity existed does not
    know it until stack.sh restarts it)."""
    access = os.environ.get("WA_PGBACKUP_S3_ACCESS_KEY", demo_env["WA_PGBACKUP_S3_ACCESS_KEY"])
    secret = os.environ.get("WA_PGBACKUP_S3_SECRET_KEY", demo_env["WA_PGBACKUP_S3_SECRET_KEY"])
    return BackupSettings(
        s3_endpoint_url=demo_env["WA_PGBACKUP_S3_ENDPOINT_URL"],
        s3_access_key=access,
        s3_secret_key=SecretStr(secret),
        bucket=demo_env["WA_PGBACKUP_BUCKET"],
        prefix=prefix,
        server_name="drill",
        tools=barman_tools(),
        credentials_file=home / "pg-backup.credentials",
        archive_timeout_s=60,
        pg=PostgresSettings(dsn=SecretStr(f"postgresql://postgres@127.0.0.1:{port}/postgres")),
    )


@asynccontextmanager
async def drill_server(demo_env: dict[str, str]) -> AsyncIterator[DrillServer]:
    """A fresh server (initdb, archiving configured, the demo's roles), stopped and deleted afterwards; its backups
    go to a folder of its own in the backup bucket (created by provision.py if the stack predates it)."""
    subprocess.run(
        [sys.executable, str(REPO_ROOT / "deploy" / "local" / "provision.py"), "s3"],
        env={**os.environ, **demo_env},
        check=True,
        capture_output=True,
        timeout=120,
    )
    run = uuid.uuid4().hex[:8]
    home = REPO_ROOT / ".stack" / f"pg-drill-{run}"
    port = free_port()
    server = DrillServer(home, port, drill_settings(demo_env, home, f"test/drill-{run}", port=port), demo_env)
    server.initdb()
    server.start()
    try:
        await server.provision()
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(home, ignore_errors=True)
        delete_backups(server.settings)


def delete_backups(settings: BackupSettings) -> None:
    """Every object of this server's backup folder: a drill leaves ≈100 MB of base backups and WAL otherwise."""
    client = boto3.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key.get_secret_value(),
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )
    folder = f"{settings.prefix.strip('/')}/"
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=settings.bucket, Prefix=folder):
        keys: list[ObjectIdentifierTypeDef] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=settings.bucket, Delete={"Objects": keys, "Quiet": True})
