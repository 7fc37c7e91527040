"""What the export-job tests share: the work bucket opened by the S3 administrator, the console and the export
worker's actions served on one prefix, and a person with archived messages."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import asyncpg
from prometheus_client import CollectorRegistry
from pydantic import SecretStr

from devtools import pipeline
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.actions.layer import Actions
from services.console.factory import create_console_app
from services.console.settings import ConsoleSettings
from services.core.bucket import ArchiveBucket
from services.core.identity import resolve_subject_refs
from services.core.settings import S3Settings
from services.governance.metrics import RetentionMetrics
from services.retention.settings import RetentionSettings
from tests.helpers.archive_runs import archive, crisis_bodies


def admin_work_bucket(demo_env: dict[str, str]) -> ArchiveBucket:
    """The work bucket with the S3 administrator's key: the running SeaweedFS loads stack.sh's identities when it
    starts (tests/integration/test_least_privilege.py checks the services' own rights on it)."""
    return ArchiveBucket(
        S3Settings(
            endpoint_url=demo_env["WA_ARCHIVER_S3__ENDPOINT_URL"],
            access_key=demo_env["WA_S3_ACCESS_KEY"],
            secret_key=SecretStr(demo_env["WA_S3_SECRET_KEY"]),
            bucket=demo_env["WA_S3_WORK_BUCKET"],
        )
    )


async def fail_leftover_jobs(pool: asyncpg.Pool) -> None:
    """Jobs of test operators that an interrupted run left queued or running are failed, so that a test's claim
    takes its own job."""
    await pool.execute(
        "UPDATE export_jobs SET status = 'failed', error = 'left by an earlier test run'"
        " WHERE status IN ('queued', 'running') AND requested_by LIKE 'test-%'"
    )


@dataclass
class ServedConsole:
    url: str
    settings: RetentionSettings
    worker: Actions  # the export worker's actions (retention's role), counting into a registry of their own


@contextlib.asynccontextmanager
async def served_console(demo_env: dict[str, str]) -> AsyncIterator[ServedConsole]:
    """The console (its own role) and the export worker's actions (retention's), on a new prefix."""
    settings = pipeline.retention_settings(demo_env, f"test/{uuid.uuid4().hex[:8]}")
    console_settings = ConsoleSettings(secure_cookies=False, idle_timeout_s=120, page_size=20)

    async def opener() -> ArchiveAccess:
        opened = await open_access(console_settings.archive_settings(settings))
        opened.work = admin_work_bucket(demo_env)
        return opened

    app = create_console_app(console_settings, settings, opener, registry=CollectorRegistry(), serve_ops=False)
    access = await open_access(settings)
    access.work = admin_work_bucket(demo_env)
    try:
        async with serve_asgi(app) as url:
            yield ServedConsole(url, settings, Actions(access, RetentionMetrics(CollectorRegistry())))
    finally:
        await access.close()


async def archived_person(demo_env: dict[str, str], pool: asyncpg.Pool, served: ServedConsole) -> tuple[Person, str]:
    """A person's crisis archived under the console's prefix (tests/helpers/archive_runs.py crisis_bodies); the
    person and the pseudonym that holds their records."""
    person = Person.fresh()
    await archive(demo_env, pool, served.settings.s3.prefix, crisis_bodies(person))
    refs = await resolve_subject_refs(pool, served.worker.access.pepper, person.wa_id, None)
    ref = await pool.fetchval(
        "SELECT encode(subject_ref, 'hex') FROM archived_events"
        " WHERE subject_ref IN (SELECT decode(r, 'hex') FROM unnest($1::text[]) r) LIMIT 1",
        refs,
    )
    assert isinstance(ref, str)
    return person, ref
