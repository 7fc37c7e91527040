"""Scale-out: two archiver processes in one consumer group share a topic under load and survive rebalances.

ingest and two ``python -m services.archiver`` processes (same group id) run against a 6-partition topic of their
own while a paced stream of a few thousand unique signed webhooks from 16 business numbers goes through ingest
over HTTP. Mid-run one archiver is killed with SIGKILL and restarted 2 s later (the group rebalances once the dead
member's session has expired, handing out again what it had consumed but not committed), later the other is
stopped with SIGTERM (it drains, commits and leaves: a second rebalance) and restarted (a third).

Once the group has caught up: every acknowledged event id is in ``archived_events`` (nothing lost, nothing extra),
every offset of every partition is inside an archived object and committed, each message is indexed once and
every indexed record decrypts to its event (what a reader sees holds no duplicate); and both processes really
consumed: each archived events before its fault and each logged partition assignments.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, end_offsets
from devtools.serving import free_port
from services.actions.access import open_access
from services.core.events import Event
from services.core.reader import RecordLocation
from services.tools.loadgen import LoadReport, SyntheticWebhook, Tenant, send_load, synthetic_deliveries
from tests.helpers.support import ServiceProcess

pytestmark = pytest.mark.e2e

PARTITIONS = 6
EVENTS = int(os.environ.get("WA_E2E_SCALE_OUT_EVENTS", "8000"))  # ≈3,000 webhooks (2.6 events per webhook)
RATE = float(os.environ.get("WA_E2E_SCALE_OUT_RATE", "300"))  # events/s: the load lasts ≈27 s
# Business numbers sending: ingest keys a webhook by its number, so a single number would fill one partition.
TENANTS = 16
ASSIGNED = re.compile(r"assigned partitions \[([0-9, ]*)\]")


@dataclass
class Group:
    ingest: ServiceProcess
    archivers: tuple[ServiceProcess, ServiceProcess]
    topic: str
    group: str
    prefix: str
    url: str
    secret: bytes
    demo_env: dict[str, str]


@pytest.fixture
async def group(demo_env: dict[str, str], kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Group]:
    """ingest and two archivers of one consumer group, on free ports (never the ones `make run` and the stack's
    Prometheus use), with a topic, a dead-letter topic, a group and an object prefix of their own."""
    topic = await create_topic(kafka_bootstrap, partitions=PARTITIONS, prefix="e2e-scale")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="dlq")
    name, prefix = f"e2e-scale-{uuid.uuid4().hex[:8]}", f"test/e2e-scale-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **demo_env,
        "WA_INGEST_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_KAFKA__DLQ_TOPIC": dlq,
        "WA_ARCHIVER_GROUP_ID": name,
        "WA_ARCHIVER_S3__PREFIX": prefix,
        "WA_ARCHIVER_FLUSH__MAX_AGE_S": "0.5",
        "WA_ARCHIVER_RETRY_MAX_S": "1",
        "WA_ARCHIVER_LOG_LEVEL": "INFO",  # the "assigned partitions" lines tell who consumed what
        "WA_LOG_FORMAT": "text",
    }
    ingest_port = free_port()
    ingest = ServiceProcess(
        "services.ingest", ingest_port, {**env, "WA_INGEST_PORT": str(ingest_port)}, tmp_path / "ingest.log"
    )
    archivers = tuple(
        ServiceProcess(
            "services.archiver", port, {**env, "WA_ARCHIVER_PORT": str(port)}, tmp_path / f"archiver-{n}.log"
        )
        for n, port in enumerate((free_port(), free_port()), start=1)
    )
    assert len(archivers) == 2
    secret = orjson.loads(demo_env["WA_INGEST_APP_SECRETS"])[0].encode()
    for service in (ingest, *archivers):
        service.start()
    try:
        for service in (ingest, *archivers):
            await service.wait_ready()
        yield Group(
            ingest,
            (archivers[0], archivers[1]),
            topic,
            name,
            prefix,
            f"http://127.0.0.1:{ingest_port}/webhooks/whatsapp",
            secret,
            demo_env,
        )
    finally:
        for service in (ingest, *archivers):
            if service.process is not None and service.process.poll() is None:
                service.stop()


async def archived_by(service: ServiceProcess) -> float:
    """wa_archiver_events_archived_total of the running process (all kinds); 0 when it does not answer."""
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            text = (await client.get(f"http://127.0.0.1:{service.port}/metrics")).text
    except httpx.HTTPError:
        return 0.0
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "wa_archiver_events_archived_total"
    )


async def wait_archiving(service: ServiceProcess, timeout_s: float = 20) -> float:
    """Until the process has archived something (bounded); returns its count."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (count := await archived_by(service)) > 0:
            return count
        await asyncio.sleep(0.25)
    raise AssertionError(f"{service.log.name} archived nothing within {timeout_s}s: {service.log_tail()}")


