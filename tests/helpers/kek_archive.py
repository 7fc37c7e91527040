"""An archive in a schema of its own, written and read under chosen KEKs: key rotation and retirement."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import asyncpg
from pydantic import SecretStr

from devtools import pipeline
from devtools.broker import committed_offsets, end_offsets
from devtools.pipeline import Person
from devtools.samples import REPO_ROOT
from services.actions.access import ArchiveAccess, open_access
from services.core.crypto import DekCache, LocalKek
from services.core.keyring import Keyring
from services.core.schema import connect_pool, migrate_dsn
from services.core.settings import KeySettings, PostgresSettings
from services.retention.settings import RetentionSettings

B = "kek-b-2027"


B_KEY = base64.b64encode(os.urandom(32)).decode()


@dataclass
class Archive:
    """A schema of this test's own, a topic and a bucket prefix, and settings for any set of KEKs. ``pool`` is the
    owner's, for the test's own set-up and checks; the code under test connects with its service's role."""

    demo_env: dict[str, str]
    schema: str
    pool: asyncpg.Pool
    topic: str
    dlq: str
    prefix: str

    def dsn_of(self, service: str) -> str:
        """The DSN of a service's role (ARCHIVER, RETENTION), in this test's schema."""
        return f"{self.demo_env[f'WA_{service}_PG__DSN']}?search_path={self.schema}"

    @property
    def a(self) -> str:
        return self.demo_env["WA_ARCHIVER_KEYS__CURRENT_KEK_ID"]

    def keys(self, *kek_ids: str) -> KeySettings:
        demo = pipeline.key_settings(self.demo_env)
        every = {**demo.keks, B: SecretStr(B_KEY)}
        return KeySettings(keks={k: every[k] for k in kek_ids}, current_kek_id=kek_ids[-1], pepper=demo.pepper)

    def retention_settings(self, *kek_ids: str) -> RetentionSettings:
        return pipeline.retention_settings(self.demo_env, self.prefix).model_copy(
            update={"pg": PostgresSettings(dsn=SecretStr(self.dsn_of("RETENTION"))), "keys": self.keys(*kek_ids)}
        )

    @asynccontextmanager
    async def access(self, *kek_ids: str) -> AsyncIterator[ArchiveAccess]:
        opened = await open_access(self.retention_settings(*kek_ids))
        try:
            yield opened
        finally:
            await opened.close()

    @asynccontextmanager
    async def writing_keyring(self, *kek_ids: str) -> AsyncIterator[Keyring]:
        """The keyring the archiver creates keys with (its role: retention's may not insert a key)."""
        keys = self.keys(*kek_ids)
        pool = await connect_pool(self.dsn_of("ARCHIVER"), min_size=1, max_size=2)
        try:
            yield Keyring(pool, LocalKek(keys.kek_bytes(), keys.current_kek_id), DekCache(10_000))
        finally:
            await pool.close()

    @asynccontextmanager
    async def archiver(self, *kek_ids: str) -> AsyncIterator[None]:
        settings = pipeline.archiver_settings(self.demo_env, self.topic, self.dlq, self.prefix).model_copy(
            update={"pg": PostgresSettings(dsn=SecretStr(self.dsn_of("ARCHIVER"))), "keys": self.keys(*kek_ids)}
        )
        async with pipeline.running_archiver(settings):
            yield

    def cli_env(self, *kek_ids: str) -> dict[str, str]:
        keys = self.keys(*kek_ids)
        return {
            **os.environ,
            **self.demo_env,
            "WA_RETENTION_PG__DSN": self.dsn_of("RETENTION"),
            "WA_RETENTION_S3__PREFIX": self.prefix,
            "WA_RETENTION_KEYS__KEKS": json.dumps({k: v.get_secret_value() for k, v in keys.keks.items()}),
            "WA_RETENTION_KEYS__CURRENT_KEK_ID": keys.current_kek_id,
            "WA_RETENTION_OPERATOR": "test-operator",
        }


async def archive_messages(archive: Archive, bodies: list[bytes], *kek_ids: str) -> None:
    events = pipeline.events_of(bodies)
    await pipeline.produce(f"127.0.0.1:{archive.demo_env['WA_KAFKA_PORT']}", archive.topic, events)
    async with archive.archiver(*kek_ids):
        await pipeline.wait_indexed(archive.pool, {e.event_id for e in events})


def messages(person: Person, tag: str, count: int) -> list[bytes]:
    sent_at = int(time.time()) - 3600
    return [pipeline.text_message(person, f"wamid.{tag}.{n}", f"{tag} {n}", sent_at + n) for n in range(count)]


def run_cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def redeliver(archive: Archive, bodies: list[bytes], timeout_s: float = 60) -> None:
    """Produce ``bodies`` again and run an archiver until its group has committed the whole topic: every record
    was handled (archived, or dropped as an erased person's)."""
    bootstrap = f"127.0.0.1:{archive.demo_env['WA_KAFKA_PORT']}"
    await pipeline.produce(bootstrap, archive.topic, pipeline.events_of(bodies))
    settings = pipeline.archiver_settings(archive.demo_env, archive.topic, archive.dlq, archive.prefix).model_copy(
        update={"pg": PostgresSettings(dsn=SecretStr(archive.dsn_of("ARCHIVER"))), "keys": archive.keys(archive.a)}
    )
    ends = await end_offsets(bootstrap, archive.topic, 1)
    async with pipeline.running_archiver(settings):
        deadline = time.monotonic() + timeout_s
        while await committed_offsets(bootstrap, settings.group_id, archive.topic, 1) != ends:
            assert time.monotonic() < deadline, f"the archiver did not commit {ends} within {timeout_s}s"
            await asyncio.sleep(0.5)


async def lose_the_database(archive: Archive, pg_dsn: str) -> None:
    """Drop every table of the test's schema and migrate it again: an empty database, as after a loss."""
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"DROP SCHEMA {archive.schema} CASCADE")
        await admin.execute(f"CREATE SCHEMA {archive.schema}")
    finally:
        await admin.close()
    await migrate_dsn(f"{pg_dsn}?search_path={archive.schema}")


def dump_schema(archive: Archive, pg_dsn: str) -> bytes:
    """A real backup of the test's schema (``pg_dump``, custom format), to restore over it later."""
    return subprocess.run(
        ["pg_dump", "--format=custom", f"--schema={archive.schema}", pg_dsn],
        capture_output=True,
        check=True,
        timeout=120,
    ).stdout


async def restore_schema(archive: Archive, pg_dsn: str, dump: bytes) -> None:
    """The test's schema dropped and restored from ``dump``: a database restored to when the dump was taken."""
    admin = await asyncpg.connect(pg_dsn)
    try:
        await admin.execute(f"DROP SCHEMA {archive.schema} CASCADE")
    finally:
        await admin.close()
    subprocess.run(["pg_restore", "--dbname", pg_dsn], input=dump, check=True, timeout=120, capture_output=True)


def recover(archive: Archive, pg_dsn: str) -> dict[str, object]:
    env = {**archive.cli_env(archive.a), "WA_MIGRATOR_PG__DSN": f"{pg_dsn}?search_path={archive.schema}"}
    done = run_cli(env, "recover")
    assert done.returncode == 0, done.stderr
    report: dict[str, object] = json.loads(done.stdout)
    return report
