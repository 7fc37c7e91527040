"""The archiver's CPU per event with the hash chain (issue #25: at most +3 %) against the same archiver without it.

The chain costs, per sealed batch, one SHA-256 of the batch object's bytes, a row lock and update of the stream's
head in the index transaction, and one small PUT (the entry): the cost grows with batches, not with events. Both
runs archive the same traffic (bench/archiver.py: N one-event POSTs) and report the archiver's own CPU per event;
the runs alternate (with, without, with, without …) so that a drift of the machine hits both. The archiver writes
into a PostgreSQL schema of this benchmark's own, migrated by this build, so that the shared schema's state (other
builds migrate it) does not matter.

    python -m bench.chain_cost [--events 50000] [--rounds 2]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import uuid
from typing import Any

import asyncpg

from bench.archiver import alternate
from bench.common import demo_env, ensure_stack, write_result
from services.core.schema import migrate_dsn


async def run(events: int, rounds: int) -> dict[str, Any]:
    env = demo_env()
    owner = env["WA_MIGRATOR_PG__DSN"]
    schema = f"bench_chain_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(owner)
    await admin.execute(f"CREATE SCHEMA {schema}")
    before = os.environ.get("WA_ARCHIVER_PG__DSN")
    try:
        await migrate_dsn(f"{owner}?search_path={schema}")
        os.environ["WA_ARCHIVER_PG__DSN"] = f"{env['WA_ARCHIVER_PG__DSN']}?search_path={schema}"
        figures = await alternate(events, rounds, "bench.archiver_without_chain")
        entries = await admin.fetchval(f"SELECT coalesce(sum(seq + 1), 0) FROM {schema}.chain_heads")  # noqa: S608
    finally:
        if before is None:
            os.environ.pop("WA_ARCHIVER_PG__DSN", None)
        else:
            os.environ["WA_ARCHIVER_PG__DSN"] = before
        await admin.execute(f"DROP SCHEMA {schema} CASCADE")
        await admin.close()
    return {
        "events": events,
        "rounds": rounds,
        "chain_entries_written": int(entries),
        "archiver_cpu_us_per_event_with_chain": figures["with"],
        "archiver_cpu_us_per_event_without_chain": figures["without"],
        "chain_cpu_overhead_percent": figures["overhead_percent"],
        "targets": {"chain_cpu_overhead_percent": 3},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    ensure_stack()
    write_result("chain_cost", asyncio.run(run(args.events, args.rounds)))


if __name__ == "__main__":
    main()