def assignments(service: ServiceProcess) -> list[list[int]]:
    """Every partition assignment the process logged (all its incarnations: the log is appended to)."""
    text = service.log.read_text(errors="replace")
    return [[int(p) for p in match.split(",") if p.strip()] for match in ASSIGNED.findall(text)]


async def faults(grp: Group) -> dict[str, float]:
    """kill -9 of archiver 1 and its restart, then SIGTERM of archiver 2 and its restart, while the load runs."""
    first, second = grp.archivers
    seen = {"1 before kill -9": await wait_archiving(first), "2 before SIGTERM": 0.0}
    await asyncio.sleep(1)
    first.kill()  # no goodbye: the group notices when its session expires
    await asyncio.sleep(2)
    first.start()  # joins again: rebalance 1 completes once the dead member's session has expired
    await first.wait_ready()
    await asyncio.sleep(5)
    seen["2 before SIGTERM"] = await wait_archiving(second)
    assert second.stop() == 0, second.log_tail()  # drains, commits and leaves the group: rebalance 2
    await asyncio.sleep(1)
    second.start()  # rebalance 3
    await second.wait_ready()
    return seen


def interleaved(tenants: Sequence[Tenant], events: int, rng: random.Random) -> list[SyntheticWebhook]:
    """The webhooks of several business numbers, ``events`` in all, taking turns as concurrent senders do."""
    streams = [
        list(synthetic_deliveries(events // len(tenants), tenant=t, seed=rng.randrange(1 << 30))) for t in tenants
    ]
    mixed: list[SyntheticWebhook] = []
    for turn in range(max(len(s) for s in streams)):
        mixed.extend(s[turn] for s in streams if turn < len(s))
    return mixed


async def wait_caught_up(grp: Group, bootstrap: str, pool: asyncpg.Pool, numbers: list[str], expected: int) -> float:
    """Seconds until every acknowledged event is indexed and the group committed the whole topic (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < 60:
        archived = await pool.fetchval(
            "SELECT count(*) FROM archived_events WHERE phone_number_id = ANY($1::text[])", numbers
        )
        if archived >= expected:
            committed = await committed_offsets(bootstrap, grp.group, grp.topic, PARTITIONS)
            if committed == await end_offsets(bootstrap, grp.topic, PARTITIONS):
                return time.monotonic() - started
        await asyncio.sleep(0.5)
    logs = "\n".join(f"--- {a.log.name}\n{a.log_tail(1500)}" for a in grp.archivers)
    raise AssertionError(f"the group did not catch up within 60s:\n{logs}")


def uncovered(ranges: list[tuple[int, int]], end: int) -> list[int]:
    """The offsets in [0, end) that no [first, last] range holds (at most the first 10)."""
    missing: list[int] = []
    reached = 0
    for first, last in sorted(ranges):
        missing.extend(range(reached, min(first, end)))
        reached = max(reached, last + 1)
    missing.extend(range(reached, end))
    return missing[:10]


async def assert_exactly_once(
    grp: Group, bootstrap: str, pool: asyncpg.Pool, numbers: list[str], report: LoadReport
) -> str:
    rows = await pool.fetch(
        "SELECT encode(event_id, 'hex') AS event_id, kind, encode(message_ref, 'hex') AS message_ref, object_key,"
        " record_index FROM archived_events WHERE phone_number_id = ANY($1::text[])",
        numbers,
    )
    archived = [r["event_id"] for r in rows]
    assert len(archived) == len(set(archived))  # the primary key: a second copy can only be a bug in this query
    lost, extra = report.acknowledged_ids - set(archived), set(archived) - report.acknowledged_ids
    assert not lost, f"{len(lost)} acknowledged events lost"
    assert not extra, f"{len(extra)} archived events were never acknowledged"
    messages = [r["message_ref"] for r in rows if r["kind"] == "message"]
    assert len(messages) == len(set(messages)), "a message is indexed twice"

    # Every offset of every partition is inside an object, and every index row points into an object that holds
    # as many records as the rows pointing into it (at most: a record consumed twice is in two objects, the index
    # points at one).
    objects = await pool.fetch(
        "SELECT object_key, kafka_partition, first_offset, last_offset, record_count FROM archive_objects"
        " WHERE topic = $1 AND object_key LIKE $2",
        grp.topic,
        grp.prefix + "/%",
    )
    ends = await end_offsets(bootstrap, grp.topic, PARTITIONS)
    for partition, end in ends.items():
        ranges = [(o["first_offset"], o["last_offset"]) for o in objects if o["kafka_partition"] == partition]
        assert not uncovered(ranges, end), f"partition {partition}: offsets {uncovered(ranges, end)} not archived"
    capacity = {o["object_key"]: o["record_count"] for o in objects}
    pointing: dict[str, int] = {}
    for r in rows:
        assert r["object_key"] in capacity, f"an index row points at an unknown object {r['object_key']}"
        assert 0 <= r["record_index"] < capacity[r["object_key"]]
        pointing[r["object_key"]] = pointing.get(r["object_key"], 0) + 1
    assert all(count <= capacity[key] for key, count in pointing.items())
    sealed = sum(capacity.values())
    assert sealed >= len(rows)

    access = await open_access(pipeline.retention_settings(grp.demo_env, grp.prefix))
    try:
        opened = await access.reader.open(
            [RecordLocation(r["event_id"], r["object_key"], r["record_index"]) for r in rows]
        )
    finally:
        await access.close()
    assert len(opened) == len(rows)
    undecryptable = [event_id for event_id, value in opened.items() if value is None]
    assert not undecryptable, f"{len(undecryptable)} records do not decrypt"
    assert all(Event.from_json(value).event_id == event_id for event_id, value in opened.items() if value)
    return (
        f"archived={len(rows)} lost=0 duplicated=0; {len(objects)} objects sealing {sealed} records "
        f"({sealed - len(rows)} consumed again after the kill -9 / rebalances, superseded in the index)"
    )


@pytest.mark.timeout(240)
async def test_two_archivers_share_the_topic_and_lose_nothing_across_rebalances(
    group: Group, kafka_bootstrap: str, pg_pool: asyncpg.Pool
) -> None:
    started = time.monotonic()
    rng = random.Random()
    tenants = [Tenant.fresh(rng) for _ in range(TENANTS)]
    numbers = [t.phone_number_id for t in tenants]
    deliveries = interleaved(tenants, EVENTS, rng)
    load = asyncio.create_task(
        send_load(deliveries, url=group.url, app_secret=group.secret, events_per_s=RATE, give_up_after_s=60)
    )
    seen = await faults(group)
    report = await load
    assert report.given_up == 0, report.summary()
    assert report.rejected == 0, report.summary()
    assert report.acknowledged_deliveries == len(deliveries), report.summary()
    assert set(report.answers) == {200}, f"ingest answered other than 200 (it never lost Kafka): {report.summary()}"

    catch_up_s = await wait_caught_up(group, kafka_bootstrap, pg_pool, numbers, len(report.acknowledged_ids))
    outcome = await assert_exactly_once(group, kafka_bootstrap, pg_pool, numbers, report)
    first, second = group.archivers
    finals = {name: await archived_by(a) for name, a in (("1", first), ("2", second))}
    assert finals["1"] > 0, "archiver 1 archived nothing after its restart"
    for archiver in group.archivers:
        assert archiver.stop() == 0, archiver.log_tail()

    logged = {a.log.name: assignments(a) for a in group.archivers}
    for name, lists in logged.items():
        assert any(lists), f"{name} never logged a partition assignment"
    # With both members in the group the 6 partitions were split between them at some point: neither held all.
    assert any(0 < len(a) < PARTITIONS for lists in logged.values() for a in lists), logged
    print(
        f"\n[scale-out] {report.summary()}; {outcome}; archived before the fault: "
        + ", ".join(f"archiver {k} {v:.0f}" for k, v in seen.items())
        + f"; after restarts: archiver 1 {finals['1']:.0f}, archiver 2 {finals['2']:.0f}; "
        f"assignments logged: {logged}; caught up {catch_up_s:.1f}s after the load; "
        f"total {time.monotonic() - started:.1f}s"
    )
