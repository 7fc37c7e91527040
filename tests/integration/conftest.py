"""Fixtures the integration tests share: a fresh archive prefix, the archive opened on it, and the actions,
admin API and CLI environment on one prefix (``stack``)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.broker import create_topic
from devtools.pipeline import Person
from devtools.serving import serve_asgi
from services.actions.access import ArchiveAccess, open_access
from services.actions.layer import Actions
from services.core.schema import connect_pool, migrate_dsn
from services.governance.metrics import RetentionMetrics
from services.retention.api import create_admin_app
from tests.helpers.action_stack import CLI_OPERATOR, Stack
from tests.helpers.kek_archive import Archive
from tests.helpers.reader_cases import ReaderCases


@pytest.fixture
async def prefix() -> str:
    return f"test/{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def access(demo_env: dict[str, str], prefix: str) -> AsyncIterator[ArchiveAccess]:
    opened = await open_access(pipeline.retention_settings(demo_env, prefix))
    yield opened
    await opened.close()


@pytest.fixture
async def stack(demo_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Stack]:
    """The actions in-process, the admin API served over HTTP, and the CLI's environment, on one test prefix."""
    prefix = f"test/{uuid.uuid4().hex[:8]}"
    settings = pipeline.retention_settings(demo_env, prefix)
    monkeypatch.setenv("WA_RETENTION_S3__PREFIX", prefix)
    monkeypatch.setenv("WA_RETENTION_OPERATOR", CLI_OPERATOR)

    async def opener() -> ArchiveAccess:
        return await open_access(settings)

    registry, api_registry = CollectorRegistry(), CollectorRegistry()
    access = await open_access(settings)
    app = create_admin_app(settings, opener, registry=api_registry)
    actions = Actions(access, RetentionMetrics(registry))
    cases = ReaderCases(actions)
    try:
        async with serve_asgi(app) as url, httpx.AsyncClient(base_url=url, timeout=60) as client:
            yield Stack(settings, actions, registry, client, api_registry, cases)
    finally:
        try:
            await cases.close()
        finally:
            await access.close()


@pytest.fixture
async def archive(kafka_bootstrap: str, pg_dsn: str, demo_env: dict[str, str]) -> AsyncIterator[Archive]:
    schema = f"test_rewrap_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(pg_dsn)
    await admin.execute(f"CREATE SCHEMA {schema}")
    owner = f"{pg_dsn}?search_path={schema}"
    await migrate_dsn(owner)  # as `wa-archive migrate` does, into the new schema
    pool = await connect_pool(owner, min_size=1, max_size=4)
    try:
        topic = await create_topic(kafka_bootstrap, partitions=1, prefix="rewrap")
        dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="rewrap-dlq")
        yield Archive(demo_env, schema, pool, topic, dlq, f"test/rewrap-{uuid.uuid4().hex[:8]}")
    finally:
        await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()


@pytest.fixture
def people() -> list[Person]:
    first = Person.fresh()
    return [first, *(Person(first.waba_id, first.phone_number_id, "1" + pipeline.digits(10)) for _ in range(3))]
