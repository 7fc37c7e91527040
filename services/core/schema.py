"""Migrations: plain, ordered SQL files in ``services/core/migrations`` applied at start-up by a small runner.

Contract: :func:`migrate` applies every file whose number is not yet recorded in ``schema_migrations``, each in
its own transaction, in order, under an advisory lock so that several services starting together apply each
migration once. A failing migration rolls back and raises; nothing half-applied is recorded.
"""

from __future__ import annotations

import logging
import re
from importlib import resources

import asyncpg

log = logging.getLogger("wa_archive.schema")

# Arbitrary but fixed: every wa-archive process takes this advisory lock while migrating.
MIGRATION_LOCK_ID = 0x77615F61726368  # "wa_arch"
FILE_PATTERN = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


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


async def migrate(conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy) -> list[str]:
    """Apply pending migrations; returns the names applied (empty when the schema is current)."""
    applied: list[str] = []
    await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
    try:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
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


async def connect_pool(dsn: str, *, min_size: int = 1, max_size: int = 8) -> asyncpg.Pool:
    """A connection pool with the schema migrated."""
    pool = await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size)
    async with pool.acquire() as conn:
        await migrate(conn)
    return pool
