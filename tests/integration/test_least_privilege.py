"""Least privilege, proven on the real servers (DESIGN.md §1.8): each service's PostgreSQL role and S3 identity
may do what its code does and is refused the rest.

- The grants of every table this build's migrations create, per role, are exactly the matrix below (migrations
  applied from scratch in a schema of their own, so the migration files are what is checked, not the history of
  the shared database). A new table without its row here fails the test: grant in its migration, then add it.
- Each role is refused, on the live schema, what it must not do: the audit log's UPDATE, DELETE, TRUNCATE and its
  triggers (no service owns it), the console's writes to the keys, any DDL. Every statement runs in a transaction
  that is rolled back, so an unexpected success changes nothing for the other tests.
- ingest has no database role and no S3 identity at all; only the owner can run `wa-archive migrate`.
- S3: the console reads and may neither write nor delete; the archiver writes and may not read; retention reads,
  lists and deletes every version of an object.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import asyncpg
import boto3
import pytest
import yaml
from botocore.client import Config
from botocore.exceptions import ClientError
from mypy_boto3_s3 import S3Client

from devtools import pipeline
from devtools.samples import REPO_ROOT
from services.core.bucket import ArchiveBucket
from services.core.db import Connection
from services.core.schema import SCHEMA_MIGRATIONS_DDL, migration_files
from services.ingest.settings import IngestSettings

pytestmark = pytest.mark.integration

SERVICES = ("ARCHIVER", "RETENTION", "CONSOLE")
ROLES = {"ARCHIVER": "wa_archiver", "RETENTION": "wa_retention", "CONSOLE": "wa_console"}

# What each role may do to each table (S select, I insert, U update, D delete); absent: nothing. The same as
# services/core/migrations/0017_roles.sql, stated a second time on purpose.
GRANTS: dict[str, dict[str, str]] = {
    "schema_migrations": {"wa_archiver": "S", "wa_retention": "S", "wa_console": "S"},
    "subject_keys": {"wa_archiver": "SID", "wa_retention": "SD", "wa_console": "SD"},
    "shredded_keys": {"wa_archiver": "S", "wa_retention": "SI", "wa_console": "SI"},
    "key_copy_members": {"wa_archiver": "SI", "wa_retention": "SID", "wa_console": "S"},
    "erased_subjects": {"wa_archiver": "S", "wa_retention": "SIU", "wa_console": "SIU"},
    "erased_events": {"wa_archiver": "SI", "wa_retention": "SI"},
    "archive_objects": {"wa_archiver": "SIU", "wa_retention": "SIUD", "wa_console": "SD"},
    "archived_events": {"wa_archiver": "SIU", "wa_retention": "SIUD", "wa_console": "SD"},
    "archived_media": {"wa_archiver": "SIU", "wa_retention": "SIUD", "wa_console": "SD"},
    "subject_aliases": {"wa_archiver": "I", "wa_retention": "SID", "wa_console": "SD"},
    "keyword_index": {"wa_archiver": "SID", "wa_retention": "SID", "wa_console": "SD"},
    "business_numbers": {"wa_archiver": "I", "wa_retention": "SI", "wa_console": "S"},
    "number_holders": {"wa_archiver": "SI", "wa_retention": "SI", "wa_console": "S"},
    "legal_holds": {"wa_retention": "SIU", "wa_console": "SIU"},
    "erasure_requests": {"wa_retention": "SIU", "wa_console": "SIU"},
    "retention_runs": {"wa_retention": "SIU", "wa_console": "SIU"},
    "audit_log": {"wa_archiver": "I", "wa_retention": "SI", "wa_console": "SI"},
    "console_sessions": {"wa_console": "SIUD"},
    "console_signin_throttle": {"wa_console": "SIUD"},
    "archiver_inflight": {"wa_archiver": "SIUD"},
    "media_retry": {"wa_archiver": "SIUD", "wa_retention": "SD"},
    "chain_heads": {"wa_archiver": "SIU", "wa_retention": "SIU"},
    "verify_runs": {"wa_retention": "SIU"},
    "cases": {"wa_retention": "SIU", "wa_console": "SIU"},
    "case_custodians": {"wa_retention": "SIU", "wa_console": "SIU"},
    "case_reviewers": {"wa_retention": "SI", "wa_console": "SI"},
    "case_searches": {"wa_retention": "SI", "wa_console": "SI"},
    "case_tags": {"wa_retention": "SI", "wa_console": "SI"},
    "case_notes": {"wa_retention": "SID", "wa_console": "SID"},
    "export_jobs": {"wa_retention": "SIU", "wa_console": "SI"},
    "approval_requests": {"wa_archiver": "SI", "wa_retention": "SIU", "wa_console": "SIU"},
}
PRIVILEGES = {"S": "SELECT", "I": "INSERT", "U": "UPDATE", "D": "DELETE"}
NEVER = ("TRUNCATE", "REFERENCES", "TRIGGER")


def created_tables() -> set[str]:
    """The tables this build's migrations create (and do not drop), plus the runner's own."""
    created, dropped = {"schema_migrations"}, set()
    for _version, _name, sql in migration_files():
        created |= set(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?(\w+)", sql, flags=re.IGNORECASE))
        dropped |= set(re.findall(r"DROP TABLE (?:IF EXISTS )?(\w+)", sql, flags=re.IGNORECASE))
    return created - dropped


@pytest.fixture
async def scratch(pg_dsn: str) -> AsyncIterator[tuple[asyncpg.Connection, str]]:
    """Every migration applied by the owner in a new schema (as the runner does), dropped afterwards."""
    conn = await asyncpg.connect(pg_dsn)
    schema = f"test_privileges_{uuid.uuid4().hex[:8]}"
    await conn.execute(f"CREATE SCHEMA {schema}; SET search_path = {schema}")
    try:
        await conn.execute(SCHEMA_MIGRATIONS_DDL)
        for _version, _name, sql in migration_files():
            async with conn.transaction():
                await conn.execute(sql)
        yield conn, schema
    finally:
        await conn.execute(f"DROP SCHEMA {schema} CASCADE")
        await conn.close()


async def test_every_table_has_exactly_the_grants_of_the_matrix(scratch: tuple[asyncpg.Connection, str]) -> None:
    conn, schema = scratch
    tables = created_tables()
    assert not tables - set(GRANTS), (
        f"tables without a row in GRANTS (grant in their migration): {tables - set(GRANTS)}"
    )
    assert not set(GRANTS) - tables, f"GRANTS names tables no migration creates: {set(GRANTS) - tables}"
    wrong: list[str] = []
    for table in sorted(tables):
        for role in ROLES.values():
            allowed = {PRIVILEGES[p] for p in GRANTS[table].get(role, "")}
            for privilege in (*PRIVILEGES.values(), *NEVER):
                has = await conn.fetchval(
                    "SELECT has_table_privilege($1, $2, $3)", role, f"{schema}.{table}", privilege
                )
                if has != (privilege in allowed):
                    wrong.append(f"{role} {'has' if has else 'lacks'} {privilege} on {table}")
    assert not wrong, "\n".join(wrong)
    # Column UPDATEs of the keys: the archiver's FOR SHARE and FOR KEY SHARE need one, on created_at; retention's
    # KEK rewrap moves kek_id and wrapped_dek; copied_at is the previous build's mark of a key's copy (kept for a
    # rolling upgrade); no one may change which person or which data key a row is.
    updatable = {
        role: {
            column
            for column in ("subject_ref", "dek_id", "kek_id", "wrapped_dek", "created_at", "copied_at")
            if await conn.fetchval(
                "SELECT has_column_privilege($1, $2, $3, 'UPDATE')", role, f"{schema}.subject_keys", column
            )
        }
        for role in ROLES.values()
    }
    assert updatable == {
        "wa_archiver": {"created_at", "copied_at"},
        "wa_retention": {"kek_id", "wrapped_dek", "copied_at"},
        "wa_console": set(),
    }
    # Writing an audit row takes the next id of its sequence; only the roles that write audit rows may (the archiver:
    # the opening of a held send's approval request).
    sequence = f"{schema}.audit_log_audit_id_seq"
    usage = {
        role: await conn.fetchval("SELECT has_sequence_privilege($1, $2, 'USAGE')", role, sequence)
        for role in ROLES.values()
    }
    assert usage == {"wa_archiver": True, "wa_retention": True, "wa_console": True}
    # The owner of the database owns every table; no service role is a member of it.
    owners = {
        r["tableowner"] for r in await conn.fetch("SELECT tableowner FROM pg_tables WHERE schemaname = $1", schema)
    }
    assert owners == {await conn.fetchval("SELECT current_user")}
    for role in ROLES.values():
        assert not await conn.fetchval("SELECT pg_has_role($1, current_user, 'MEMBER')", role), role


# ---------------------------------------------------------------------------------------------------- refusals


@pytest.fixture
async def as_role(demo_env: dict[str, str], pg_pool: asyncpg.Pool) -> AsyncIterator[dict[str, asyncpg.Connection]]:
    """A connection per service, with its own DSN from demo.env (the schema migrated by ``pg_pool``)."""
    conns = {service: await asyncpg.connect(demo_env[f"WA_{service}_PG__DSN"]) for service in SERVICES}
    try:
        yield conns
    finally:
        for conn in conns.values():
            await conn.close()


async def refused(conn: Connection, statement: str, *args: object) -> str:
    """Run ``statement`` in a transaction that is always rolled back; returns the refusal's message."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(statement, *args)
    except asyncpg.PostgresError as exc:
        return str(exc)
    finally:
        await transaction.rollback()
    raise AssertionError(f"{statement!r} was allowed")


