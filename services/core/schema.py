"""Migrations: plain, ordered SQL files in ``services/core/migrations``, applied by the migrator, never by a service.

Contract: :func:`migrate` applies every file whose number is not yet recorded in ``schema_migrations``, each in
its own transaction, in order, under an advisory lock so that two migrators started together apply each
migration once. A failing migration rolls back and raises; nothing half-applied is recorded. It runs as the
owner of the schema (``wa-archive migrate`` with ``WA_MIGRATOR_PG__DSN``; a Kubernetes Job in a deployment):
the services connect as roles that may not create or alter anything (migration 0017), and
:func:`connect_pool` only waits until the schema is at least as new as the code.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from importlib import resources

import asyncpg

from services.core.db import Connection

log = logging.getLogger("wa_archive.schema")

# Arbitrary but fixed: every wa-archive process takes this advisory lock while migrating.
MIGRATION_LOCK_ID = 0x77615F61726368  # "wa_arch"
FILE_PATTERN = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
# The runner's own table, created before the first migration (tests/integration/test_migrations.py too).
SCHEMA_MIGRATIONS_DDL = (
    "CREATE TABLE IF NOT EXISTS schema_migrations ("
    " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
)
# How long a service waits at start-up for the migrator (the Job and the Deployments start together).
SCHEMA_WAIT_S = 120.0


class SchemaNotCurrent(RuntimeError):
    """The database schema is older than the code: the migrations have not been applied (yet)."""

    def __init__(self, found: int | None, needed: int) -> None:
        at = "has no migrations" if found is None else f"is at migration {found:04d}"
        super().__init__(
            f"the database schema {at}, this build needs {needed:04d}: run `wa-archive migrate` as the schema's "
            "owner (WA_MIGRATOR_PG__DSN; in Kubernetes the Job `migrate`)"
        )
        self.found = found
        self.needed = needed


def migration_files() -> list[tuple[int, str, str]]:
    """(version, name, sql) of every migration, ordered by version; duplicate numbers are a packaging error."""
    found: dict[int, tuple[int, str, str]] = {}
    for entry in resources.files("services.core.migrations").iterdir():
        match = FILE_PATTERN.match(entry.name)
        if not match:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two migrations numbered {version:04d}")
        found[version] = (version, entry.name, entry.read_text(encoding="utf-8"))
    return [found[v] for v in sorted(found)]


async def migrate(conn: Connection) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when the schema is current)."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(SCHEMA_MIGRATIONS_DDL)
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_migrations")}
        for version, name, sql in migration_files():
            if version in done:
                continue
            async with conn.transaction():
                await conn.execute(sql)
                await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", version, name)
            log.info("applied migration %s", name)
            applied.append(name)
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    return applied


def latest_version() -> int:
    """The number of the newest migration this build carries."""
    return migration_files()[-1][0]


async def schema_version(conn: Connection) -> int | None:
    """The newest migration applied, or None on a database the migrator has never run on."""
    if await conn.fetchval("SELECT to_regclass('schema_migrations')") is None:
        return None
    version: int | None = await conn.fetchval("SELECT max(version) FROM schema_migrations")
    return version


async def wait_for_schema(pool: asyncpg.Pool, *, timeout_s: float = SCHEMA_WAIT_S, poll_s: float = 1.0) -> int:
    """Wait until the schema is at least at :func:`latest_version` (newer is fine: during a rolling upgrade the
    old pods run beside a migrated schema, which is why migrations only add); returns the version found.
    Raises :class:`SchemaNotCurrent` after ``timeout_s``."""
    needed = latest_version()
    deadline = time.monotonic() + timeout_s
    logged = False
    while True:
        async with pool.acquire() as conn:
            found = await schema_version(conn)
        if found is not None and found >= needed:
            return found
        error = SchemaNotCurrent(found, needed)
        if time.monotonic() >= deadline:
            raise error
        if not logged:
            log.warning("waiting for the migrations: %s", error)
            logged = True
        await asyncio.sleep(poll_s)


async def connect_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 8, schema_wait_s: float = SCHEMA_WAIT_S
) -> asyncpg.Pool:
    """A connection pool over a schema at least as new as this build (see :func:`wait_for_schema`). It never
    migrates: a service's role may not. Raises :class:`SchemaNotCurrent` when the migrator has not run within
    ``schema_wait_s``, and asyncpg's errors when PostgreSQL refuses the connection."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    try:
        await wait_for_schema(pool, timeout_s=schema_wait_s)
    except BaseException:
        await pool.close()
        raise
    return pool


async def migrate_dsn(dsn: str) -> list[str]:
    """Apply the pending migrations over a connection of the schema's owner (``wa-archive migrate``)."""
    conn = await asyncpg.connect(dsn)
    try:
        return await migrate(conn)
    finally:
        await conn.close()
