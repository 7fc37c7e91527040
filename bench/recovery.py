"""`wa-archive recover` after a database loss: N archived events of N/10 people, the database lost, then recovered.

An archiver process archives N realistic webhook POSTs (one event each, N/10 people, so N/10 data keys and key
copies) into a PostgreSQL schema and a bucket prefix of this run's own. Then the schema is dropped and migrated again
(an empty database, as after a loss with no usable backup: the worst case; a restored backup leaves less to do)
and `wa-archive recover` runs as the schema's owner, as an operator runs it.

Reports, per step: the migration of the empty schema, and recover's own steps (erasures, keys, index, copies) from
its JSON report; recover's wall time and peak RSS (getrusage of the child); and the RTO this gives for reads to be
served again (migrate + recover; the restore of PostgreSQL itself is the drill's figure, docs/OPERATIONS.md). The
target size is 1,000,000 events / 100,000 people; on a small machine run fewer and extrapolate (recover's time is
linear in objects and keys: it lists and reads every object once and every key copy once).

    python -m bench.recovery [--events 1000000] [--partitions 6]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from bench.archiver import committed, prefill, realistic_bodies
from bench.common import demo_env, ensure_stack, start_module, wait_http, write_result
from devtools import pipeline
from devtools.broker import create_topic
from devtools.samples import REPO_ROOT
from devtools.serving import free_port
from services.core.schema import migrate_dsn

ARCHIVE_DEADLINE_S = 3600


def owner_dsn(env: dict[str, str]) -> str:
    return f"postgresql://{env['WA_PG_USER']}:{env['WA_PG_PASSWORD']}@127.0.0.1:{env['WA_PG_PORT']}/{env['WA_PG_DATABASE']}"


def in_schema(dsn: str, schema: str) -> str:
    return f"{dsn}?search_path={schema}"


async def rows(conn: asyncpg.Connection, schema: str, table: str) -> int:
    count: int = await conn.fetchval(f"SELECT count(*) FROM {schema}.{table}")  # noqa: S608  # names made here
    return count


async def archive(env: dict[str, str], schema: str, prefix: str, events: int, partitions: int) -> float:
    """Archive ``events`` POSTs of ``events // 10`` people into ``schema`` and ``prefix``; returns the seconds."""
    bootstrap = f"127.0.0.1:{env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=partitions, prefix="bench-recovery")
    dlq = await create_topic(bootstrap, partitions=1, prefix="bench-recovery-dlq")
    bodies = realistic_bodies(events, people=max(1, events // 10))
    total = len(pipeline.events_of(bodies))
    await prefill(bootstrap, topic, bodies)
    group, port = f"bench-{uuid.uuid4().hex[:8]}", free_port()
    process = start_module(
        "services.archiver",
        {
            **env,
            "WA_ARCHIVER_PG__DSN": in_schema(env["WA_ARCHIVER_PG__DSN"], schema),
            "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
            "WA_ARCHIVER_KAFKA__DLQ_TOPIC": dlq,
            "WA_ARCHIVER_GROUP_ID": group,
            "WA_ARCHIVER_S3__PREFIX": prefix,
            "WA_ARCHIVER_PORT": str(port),
            "WA_ARCHIVER_LOG_LEVEL": "WARNING",
        },
        Path("/tmp") / f"bench-recovery-{group}.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        started = time.monotonic()
        while await committed(bootstrap, group, topic, partitions) < total:
            if time.monotonic() - started > ARCHIVE_DEADLINE_S:
                raise RuntimeError(f"the archiver did not archive {total} events within {ARCHIVE_DEADLINE_S}s")
            await asyncio.sleep(0.5)
        return time.monotonic() - started
    finally:
        process.terminate()
        process.wait(timeout=120)


def run_recover(env: dict[str, str], schema: str, prefix: str) -> tuple[dict[str, Any], float, float]:
    """`wa-archive recover` as a child process: its report, wall seconds and peak RSS (MiB)."""
    child_env = {
        **os.environ,
        **env,
        "WA_RETENTION_PG__DSN": in_schema(env["WA_RETENTION_PG__DSN"], schema),
        "WA_MIGRATOR_PG__DSN": in_schema(owner_dsn(env), schema),
        "WA_RETENTION_S3__PREFIX": prefix,
    }
    started = time.monotonic()
    process = subprocess.Popen(
        [sys.executable, "-m", "services.cli", "recover"],
        cwd=REPO_ROOT,
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    assert process.stdout is not None
    out = process.stdout.read()
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.monotonic() - started
    if process.returncode != 0:
        raise RuntimeError(f"wa-archive recover exited {process.returncode}")
    return json.loads(out), elapsed, usage.ru_maxrss / 1024


async def run(events: int, partitions: int) -> dict[str, Any]:
    env = demo_env()
    schema, prefix = f"bench_recover_{uuid.uuid4().hex[:8]}", f"bench/recover-{uuid.uuid4().hex[:8]}"
    owner = owner_dsn(env)
    admin = await asyncpg.connect(owner)
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        await migrate_dsn(in_schema(owner, schema))
        archive_s = await archive(env, schema, prefix, events, partitions)
        keys = await rows(admin, schema, "subject_keys")
        indexed = await rows(admin, schema, "archived_events")

        # The loss: every table gone; an empty schema at today's migration.
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.execute(f"CREATE SCHEMA {schema}")
        started = time.monotonic()
        await migrate_dsn(in_schema(owner, schema))
        migrate_s = time.monotonic() - started

        report, recover_s, peak_mb = run_recover(env, schema, prefix)
        restored_keys = await rows(admin, schema, "subject_keys")
        reindexed = await rows(admin, schema, "archived_events")
    finally:
        await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await admin.close()
    assert restored_keys == keys, f"{restored_keys} of {keys} keys restored"
    assert reindexed == indexed, f"{reindexed} of {indexed} index rows rebuilt"
    rto_s = migrate_s + recover_s
    per_million = rto_s * 1_000_000 / events
    return {
        "events": events,
        "people": events // 10,
        "keys": keys,
        "index_rows": indexed,
        "archive_seconds": round(archive_s, 1),
        "migrate_empty_schema_seconds": round(migrate_s, 2),
        "recover_seconds": round(recover_s, 1),
        "recover_steps_seconds": report.get("seconds"),
        "recover_peak_rss_mb": round(peak_mb, 1),
        "keys_restored": report.get("keys_restored"),
        "rto_seconds": round(rto_s, 1),
        # Linear in objects and keys (each listed and read once): the target size, extrapolated from this run.
        "rto_seconds_per_million_events_extrapolated": round(per_million, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=6)
    args = parser.parse_args()
    ensure_stack()
    write_result("recovery", asyncio.run(run(args.events, args.partitions)))


if __name__ == "__main__":
    main()
