"""Shared fixtures: the demo configuration, and session connections to the real local stack.

Integration and e2e tests talk to the servers `make stack-up` starts on 127.0.0.1; when a server is not there
the fixture fails the test with the command to run instead of hanging.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import boto3
import httpx
import pytest
import pytest_asyncio
from botocore.client import Config
from hypothesis import HealthCheck, settings
from mypy_boto3_s3 import S3Client

from devtools.samples import REPO_ROOT, as_kafka_super_user, load_demo_env
from services.core.published import LOCAL_DEMO_FLAG
from services.core.schema import connect_pool, migrate_dsn
from tests.helpers.keycloak import Keycloak, KeycloakAdmin

# The services under test connect to Kafka as its super user (devtools.samples.as_kafka_super_user says why), also
# when the shell that runs pytest sourced demo.env.
DEMO_ENV = as_kafka_super_user(load_demo_env())
for _name in load_demo_env().keys() - DEMO_ENV.keys():
    os.environ.pop(_name, None)
for _name, _value in DEMO_ENV.items():
    os.environ.setdefault(_name, _value)
# The demo secrets are published: the services refuse them unless told this is a local demo. The tests are one,
# and so are the processes they start (they inherit this environment).
os.environ[LOCAL_DEMO_FLAG] = "1"

# Hypothesis profiles, chosen with HYPOTHESIS_PROFILE. `ci` (the default) is Hypothesis' own CI profile
# (derandomized, so that a run is reproducible) with as many cases as keep the HTTP fuzz tests of
# tests/integration/test_ingest_fuzz.py within about 30 s on two cores; `nightly` explores at random with 10,000
# cases. Tests that set max_examples themselves keep their own figure under both.
settings.register_profile(
    "ci", settings.get_profile("ci"), max_examples=400, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "nightly", max_examples=10_000, deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def require_port(part: str, port: int) -> None:
    """Fail (not skip) when a stack server is down: a silently skipped integration test proves nothing."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return
    except OSError:
        pytest.fail(f"{part} is not listening on 127.0.0.1:{port}: run `make stack-up` first", pytrace=False)


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def demo_env() -> dict[str, str]:
    return dict(DEMO_ENV)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    port = int(DEMO_ENV["WA_KAFKA_PORT"])
    require_port("Kafka", port)
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
def s3_client() -> S3Client:
    port = int(DEMO_ENV["WA_S3_PORT"])
    require_port("SeaweedFS (S3)", port)
    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{port}",
        aws_access_key_id=DEMO_ENV["WA_S3_ACCESS_KEY"],
        aws_secret_access_key=DEMO_ENV["WA_S3_SECRET_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="session")
def pg_dsn() -> str:
    port = int(DEMO_ENV["WA_PG_PORT"])
    require_port("PostgreSQL", port)
    return (
        f"postgresql://{DEMO_ENV['WA_PG_USER']}:{DEMO_ENV['WA_PG_PASSWORD']}"
        f"@127.0.0.1:{port}/{DEMO_ENV['WA_PG_DATABASE']}"
    )


@pytest.fixture(scope="session")
async def migrated(pg_dsn: str) -> None:
    """The schema migrated by its owner, as `wa-archive migrate` does before the services start (they may not)."""
    await migrate_dsn(pg_dsn)


@pytest.fixture(scope="session")
async def pg_pool(pg_dsn: str, migrated: None) -> AsyncIterator[asyncpg.Pool]:
    """The owner's pool: the fixtures' set-up and clean-up; the code under test connects as its service's role."""
    pool = await connect_pool(pg_dsn, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()


@pytest.fixture(scope="session")
def prometheus_url() -> str:
    port = int(DEMO_ENV["WA_PROMETHEUS_PORT"])
    require_port("Prometheus", port)
    return f"http://127.0.0.1:{port}"


@pytest.fixture(scope="session")
def keycloak() -> Keycloak:
    """The local identity provider (stack.sh part keycloak) and the demo realm's published secrets."""
    require_port("Keycloak", int(DEMO_ENV["WA_KEYCLOAK_PORT"]))
    return Keycloak.from_env(DEMO_ENV)


@pytest.fixture(scope="session")
async def keycloak_admin(keycloak: Keycloak) -> AsyncIterator[KeycloakAdmin]:
    """Keycloak's admin API on the demo realm: for a test that changes a person, best one of its own
    (tests.helpers.keycloak.temporary_user), so that the demo people stay as the realm file says."""
    async with httpx.AsyncClient(timeout=30) as http:
        yield KeycloakAdmin(http, keycloak)


@pytest_asyncio.fixture(autouse=True, loop_scope="session")
async def _no_silent_background_failure() -> AsyncIterator[None]:
    """Fail a test when a background task of the event loop died with an exception nobody awaited."""
    loop = asyncio.get_running_loop()
    failures: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: failures.append(context))
    try:
        yield
    finally:
        loop.set_exception_handler(previous)
    if failures:
        details = "; ".join(f"{c.get('message')}: {c.get('exception')!r}" for c in failures)
        pytest.fail(f"a background task failed silently during the test: {details}", pytrace=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--scale",
        type=int,
        default=int(os.environ.get("WA_E2E_SCALE", "50000")),
        help="events per fault scenario of tests/e2e/test_faults_under_load.py (e.g. 1000000 locally)",
    )
