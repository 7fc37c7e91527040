"""KEK retirement: how fast ``wa-archive keys rewrap`` moves every subject key under a new KEK, and its CPU per key.

``--keys`` subject keys are created through the keyring (wrapped by KEK A, as archivers make them) in a PostgreSQL
schema of the benchmark's own (a rewrap walks every key of its database: the shared schema's keys must stay under
the demo KEK), then rewrapped A → B, B → A, … once per ``--batch-sizes`` entry, each run timed alone. Every run
ends with every key under its target (checked), and a sample of keys unwraps with the target KEK alone.

Figures per run: keys/s, the benchmark process's CPU per key (time.process_time: unwrap + wrap + asyncpg), and
from /proc (bench.common.CpuMeter) PostgreSQL's CPU per key and the whole machine's.

    python -m bench.rewrap [--keys 100000] [--batch-sizes 1000,100]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid
from typing import Any

import asyncpg

from bench.common import CpuMeter, demo_env, ensure_stack, write_result
from services.core.crypto import DekCache, LocalKek
from services.core.kek_retirement import RewrapReport, rewrap_keys
from services.core.keyring import Keyring
from services.core.schema import connect_pool, migrate_dsn

A, B = "bench-kek-a", "bench-kek-b"
KEYS = {A: os.urandom(32), B: os.urandom(32)}
CREATE_CHUNK = 5000


async def create_keys(pool: asyncpg.Pool, count: int) -> float:
    """``count`` subject keys under A, made as the archiver makes them; returns keys created per second."""
    keyring = Keyring(pool, LocalKek({A: KEYS[A]}, A), DekCache(CREATE_CHUNK))
    refs = [uuid.uuid4().hex * 2 for _ in range(count)]  # 64 hex digits, as a pseudonym
    started = time.monotonic()
    for start in range(0, count, CREATE_CHUNK):
        await keyring.keys_for_writing(refs[start : start + CREATE_CHUNK])
    return count / (time.monotonic() - started)


async def check_readable(pool: asyncpg.Pool, kek_id: str, count: int) -> None:
    rows = await pool.fetch("SELECT kek_id, count(*) AS n FROM subject_keys GROUP BY kek_id")
    counts = {row["kek_id"]: row["n"] for row in rows}
    if counts != {kek_id: count}:
        raise SystemExit(f"after the rewrap to {kek_id}: keys per KEK {counts}, expected {{{kek_id!r}: {count}}}")
    alone = Keyring(pool, LocalKek({kek_id: KEYS[kek_id]}, kek_id), DekCache(1000))
    sample = "SELECT subject_ref, dek_id::text AS dek_id FROM subject_keys ORDER BY random() LIMIT 200"
    for row in await pool.fetch(sample):
        if await alone.key_for_reading(row["subject_ref"], row["dek_id"]) is None:
            raise SystemExit("a rewrapped key could not be read")


async def measure(pool: asyncpg.Pool, to_kek_id: str, count: int, batch_size: int) -> dict[str, Any]:
    keyring = Keyring(pool, LocalKek(KEYS, to_kek_id), DekCache(1000))
    meter = CpuMeter({"rewrap": os.getpid()})
    cpu_started = time.process_time()
    started = time.monotonic()
    report = await rewrap_keys(keyring, RewrapReport(to_kek_id=to_kek_id), batch_size=batch_size)
    elapsed = time.monotonic() - started
    process_cpu = time.process_time() - cpu_started
    meter.stop()
    if report.rewrapped != count or report.remaining:
        raise SystemExit(f"rewrapped {report.rewrapped} of {count} keys, {report.remaining} left")
    await check_readable(pool, to_kek_id, count)
    cpu = meter.per_unit(count)
    return {
        "batch_size": batch_size,
        "to_kek_id": to_kek_id,
        "seconds": round(elapsed, 2),
        "keys_per_s": round(count / elapsed),
        "process_cpu_us_per_key": round(process_cpu / count * 1e6, 1),
        "postgres_cpu_us_per_key": cpu["cpu_us_per_unit"]["postgres"],
        "machine_cpu_us_per_key": cpu["machine_cpu_us_per_unit"],
        "batches": report.batches,
        "cpu": cpu,
    }


async def run(count: int, batch_sizes: list[int]) -> dict[str, Any]:
    env = demo_env()
    schema = f"bench_rewrap_{uuid.uuid4().hex[:8]}"
    # A scratch schema of the owner's, migrated like the real one; the bench creates and rewraps keys in it (the
    # archiver's work and retention's), so it connects as the owner rather than as either role.
    admin = await asyncpg.connect(env["WA_MIGRATOR_PG__DSN"])
    await admin.execute(f"CREATE SCHEMA {schema}")
    owner = f"{env['WA_MIGRATOR_PG__DSN']}?search_path={schema}"
    await migrate_dsn(owner)
    pool = await connect_pool(owner, min_size=1, max_size=2)
    try:
        created_per_s = await create_keys(pool, count)
        await pool.execute("VACUUM ANALYZE subject_keys")
        runs = []
        target = B
        for batch_size in batch_sizes:
            runs.append(await measure(pool, target, count, batch_size))
            rate = runs[-1]["keys_per_s"]
            print(f"rewrap of {count:,} keys in batches of {batch_size:,}: {rate:,} keys/s", flush=True)
            target = A if target == B else B
        size = await pool.fetchval("SELECT pg_total_relation_size('subject_keys')")
    finally:
        await pool.close()
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    main_run = runs[0]
    return {
        "keys": count,
        "keys_created_per_s": round(created_per_s),
        "subject_keys_bytes_per_key": round(int(size) / count),
        # The first run, at the CLI's default batch size, is the headline; the others show what the size changes.
        "rewrap_keys_per_s": main_run["keys_per_s"],
        "rewrap_process_cpu_us_per_key": main_run["process_cpu_us_per_key"],
        "rewrap_postgres_cpu_us_per_key": main_run["postgres_cpu_us_per_key"],
        "rewrap_machine_cpu_us_per_key": main_run["machine_cpu_us_per_key"],
        "runs": runs,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument(
        "--batch-sizes", default="1000,100", help="comma-separated; the first is the headline (the CLI's default)"
    )
    args = parser.parse_args()
    ensure_stack()
    sizes = [int(size) for size in args.batch_sizes.split(",")]
    write_result("rewrap", asyncio.run(run(args.keys, sizes)))


if __name__ == "__main__":
    main()