async def allowed(conn: Connection, statement: str, *args: object) -> None:
    """Run ``statement`` in a transaction that is always rolled back; any error fails the test."""
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute(statement, *args)
    finally:
        await transaction.rollback()


@pytest.mark.parametrize("service", SERVICES)
async def test_no_service_may_alter_the_audit_log(as_role: dict[str, asyncpg.Connection], service: str) -> None:
    conn = as_role[service]
    for statement in (
        "UPDATE audit_log SET reason = 'rewritten'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        assert "permission denied for table audit_log" in await refused(conn, statement), statement
    for statement in (
        "DROP TRIGGER audit_log_append_only ON audit_log",
        "ALTER TABLE audit_log DISABLE TRIGGER audit_log_append_only",
        "DROP TABLE audit_log",
    ):
        assert "must be owner of" in await refused(conn, statement), statement
    # No DDL at all: a service cannot create a table or a function to work around its grants.
    assert "permission denied for schema public" in await refused(conn, "CREATE TABLE mine (x int)")
    # And it cannot take the migrator's place.
    assert "permission denied" in await refused(
        conn, "INSERT INTO schema_migrations (version, name) VALUES (9999, 'x')"
    )


async def test_the_owner_cannot_rewrite_or_empty_the_audit_log(pg_pool: asyncpg.Pool) -> None:
    async with pg_pool.acquire() as conn:
        assert "append-only" in await refused(conn, "UPDATE audit_log SET reason = 'rewritten'")
        assert "append-only" in await refused(conn, "DELETE FROM audit_log")
        assert "append-only" in await refused(conn, "TRUNCATE audit_log")


async def test_the_writers_of_audit_rows_may_append(as_role: dict[str, asyncpg.Connection]) -> None:
    statement = "INSERT INTO audit_log (actor, action, details) VALUES ('least-privilege-test', 'test', '{}')"
    # The archiver too: it audits the approval request it opens for a held message (services/archiver/held.py).
    for service in ("RETENTION", "CONSOLE", "ARCHIVER"):
        await allowed(as_role[service], statement)


async def test_only_the_archiver_creates_keys(as_role: dict[str, asyncpg.Connection]) -> None:
    insert = (
        "INSERT INTO subject_keys (subject_ref, dek_id, kek_id, wrapped_dek)"
        " VALUES ($1, gen_random_uuid(), 'test', '\\x00'::bytea)"
    )
    ref = uuid.uuid4().hex
    await allowed(as_role["ARCHIVER"], insert, ref)
    for service in ("CONSOLE", "RETENTION"):
        assert "permission denied for table subject_keys" in await refused(as_role[service], insert, ref), service
    # Only retention rewraps a key (wa-archive keys rewrap), and it cannot make a row another person's or another
    # key; the archiver's UPDATE reaches created_at alone (its FOR SHARE lock).
    rewrap = "UPDATE subject_keys SET kek_id = 'other', wrapped_dek = '\\x00'::bytea WHERE false"
    await allowed(as_role["RETENTION"], rewrap)
    await allowed(as_role["RETENTION"], "SELECT 1 FROM subject_keys WHERE false FOR UPDATE SKIP LOCKED")
    for service in ("ARCHIVER", "CONSOLE"):
        assert "permission denied for table subject_keys" in await refused(as_role[service], rewrap), service
    for service in SERVICES:
        message = await refused(as_role[service], "UPDATE subject_keys SET subject_ref = 'someone else' WHERE false")
        assert "permission denied for table subject_keys" in message, service
    await allowed(as_role["ARCHIVER"], "SELECT 1 FROM subject_keys WHERE false FOR SHARE")


async def test_the_console_writes_sessions_and_decisions_but_not_the_index(
    as_role: dict[str, asyncpg.Connection],
) -> None:
    console = as_role["CONSOLE"]
    await allowed(console, "DELETE FROM console_sessions WHERE false")
    await allowed(console, "UPDATE legal_holds SET released_at = now() WHERE false")
    for statement in (
        "INSERT INTO archived_events (event_id) VALUES ('\\x00'::bytea)",
        "UPDATE archived_events SET expires_at = now() WHERE false",
        "UPDATE archive_objects SET expires_at = now() WHERE false",
        "INSERT INTO erased_events (event_id, subject_ref) VALUES ('\\x00'::bytea, 'x')",
    ):
        assert "permission denied" in await refused(console, statement), statement
    # Its sessions are its own: neither the archiver nor retention can read them.
    for service in ("ARCHIVER", "RETENTION"):
        assert "permission denied" in await refused(as_role[service], "SELECT 1 FROM console_sessions"), service


def test_ingest_holds_no_database_role_and_no_s3_identity(demo_env: dict[str, str]) -> None:
    assert not {"pg", "s3"} & set(IngestSettings.model_fields)
    assert not [name for name in demo_env if name.startswith("WA_INGEST_") and ("PG__" in name or "S3__" in name)]


def test_every_service_has_a_login_of_its_own(demo_env: dict[str, str]) -> None:
    users = {
        service: re.match(r"postgresql://([^:]+):", demo_env[f"WA_{service}_PG__DSN"]).group(1)  # type: ignore[union-attr]
        for service in SERVICES
    }
    assert users == ROLES
    owner = demo_env["WA_PG_USER"]
    assert re.match(rf"postgresql://{owner}:", demo_env["WA_MIGRATOR_PG__DSN"]), "the owner migrates"
    keys = {demo_env[f"WA_{service}_S3__ACCESS_KEY"] for service in SERVICES}
    assert len(keys) == len(SERVICES)
    assert demo_env["WA_S3_ACCESS_KEY"] not in keys, "no service holds the S3 administrator's key"


# ---------------------------------------------------------------------------------------------------- S3


def client_of(demo_env: dict[str, str], service: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=demo_env["WA_ARCHIVER_S3__ENDPOINT_URL"],
        aws_access_key_id=demo_env[f"WA_{service}_S3__ACCESS_KEY"],
        aws_secret_access_key=demo_env[f"WA_{service}_S3__SECRET_KEY"],
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def s3_error(call: object) -> str:
    assert callable(call)
    try:
        call()
    except ClientError as exc:
        return str(exc.response.get("Error", {}).get("Code"))
    raise AssertionError("allowed")


@pytest.fixture
def probe(demo_env: dict[str, str], s3_client: S3Client) -> tuple[str, str]:
    """An object written by the S3 administrator under a fresh test prefix: (bucket, key)."""
    bucket = demo_env["WA_ARCHIVER_S3__BUCKET"]
    key = f"test/privileges-{uuid.uuid4().hex[:8]}/object"
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"probe")
    return bucket, key


def test_the_console_reads_and_may_neither_write_nor_delete(
    demo_env: dict[str, str], s3_client: S3Client, probe: tuple[str, str]
) -> None:
    bucket, key = probe
    console = client_of(demo_env, "CONSOLE")
    assert console.get_object(Bucket=bucket, Key=key)["Body"].read() == b"probe"
    assert console.list_objects_v2(Bucket=bucket, Prefix=key)["KeyCount"] == 1
    assert s3_error(lambda: console.put_object(Bucket=bucket, Key=key, Body=b"rewritten")) == "AccessDenied"
    assert s3_error(lambda: console.delete_object(Bucket=bucket, Key=key)) == "AccessDenied"
    (version,) = s3_client.list_object_versions(Bucket=bucket, Prefix=key)["Versions"]
    answer = console.delete_objects(
        Bucket=bucket, Delete={"Objects": [{"Key": key, "VersionId": version["VersionId"]}], "Quiet": True}
    )
    assert [(e["Key"], e["Code"]) for e in answer.get("Errors", [])] == [(key, "AccessDenied")]
    assert s3_client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"probe", "the object is still there"
    assert s3_error(lambda: console.create_bucket(Bucket=f"console-{uuid.uuid4().hex[:8]}")) == "AccessDenied"
    s3_client.delete_object(Bucket=bucket, Key=key, VersionId=version["VersionId"])


def test_the_archiver_writes_and_may_not_read(
    demo_env: dict[str, str], s3_client: S3Client, probe: tuple[str, str]
) -> None:
    bucket, key = probe
    archiver = client_of(demo_env, "ARCHIVER")
    written = f"{key}-archiver"
    archiver.put_object(Bucket=bucket, Key=written, Body=b"sealed")
    assert s3_client.get_object(Bucket=bucket, Key=written)["Body"].read() == b"sealed"
    assert s3_error(lambda: archiver.get_object(Bucket=bucket, Key=key)) == "AccessDenied"
    assert s3_error(lambda: archiver.list_objects_v2(Bucket=bucket, Prefix=key)) == "AccessDenied"
    work = demo_env["WA_S3_WORK_BUCKET"]
    assert s3_error(lambda: archiver.put_object(Bucket=work, Key=written, Body=b"x")) == "AccessDenied"
    for stored in (key, written):
        for version in s3_client.list_object_versions(Bucket=bucket, Prefix=stored).get("Versions", []):
            s3_client.delete_object(Bucket=bucket, Key=stored, VersionId=version["VersionId"])


async def test_retention_reads_and_deletes_every_version(
    demo_env: dict[str, str], s3_client: S3Client, probe: tuple[str, str]
) -> None:
    bucket, key = probe
    s3_client.put_object(Bucket=bucket, Key=key, Body=b"second version")
    retention = ArchiveBucket(pipeline.s3_settings(demo_env, key.rsplit("/", 1)[0], "RETENTION"))
    assert retention.name == bucket
    assert await retention.get(key) == b"second version"
    gone, refused_keys = await retention.delete_permanently([key])
    assert (gone, refused_keys) == ([key], {})
    assert not s3_client.list_object_versions(Bucket=bucket, Prefix=key).get("Versions")


def test_compose_gives_the_services_the_logins_of_the_native_stack(demo_env: dict[str, str]) -> None:
    """deploy/compose.yaml states the roles and identities inline: they must be demo.env's, or Compose would
    start services that cannot sign in."""
    compose = yaml.safe_load((REPO_ROOT / "deploy" / "compose.yaml").read_text(encoding="utf-8"))
    identities = {i["name"]: i for i in json.loads(compose["configs"]["seaweedfs-identities"]["content"])["identities"]}
    for service in SERVICES:
        (credentials,) = identities[f"wa-{service.lower()}"]["credentials"]
        assert credentials == {
            "accessKey": demo_env[f"WA_{service}_S3__ACCESS_KEY"],
            "secretKey": demo_env[f"WA_{service}_S3__SECRET_KEY"],
        }
    roles = compose["configs"]["postgres-roles"]["content"]
    for service in SERVICES:
        user, password = re.match(r"postgresql://([^:]+):([^@]+)@", demo_env[f"WA_{service}_PG__DSN"]).groups()  # type: ignore[union-attr]
        assert f"CREATE ROLE {user} LOGIN PASSWORD '{password}';" in roles
    for name in ("archiver", "retention"):
        dsn = compose["services"][name]["environment"][f"WA_{name.upper()}_PG__DSN"]
        assert dsn.startswith(f"postgresql://{ROLES[name.upper()]}:"), name
    assert compose["services"]["migrate"]["command"] == ["migrate"]


@pytest.mark.parametrize("service", [None, *SERVICES])
def test_only_the_owner_can_run_wa_archive_migrate(
    demo_env: dict[str, str], service: str | None, migrated: None
) -> None:
    dsn = demo_env["WA_MIGRATOR_PG__DSN"] if service is None else demo_env[f"WA_{service}_PG__DSN"]
    env = {**os.environ, **demo_env, "WA_MIGRATOR_PG__DSN": dsn}
    done = subprocess.run(
        [sys.executable, "-m", "services.cli", "migrate"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if service is None:
        assert (done.returncode, done.stdout.strip()) == (0, "applied 0 migrations"), done.stderr
    else:
        assert done.returncode == 2, done.stderr
        assert "refused: permission denied" in done.stderr


def test_retention_writes_the_work_bucket_and_the_console_only_reads_it(
    demo_env: dict[str, str], s3_client: S3Client
) -> None:
    """The export jobs' files (services/evidence/jobs.py): retention writes and deletes them, the console streams
    them to the operator and may neither write nor delete. (The running SeaweedFS loads stack.sh's identities
    when it starts: after a change of them, `make stack-up` restarts it.)"""
    work = demo_env["WA_S3_WORK_BUCKET"]
    key = f"exports/{uuid.uuid4()}/probe.json"
    retention, console = client_of(demo_env, "RETENTION"), client_of(demo_env, "CONSOLE")
    retention.put_object(Bucket=work, Key=key, Body=b"export")
    assert console.get_object(Bucket=work, Key=key)["Body"].read() == b"export"
    assert s3_error(lambda: console.put_object(Bucket=work, Key=key, Body=b"rewritten")) == "AccessDenied"
    assert s3_error(lambda: console.delete_object(Bucket=work, Key=key)) == "AccessDenied"
    retention.delete_object(Bucket=work, Key=key)
    assert s3_client.list_objects_v2(Bucket=work, Prefix=key).get("KeyCount", 0) == 0
