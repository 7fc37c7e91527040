"""The archiver under faults, as a real process against the real servers: nothing acknowledged is lost.

- kill -9 at random points, three times, then a clean run: every event exactly once in the index, every
  offset committed, every record decrypts;
- the S3 server stopped for a while: nothing is committed meanwhile, lag grows, then it catches up;
- the index dropped: rebuild-index restores it exactly from the bucket.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from pathlib import Path

import asyncpg
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, read_to_end
from devtools.graph_api import FakeGraphApi
from devtools.pipeline import Person
from devtools.serving import free_port
from services.actions.access import open_access
from services.archiver.rebuild import rebuild_index
from services.core.events import Event
from services.core.index import binary_keys
from services.core.reader import RecordLocation
from tests.helpers.support import ServiceProcess

pytestmark = pytest.mark.e2e

EVENTS = int(os.environ.get("WA_E2E_EVENTS", "20000"))


def synthetic_events(count: int, people: int = 40) -> list[Event]:
    persons = [Person.fresh() for _ in range(people)]
    bodies = [
        pipeline.text_message(
            persons[i % people], f"wamid.E2E.{uuid.uuid4().hex}", f"message number {i}", 1_760_000_000 + i
        )
        for i in range(count)
    ]
    return pipeline.events_of(bodies)


def archiver_process(topic: str, dlq: str, group: str, prefix: str, log: Path) -> ServiceProcess:
    """``python -m services.archiver`` with the demo configuration and per-test topic, group and prefix."""
    port = free_port()
    env = {
        **os.environ,
        "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_KAFKA__DLQ_TOPIC": dlq,
        "WA_ARCHIVER_GROUP_ID": group,
        "WA_ARCHIVER_S3__PREFIX": prefix,
        "WA_ARCHIVER_PORT": str(port),
        "WA_ARCHIVER_FLUSH__MAX_RECORDS": "500",
        "WA_ARCHIVER_FLUSH__MAX_AGE_S": "0.5",
        "WA_ARCHIVER_RETRY_MAX_S": "1",
        "WA_ARCHIVER_LOG_LEVEL": "WARNING",
    }
    return ServiceProcess("services.archiver", port, env, log)


async def indexed(pool: asyncpg.Pool, ids: list[str]) -> int:
    count: int = await pool.fetchval(
        "SELECT count(*) FROM archived_events WHERE event_id = ANY($1::bytea[])", binary_keys(ids)
    )
    return count


async def committed_total(bootstrap: str, group: str, topic: str, partitions: int) -> int:
    return sum((await committed_offsets(bootstrap, group, topic, partitions)).values())


async def test_kill_9_three_times_loses_nothing_and_duplicates_nothing(
    demo_env: dict[str, str], kafka_bootstrap: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    topic = await create_topic(kafka_bootstrap, partitions=3, prefix="e2e-kill")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="dlq")
    group, prefix = f"e2e-{uuid.uuid4().hex[:8]}", f"test/e2e-{uuid.uuid4().hex[:8]}"
    events = synthetic_events(EVENTS)
    ids = [e.event_id for e in events]
    await pipeline.produce(kafka_bootstrap, topic, events)

    archiver = archiver_process(topic, dlq, group, prefix, tmp_path / "archiver.log")
    rng = random.Random(7)
    kills = 0
    started = time.monotonic()
    while kills < 3:
        archiver.start()
        target = await indexed(pg_pool, ids) + rng.randint(500, max(600, EVENTS // 6))
        for _ in range(2000):  # bounded: at most ~200 s
            if await indexed(pg_pool, ids) >= min(target, EVENTS - 1):
                break
            await asyncio.sleep(rng.uniform(0.01, 0.2))
        archiver.kill()
        kills += 1
    archiver.start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if await indexed(pg_pool, ids) == EVENTS and await committed_total(kafka_bootstrap, group, topic, 3) == EVENTS:
            break
        await asyncio.sleep(0.5)
    recovery_s = time.monotonic() - started
    await archiver.wait_ready()
    assert archiver.stop() == 0

    archived = await indexed(pg_pool, ids)
    duplicates = await pg_pool.fetchval(
        "SELECT count(*) - count(DISTINCT event_id) FROM archived_events WHERE event_id = ANY($1::bytea[])",
        binary_keys(ids),
    )
    print(
        f"\n[kill -9 x3] events={EVENTS} archived={archived} lost={EVENTS - archived} duplicated={duplicates} "
        f"total_time={recovery_s:.1f}s"
    )
    assert archived == EVENTS
    assert duplicates == 0
    assert await committed_total(kafka_bootstrap, group, topic, 3) == EVENTS

    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        rows = await pg_pool.fetch(
            "SELECT encode(event_id, 'hex') AS event_id, object_key, record_index FROM archived_events"
            " WHERE event_id = ANY($1::bytea[])",
            binary_keys(ids),
        )
        opened = await access.reader.open(
            [RecordLocation(r["event_id"], r["object_key"], r["record_index"]) for r in rows]
        )
    finally:
        await access.close()
    by_id = {e.event_id: e for e in events}
    assert all(value is not None and Event.from_json(value) == by_id[event_id] for event_id, value in opened.items())


def metric(registry_text: str, name: str) -> float:
    for family in text_string_to_metric_families(registry_text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    return float("nan")


@pytest.mark.exclusive  # stops the shared S3 server
async def test_s3_outage_holds_commits_then_catches_up(
    demo_env: dict[str, str], kafka_bootstrap: str, pg_pool: asyncpg.Pool, repo_root: Path
) -> None:
    from prometheus_client import generate_latest

    topic = await create_topic(kafka_bootstrap, partitions=3, prefix="e2e-s3")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="dlq")
    prefix = f"test/e2e-{uuid.uuid4().hex[:8]}"
    settings = pipeline.archiver_settings(demo_env, topic, dlq, prefix)
    registry = CollectorRegistry()
    stack = str(repo_root / "deploy" / "local" / "stack.sh")
    first, second = synthetic_events(300), synthetic_events(700)
    async with pipeline.running_archiver(settings, registry):
        await pipeline.produce(kafka_bootstrap, topic, first)
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in first})
        before = await committed_total(kafka_bootstrap, settings.group_id, topic, 3)
        # In a thread: the archiver runs on this event loop, and a loop blocked for the stack script would miss
        # the consumer's heartbeats, and the group would rebalance in the middle of the outage.
        await asyncio.to_thread(subprocess.run, [stack, "down", "s3"], check=True, capture_output=True, timeout=60)
        try:
            await pipeline.produce(kafka_bootstrap, topic, second)
            await asyncio.sleep(6)
            during = await committed_total(kafka_bootstrap, settings.group_id, topic, 3)
            text = generate_latest(registry).decode()
            lag_during = metric(text, "wa_archiver_lag_seconds")
            retries = metric(text, "wa_archiver_retries_total")
        finally:
            await asyncio.to_thread(subprocess.run, [stack, "up", "s3"], check=True, capture_output=True, timeout=120)
        outage_over = time.monotonic()
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in second}, timeout_s=120)
        recovery = time.monotonic() - outage_over
    print(
        f"\n[s3 outage] committed before={before} during={during} lag_during={lag_during:.1f}s recovery={recovery:.1f}s"
    )
    assert before == len(first)
    assert during == before, "an offset was committed while S3 was down"
    assert lag_during >= 3
    assert retries >= 1
    assert await committed_total(kafka_bootstrap, settings.group_id, topic, 3) == len(first) + len(second)


async def test_rebuild_index_restores_it_exactly(
    demo_env: dict[str, str], kafka_bootstrap: str, pg_pool: asyncpg.Pool
) -> None:
    topic = await create_topic(kafka_bootstrap, partitions=2, prefix="e2e-rebuild")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="dlq")
    prefix = f"test/e2e-{uuid.uuid4().hex[:8]}"
    events = synthetic_events(400)
    await pipeline.produce(kafka_bootstrap, topic, events)
    async with pipeline.running_archiver(pipeline.archiver_settings(demo_env, topic, dlq, prefix)):
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
    columns = (
        "encode(event_id, 'hex') AS event_id, encode(subject_ref, 'hex') AS subject_ref, dek_id, waba_id,"
        " phone_number_id, kind, type, encode(message_ref, 'hex') AS message_ref,"
        " encode(original_message_ref, 'hex') AS original_message_ref, event_time, received_at, object_key,"
        " record_index, kafka_partition, kafka_offset, retention_class, expires_at"
    )
    query = f"SELECT {columns} FROM archived_events WHERE object_key LIKE $1 ORDER BY event_id"
    before = [dict(r) for r in await pg_pool.fetch(query, prefix + "/%")]
    assert len(before) == len(events)
    await pg_pool.execute("DELETE FROM archived_events WHERE object_key LIKE $1", prefix + "/%")
    await pg_pool.execute("DELETE FROM archive_objects WHERE object_key LIKE $1", prefix + "/%")

    access = await open_access(pipeline.retention_settings(demo_env, prefix))
    try:
        report = await rebuild_index(access.pool, access.bucket, access.policy, prefix=prefix)
    finally:
        await access.close()
    after = [dict(r) for r in await pg_pool.fetch(query, prefix + "/%")]
    assert report.events == len(events)
    assert after == before


async def test_sigterm_while_a_dependency_is_down_ends_within_the_grace_period_and_loses_nothing(
    demo_env: dict[str, str], kafka_bootstrap: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """The archiver retries a batch while S3 is unreachable; SIGTERM must still end it within its drain timeout
    (Kubernetes kills it at the grace period), exit 0, and leave the batch uncommitted for the next owner."""
    import httpx

    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="e2e-term")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="dlq")
    group, prefix = f"e2e-term-{uuid.uuid4().hex[:8]}", f"test/e2e-{uuid.uuid4().hex[:8]}"
    drain_timeout_s = 3.0
    archiver = archiver_process(topic, dlq, group, prefix, tmp_path / "archiver.log")
    archiver.env["WA_ARCHIVER_S3__ENDPOINT_URL"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    archiver.env["WA_ARCHIVER_DRAIN_TIMEOUT_S"] = str(drain_timeout_s)
    events = synthetic_events(200)
    await pipeline.produce(kafka_bootstrap, topic, events)
    archiver.start()
    try:
        await archiver.wait_ready()
        retries = 0.0
        async with httpx.AsyncClient(timeout=2) as client:
            for _ in range(300):  # until the batch is being retried
                text = (await client.get(f"http://127.0.0.1:{archiver.port}/metrics")).text
                retries = metric(text, "wa_archiver_retries_total")
                if retries >= 2:
                    break
                await asyncio.sleep(0.1)
        assert retries >= 2, archiver.log_tail()
        started = time.monotonic()
        code = archiver.stop(timeout_s=60)
        stopped_in = time.monotonic() - started
    finally:
        if archiver.process is not None and archiver.process.poll() is None:
            archiver.kill()
    print(f"\n[sigterm during an S3 outage] exit {code} after {stopped_in:.1f}s (drain timeout {drain_timeout_s}s)")
    assert code == 0, archiver.log_tail()
    # The drain timeout, then bounded closes of the consumer, producer and pool: far below the 120 s grace period.
    assert stopped_in < drain_timeout_s + 15, archiver.log_tail()
    assert await committed_total(kafka_bootstrap, group, topic, 1) == 0, "nothing durable, nothing committed"
    # The next archiver of the group (S3 back) archives every record: the stop lost nothing.
    healthy = archiver_process(topic, dlq, group, prefix, tmp_path / "archiver-2.log")
    healthy.start()
    try:
        await pipeline.wait_indexed(pg_pool, {e.event_id for e in events})
    finally:
        assert healthy.stop() == 0, healthy.log_tail()
    assert await committed_total(kafka_bootstrap, group, topic, 1) == len(events)


async def dead_letter_count(bootstrap: str, topic: str) -> list[tuple[bytes, dict[str, bytes]]]:
    return [(value, dict(headers)) for _key, value, headers in await read_to_end(bootstrap, topic, 1)]


@pytest.mark.timeout(400)  # each death costs a restart and a group rejoin past the dead member's session
async def test_a_record_that_kills_the_archiver_is_dead_lettered_after_a_few_deaths_and_the_rest_archived(
    demo_env: dict[str, str], kafka_bootstrap: str, pg_pool: asyncpg.Pool, tmp_path: Path
) -> None:
    """One event kills every process that writes it (here: the test SIGKILLs the archiver whenever that event's
    media download is in flight, as an out-of-memory kill would). After the first death the range is written in
    smaller pieces; the event, in flight alone at a further death, goes to the dead-letter topic; every other event
    is archived and every offset committed: the partition does not stop."""
    topic = await create_topic(kafka_bootstrap, partitions=1, prefix="e2e-killer")
    dlq = await create_topic(kafka_bootstrap, partitions=1, prefix="dlq")
    group, prefix = f"e2e-{uuid.uuid4().hex[:8]}", f"test/e2e-{uuid.uuid4().hex[:8]}"
    person = Person.fresh()
    bodies = [pipeline.text_message(person, f"wamid.K{n}", f"message {n}", 1_760_000_000 + n) for n in range(120)]
    killer_media = f"{uuid.uuid4().int % 10**15}"
    async with FakeGraphApi(token=demo_env["WA_ARCHIVER_GRAPH__TOKEN"]) as graph:
        digest = graph.add_media(killer_media, b"\x89PNG any bytes", "image/png")
        graph.stall(killer_media, 600)
        bodies.insert(77, pipeline.image(person, "wamid.Kbad", 1_760_000_077, id=killer_media, sha256=digest))
        events = pipeline.events_of(bodies)
        killer = events[77]
        await pipeline.produce(kafka_bootstrap, topic, events)
        archiver = archiver_process(topic, dlq, group, prefix, tmp_path / "archiver.log")
        archiver.env["WA_ARCHIVER_GRAPH__BASE_URL"] = graph.base_url
        archiver.env["WA_ARCHIVER_FLUSH__MAX_RECORDS"] = "100"
        # The broker's smallest session: a killed member's partition is handed on after 6 s, not 45.
        archiver.env["WA_ARCHIVER_CONSUMER_OPTIONS"] = '{"session_timeout_ms": 6000, "heartbeat_interval_ms": 1000}'

        def killer_requests() -> int:
            return sum(1 for _method, path in graph.requests if path.endswith(f"/{killer_media}"))

        kills = 0
        started = time.monotonic()
        dead: list[tuple[bytes, dict[str, bytes]]] = []
        while kills < 8 and not dead:  # bounded: the event must be isolated within a few deaths
            seen = killer_requests()
            archiver.start()
            for tick in range(600):  # at most ~60 s per life
                if killer_requests() > seen:
                    archiver.kill()
                    kills += 1
                    print(f"killed at {time.monotonic() - started:.1f}s")
                    break
                if tick % 10 == 9 and (dead := await dead_letter_count(kafka_bootstrap, dlq)):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError(f"neither a download nor a dead letter in 60 s: {archiver.log_tail()}")
        ids = [e.event_id for e in events if e is not killer]
        for _ in range(600):
            indexed_all = await indexed(pg_pool, ids) == len(ids)
            if indexed_all and await committed_total(kafka_bootstrap, group, topic, 1) == len(events):
                break
            await asyncio.sleep(0.1)
        assert archiver.stop() == 0
    print(f"\n[killer record] deaths before it was isolated: {kills}")
    assert 2 <= kills <= 5
    assert [(value, headers["wa-dlq-reason"][:22]) for value, headers in dead] == [
        (killer.to_json(), b"stopped the archiver: ")
    ]
    assert await indexed(pg_pool, ids) == len(ids)
    assert await indexed(pg_pool, [killer.event_id]) == 0
    assert await committed_total(kafka_bootstrap, group, topic, 1) == len(events)
    assert await pg_pool.fetchval("SELECT count(*) FROM archiver_inflight WHERE group_id = $1", group) == 0
