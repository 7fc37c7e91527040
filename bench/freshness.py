"""End-to-end freshness: how long from Meta's webhook to durable in the archive, at a steady rate.

The three services run as processes against the real stack; the load generator (services/tools/loadgen.py) sends
unique signed webhooks at ``--rate`` events/s for ``--seconds``, retrying non-2xx as Meta does. An event is
durable when its batch object is in S3 and its index row is committed (``archive_objects.written_at``); it was
received when ingest stamped it (``received_at``), so webhook → durable = written_at - received_at, read back from
PostgreSQL for every event of the run. Also printed: ingest's answer latency as the sender saw it and the RSS of
every service, sampled every ``--sample-s`` seconds.

``--soak`` runs 30 minutes at 1,000 events/s and reports RSS over time per service (growth = last - first sample
after the first minute).

    python -m bench.freshness [--rate 1000 --seconds 60] [--soak]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import orjson

from bench.common import demo_env, ensure_stack, rss_mb, start_module, wait_http, write_result
from devtools.broker import committed_offsets, create_topic, end_offsets
from devtools.serving import free_port
from services.tools.loadgen import LoadReport, Tenant, send_load, synthetic_deliveries

PARTITIONS = 6
CHUNK_S = 30  # deliveries are generated and sent 30 s at a time, so a soak holds little in memory


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))] if ordered else float("nan")


async def sample_rss(pids: dict[str, int], every_s: float, series: dict[str, list[tuple[float, float]]]) -> None:
    started = time.monotonic()
    while True:
        for name, pid in pids.items():
            series[name].append((round(time.monotonic() - started, 1), round(rss_mb(pid), 1)))
        await asyncio.sleep(every_s)


async def run(rate: float, seconds: int, sample_s: float) -> dict[str, Any]:
    env = demo_env()
    bootstrap = f"127.0.0.1:{env['WA_KAFKA_PORT']}"
    topic = await create_topic(bootstrap, partitions=PARTITIONS, prefix="bench-fresh")
    group, prefix = f"bench-fresh-{uuid.uuid4().hex[:8]}", f"bench/fresh-{uuid.uuid4().hex[:8]}"
    ports = {"ingest": free_port(), "archiver": free_port(), "retention": free_port()}
    service_env = {
        **env,
        "WA_INGEST_KAFKA__EVENTS_TOPIC": topic,
        "WA_INGEST_PORT": str(ports["ingest"]),
        "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_GROUP_ID": group,
        "WA_ARCHIVER_S3__PREFIX": prefix,
        "WA_ARCHIVER_PORT": str(ports["archiver"]),
        "WA_RETENTION_PORT": str(ports["retention"]),
        "WA_RETENTION_S3__PREFIX": prefix,
    }
    logs = Path("/tmp") / f"bench-freshness-{group}"
    logs.mkdir(parents=True, exist_ok=True)
    processes = {
        name: start_module(f"services.{name}", service_env, logs / f"{name}.log") for name in ("ingest", "archiver")
    }
    processes["retention"] = start_module("services.retention", service_env, logs / "retention.log")
    rss: dict[str, list[tuple[float, float]]] = {name: [] for name in processes}
    tenant = Tenant.fresh(random.Random())
    secret = orjson.loads(env["WA_INGEST_APP_SECRETS"])[0].encode()
    url = f"http://127.0.0.1:{ports['ingest']}/webhooks/whatsapp"
    reports: list[LoadReport] = []
    try:
        for port in ports.values():
            wait_http(f"http://127.0.0.1:{port}/readyz")
        sampler = asyncio.create_task(sample_rss({n: p.pid for n, p in processes.items()}, sample_s, rss))
        started = time.monotonic()
        chunk = 0
        while (remaining := seconds - chunk * CHUNK_S) > 0:
            events = int(rate * min(CHUNK_S, remaining))
            deliveries = list(synthetic_deliveries(events, tenant=tenant, seed=chunk))
            reports.append(await send_load(deliveries, url=url, app_secret=secret, events_per_s=rate))
            chunk += 1
        sent_s = time.monotonic() - started
        for _ in range(600):  # bounded: at most ~5 min to catch up
            if await committed_offsets(bootstrap, group, topic, PARTITIONS) == await end_offsets(
                bootstrap, topic, PARTITIONS
            ):
                break
            await asyncio.sleep(0.5)
        sampler.cancel()
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            process.wait(timeout=120)

    connection = await asyncpg.connect(env["WA_ARCHIVER_PG__DSN"])
    try:
        rows = await connection.fetch(
            """SELECT extract(epoch FROM o.written_at - e.received_at) * 1000 AS ms
               FROM archived_events e JOIN archive_objects o USING (object_key)
               WHERE e.phone_number_id = $1""",
            tenant.phone_number_id,
        )
    finally:
        await connection.close()
    durable_ms = [float(r["ms"]) for r in rows]
    acknowledged = set().union(*(r.acknowledged_ids for r in reports))
    answer_ms = [ms for r in reports for ms in r.latencies_ms]
    return {
        "rate_events_per_s": rate,
        "seconds": seconds,
        "events_sent": sum(r.events for r in reports),
        "webhooks_sent": sum(r.deliveries for r in reports),
        "achieved_events_per_s": round(sum(r.events for r in reports) / sent_s),
        "acknowledged_events": len(acknowledged),
        "archived_events": len(durable_ms),
        "lost": len(acknowledged) - len(durable_ms),
        "non_2xx_answers": sum(n for r in reports for status, n in r.answers.items() if not 200 <= status < 300),
        "webhook_to_durable_ms": {
            "p50": round(percentile(durable_ms, 0.5), 1),
            "p99": round(percentile(durable_ms, 0.99), 1),
            "max": round(max(durable_ms, default=float("nan")), 1),
            "mean": round(statistics.fmean(durable_ms), 1) if durable_ms else None,
        },
        "ingest_answer_ms": {
            "p50": round(percentile(answer_ms, 0.5), 2),
            "p99": round(percentile(answer_ms, 0.99), 2),
        },
        "rss_mb": {name: summarise_rss(series) for name, series in rss.items()},
        "rss_series_mb": rss,
    }


def summarise_rss(series: list[tuple[float, float]]) -> dict[str, float]:
    """First sample after the warm-up minute (or the first), last, peak and growth between them."""
    if not series:
        return {}
    settled = [value for at, value in series if at >= 60] or [series[0][1]]
    return {
        "first": settled[0],
        "last": series[-1][1],
        "peak": max(value for _, value in series),
        "growth": round(series[-1][1] - settled[0], 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--sample-s", type=float, default=5)
    parser.add_argument("--soak", action="store_true", help="30 minutes at 1,000 events/s, RSS over time")
    args = parser.parse_args()
    ensure_stack()
    if args.soak:
        figures = asyncio.run(run(1000, 30 * 60, 30))
        write_result("soak", figures)
    else:
        write_result("freshness", asyncio.run(run(args.rate, args.seconds, args.sample_s)))


if __name__ == "__main__":
    main()
