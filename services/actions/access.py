"""Everything an operator action needs — database, bucket, keys, policy — opened once from the settings.

Used by the admin API and by the ``wa-archive`` CLI, so both act through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import asyncpg

from services.core.bucket import ArchiveBucket
from services.core.crypto import DekCache, LocalKek
from services.core.keyring import Keyring
from services.core.policy import DEFAULT_POLICY, RetentionPolicy, load_policy
from services.core.reader import ArchiveReader
from services.core.schema import SCHEMA_WAIT_S, connect_pool
from services.retention.settings import RetentionSettings


@dataclass(kw_only=True)
class ArchiveAccess:
    pool: asyncpg.Pool
    bucket: ArchiveBucket
    keyring: Keyring
    reader: ArchiveReader
    pepper: bytes
    policy: RetentionPolicy

    async def close(self) -> None:
        await self.pool.close()


async def open_access(settings: RetentionSettings, *, schema_wait_s: float = SCHEMA_WAIT_S) -> ArchiveAccess:
    """Open the archive; a service waits up to ``schema_wait_s`` for the migrator (SchemaNotCurrent after)."""
    policy = load_policy(settings.policy_file) if settings.policy_file else DEFAULT_POLICY
    pool = await connect_pool(
        settings.pg.dsn.get_secret_value(),
        min_size=settings.pg.min_connections,
        max_size=settings.pg.max_connections,
        schema_wait_s=schema_wait_s,
    )
    keyring = Keyring(pool, LocalKek(settings.keys.kek_bytes(), settings.keys.current_kek_id), DekCache(10_000))
    bucket = ArchiveBucket(settings.s3)
    return ArchiveAccess(
        pool=pool,
        bucket=bucket,
        keyring=keyring,
        reader=ArchiveReader(bucket, keyring),
        pepper=settings.keys.pepper_bytes(),
        policy=policy,
    )
