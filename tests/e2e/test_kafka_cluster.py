"""A broker dies under load: ingest on a 3-broker KRaft cluster keeps acknowledging, and nothing acknowledged is lost.

The module starts the optional cluster of the local stack (``deploy/local/stack.sh cluster-up``: three combined
broker + controller nodes, one 3-voter quorum) unless it is up, and stops it at the end (``cluster-down``), so the
suite leaves nothing behind. On a topic of its own with replication factor 3 and min.insync.replicas 2, ingest (a
real process, acks=all) takes a paced stream of unique signed webhooks from several business numbers while one
broker is killed with SIGKILL and, a few seconds later, started again.

Then: every webhook was acknowledged in the end (Meta retries a non-2xx; the only ones allowed are 503s in the
seconds after the kill, while the dead broker's partitions elect new leaders); reading the topic back, the body of
every acknowledged POST is there (by its sha256, whatever the record format: see :func:`posted_body`), and so is
every event it holds; no record comes from anywhere else; and the restarted broker is back in every ISR.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import random
import signal
import subprocess
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from devtools.samples import REPO_ROOT, load_demo_env
from devtools.serving import free_port
from services.ingest.signature import sign
from services.tools.loadgen import HttpConnection, SyntheticWebhook, Tenant, synthetic_deliveries
from tests.helpers.support import ServiceProcess

pytestmark = pytest.mark.e2e

STACK = str(REPO_ROOT / "deploy" / "local" / "stack.sh")
STATE = Path(os.environ.get("WA_STACK_DIR", REPO_ROOT / ".stack"))
PORTS = [int(p) for p in load_demo_env().get("WA_KAFKA_CLUSTER_PORTS", "19092,19093,19094").split(",")]
NODES = (1, 2, 3)
PARTITIONS = 6
EVENTS = int(os.environ.get("WA_E2E_CLUSTER_EVENTS", "7000"))  # ≈2,700 webhooks
RATE = float(os.environ.get("WA_E2E_CLUSTER_RATE", "300"))  # events/s: the load lasts ≈23 s
TENANTS = 12  # ingest keys a webhook by its business number: several numbers reach every broker's partitions
KILL_AFTER_S = 5.0
DOWN_FOR_S = 2.0  # then cluster-up, which takes ≈10 s more on two busy cores: the broker rejoins under load
# 503s are tolerated only this long after the kill: the dead broker is fenced after broker.session.timeout.ms
# (2.5 s in stack.sh, after a new active controller if it was that one), its partitions get new leaders and it
# leaves the ISRs; ingest's produce deadline is 5 s, so in practice every request waits and gets its 200.
ELECTION_WINDOW_S = 12.0
RETRY_S = 0.25  # pause before a delivery is tried again, as Meta does (sooner: the test is short)
GIVE_UP_S = 60.0


@dataclass
class Cluster:
    bootstrap: str
    up_s: float  # how long cluster-up took (≈0 when it was already up)

    def pid(self, node: int) -> int:
        return int((STATE / "run" / f"kafka-{node}.pid").read_text())


def stack(action: str, timeout_s: float) -> None:
    done = subprocess.run([STACK, action], capture_output=True, text=True, timeout=timeout_s, check=False)
    assert done.returncode == 0, f"stack.sh {action} failed:\n{done.stdout}\n{done.stderr}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    began = time.monotonic()
    try:
        stack("cluster-up", 150)  # idempotent: only the nodes that are down are started
        yield Cluster(",".join(f"127.0.0.1:{port}" for port in PORTS), time.monotonic() - began)
    finally:
        stack("cluster-down", 90)  # the JVMs' memory back: nothing of the module is left running


@contextlib.asynccontextmanager
async def admin_client(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        yield admin
    finally:
        await admin.close()


async def partitions_of(bootstrap: str, topic: str) -> list[dict[str, Any]]:
    async with admin_client(bootstrap) as admin:
        described = await admin.describe_topics([topic])
    assert described, topic
    assert described[0].get("error_code", 0) == 0, described
    parts: list[dict[str, Any]] = described[0]["partitions"]
    return parts


async def wait_fully_replicated(bootstrap: str, topic: str, timeout_s: float) -> float:
    """Seconds until every partition has a leader and all 3 replicas in its ISR (bounded)."""
    started = time.monotonic()
    parts: list[dict[str, Any]] = []
    while time.monotonic() - started < timeout_s:
        with contextlib.suppress(Exception):  # a metadata request may hit the broker that is starting
            parts = await partitions_of(bootstrap, topic)
            if len(parts) == PARTITIONS and all(p["leader"] >= 0 and len(p["isr"]) == 3 for p in parts):
                return time.monotonic() - started
        await asyncio.sleep(0.5)
    raise AssertionError(f"{topic} not fully replicated within {timeout_s}s: {parts}")


async def create_replicated_topic(bootstrap: str) -> str:
    topic = f"test.e2e-cluster.{uuid.uuid4().hex[:10]}"
    async with admin_client(bootstrap) as admin:
        await admin.create_topics(
            [NewTopic(topic, PARTITIONS, 3, topic_configs={"min.insync.replicas": "2"})], timeout_ms=30_000
        )
    await wait_fully_replicated(bootstrap, topic, 30)
    return topic


async def delete_topic(bootstrap: str, topic: str) -> None:
    with contextlib.suppress(Exception):  # best effort: cluster-down follows anyway
        async with admin_client(bootstrap) as admin:
            await admin.delete_topics([topic], timeout_ms=10_000)


# ----------------------------------------------------------------------------------------------- the load


def interleaved(tenants: Sequence[Tenant], events: int, rng: random.Random) -> list[SyntheticWebhook]:
    """The webhooks of several business numbers, ``events`` in all, taking turns as concurrent senders do."""
    streams = [
        list(synthetic_deliveries(events // len(tenants), tenant=t, seed=rng.randrange(1 << 30))) for t in tenants
    ]
    mixed: list[SyntheticWebhook] = []
    for turn in range(max(len(s) for s in streams)):
        mixed.extend(s[turn] for s in streams if turn < len(s))
    return mixed


@dataclass
class Sent:
    """What ingest answered: every try with its time (monotonic), status (0 = no answer) and latency (s)."""

    tries: list[tuple[float, int, float]] = field(default_factory=list)
    acknowledged: list[SyntheticWebhook] = field(default_factory=list)
    given_up: int = 0
    duration_s: float = 0.0

    def answers(self) -> Counter[int]:
        return Counter(status for _, status, _ in self.tries)

    def slowest(self) -> float:
        """The longest wait for a 200: how long the broker's death stalled an acknowledgement."""
        return max((latency for _, status, latency in self.tries if status == 200), default=0.0)


async def send(deliveries: Sequence[SyntheticWebhook], url: str, secret: bytes, *, concurrency: int = 16) -> Sent:
    """POST the deliveries paced at RATE events/s over keep-alive connections; a non-200 is tried again after
    RETRY_S until GIVE_UP_S after the first try (a 4xx too: here it would be a bug, and it fails the test)."""
    sent = Sent()
    due: list[float] = []
    cumulative = 0
    for delivery in deliveries:
        due.append(cumulative / RATE)
        cumulative += len(delivery.event_ids)
    upcoming = iter(range(len(deliveries)))
    started = time.monotonic()

    async def worker() -> None:
        connection = HttpConnection(url, timeout_s=15)
        try:
            for index in upcoming:
                if (wait := started + due[index] - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                delivery = deliveries[index]
                headers = {"content-type": "application/json", "x-hub-signature-256": sign(delivery.body, secret)}
                first = time.monotonic()
                while True:
                    began = time.monotonic()
                    try:
                        status = await connection.post(delivery.body, headers)
                    except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                        status = 0
                    sent.tries.append((time.monotonic(), status, time.monotonic() - began))
                    if status == 200:
                        sent.acknowledged.append(delivery)
                        break
                    if time.monotonic() - first > GIVE_UP_S:
                        sent.given_up += 1
                        break
                    await asyncio.sleep(RETRY_S)
        finally:
            connection.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    sent.duration_s = time.monotonic() - started
    return sent


# ----------------------------------------------------------------------------------------------- the topic


def posted_body(value: bytes | None, headers: Sequence[tuple[str, Any]] | None) -> tuple[str, str | None]:
    """(sha256 of the POST body a record comes from, the event id it carries or None).

    Either record format: one record per POST (a ``wa-format`` header saying ``webhook…``; the value is the exact
    POST bytes), or one record per event (no such header: a schema-1 JSON envelope whose ``delivery.sha256`` is
    the sha256 of the POST it came from, :meth:`services.core.events.Event.to_json`).
    """
    assert value is not None, "a record without a value"
    for name, content in headers or ():
        if name.lower().replace("_", "-") == "wa-format" and bytes(content or b"").startswith(b"webhook"):
            return hashlib.sha256(value).hexdigest(), None
    envelope = orjson.loads(value)
    return envelope["delivery"]["sha256"], envelope["event_id"]


async def read_back(bootstrap: str, topic: str) -> list[tuple[str, str | None]]:
    """posted_body() of every record of the topic, up to its log end (bounded).

    With confluent-kafka when it is installed (librdkafka reads every compression codec a producer may use, lz4
    included), else with aiokafka.
    """
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return await read_back_aiokafka(bootstrap, topic)
    return await asyncio.to_thread(read_back_confluent, bootstrap, topic)


def read_back_confluent(bootstrap: str, topic: str) -> list[tuple[str, str | None]]:
    from confluent_kafka import OFFSET_BEGINNING, Consumer
    from confluent_kafka import TopicPartition as Partition

    # A group id is required, but nothing joins or commits: the partitions are assigned by hand.
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"read-back-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False}
    )
    found: list[tuple[str, str | None]] = []
    try:
        ends = {p: consumer.get_watermark_offsets(Partition(topic, p), timeout=10)[1] for p in range(PARTITIONS)}
        reached = dict.fromkeys(range(PARTITIONS), 0)
        consumer.assign([Partition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        deadline = time.monotonic() + 60
        while any(reached[p] < ends[p] for p in reached) and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=5000, timeout=0.5):
                assert message.error() is None, message.error()
                headers = message.headers()
                assert not isinstance(headers, dict)  # a consumed message's headers are a list (or None)
                found.append(posted_body(message.value(), headers))
                partition, offset = message.partition(), message.offset()
                assert partition is not None
                assert offset is not None
                reached[partition] = offset + 1
    finally:
        consumer.close()
    assert all(reached[p] >= ends[p] for p in reached), f"{topic}: read up to {reached}, short of the log end {ends}"
    return found


async def read_back_aiokafka(bootstrap: str, topic: str) -> list[tuple[str, str | None]]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    found: list[tuple[str, str | None]] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            positions = {tp: await consumer.position(tp) for tp in tps}
            if all(positions[tp] >= ends[tp] for tp in tps):
                return found
            batch = await consumer.getmany(timeout_ms=500, max_records=5000)
            for records in batch.values():
                found.extend(posted_body(r.value, r.headers) for r in records)
    finally:
        await consumer.stop()
    raise AssertionError(f"{topic}: only {len(found)} records read within 60s, short of the log end {ends}")


# ----------------------------------------------------------------------------------------------- the fault


@dataclass
class Fault:
    node: int = 0
    killed_at: float = 0.0  # monotonic
    restarted_at: float = 0.0
    rejoined_s: float = 0.0  # restart → all 3 replicas back in every ISR of the topic


def running(pid: int) -> bool:
    """Alive and not a zombie (a SIGKILLed process may wait a while for its reaper)."""
    try:
        os.kill(pid, 0)
        status = Path(f"/proc/{pid}/status").read_text()
    except (ProcessLookupError, FileNotFoundError):
        return False
    return "\nState:\tZ" not in status


async def kill_and_restart(cluster: Cluster, topic: str, fault: Fault) -> None:
    await asyncio.sleep(KILL_AFTER_S)
    fault.node = int(os.environ.get("WA_E2E_KILL_NODE", random.choice(NODES)))
    pid = cluster.pid(fault.node)
    os.kill(pid, signal.SIGKILL)
    fault.killed_at = time.monotonic()
    for _ in range(100):  # bounded: ≤ 10 s
        if not running(pid):
            break
        await asyncio.sleep(0.1)
    assert not running(pid), f"kafka-{fault.node} (pid {pid}) still runs after SIGKILL"
    await asyncio.sleep(DOWN_FOR_S)
    await asyncio.to_thread(stack, "cluster-up", 120)  # starts only the dead node
    fault.restarted_at = time.monotonic()
    fault.rejoined_s = await wait_fully_replicated(cluster.bootstrap, topic, 60)


# ----------------------------------------------------------------------------------------------- the test


@pytest.mark.timeout(240)
async def test_a_broker_killed_under_load_loses_nothing_acknowledged(
    cluster: Cluster, demo_env: dict[str, str], tmp_path: Path
) -> None:
    started = time.monotonic()
    topic = await create_replicated_topic(cluster.bootstrap)
    port = free_port()
    env = {
        **os.environ,
        **demo_env,
        "WA_INGEST_KAFKA__BOOTSTRAP_SERVERS": cluster.bootstrap,
        "WA_INGEST_KAFKA__EVENTS_TOPIC": topic,
        "WA_INGEST_PORT": str(port),
    }
    ingest = ServiceProcess("services.ingest", port, env, tmp_path / "ingest.log")
    ingest.start()
    try:
        await ingest.wait_ready()
        rng = random.Random()
        deliveries = interleaved([Tenant.fresh(rng) for _ in range(TENANTS)], EVENTS, rng)
        secret = orjson.loads(demo_env["WA_INGEST_APP_SECRETS"])[0].encode()
        fault = Fault()
        load_started = time.monotonic()
        async with asyncio.TaskGroup() as group:  # a failure of either cancels the other
            load = group.create_task(send(deliveries, f"http://127.0.0.1:{port}/webhooks/whatsapp", secret))
            group.create_task(kill_and_restart(cluster, topic, fault))
        sent = load.result()
        # uvicorn shuts down gracefully on SIGTERM, then re-raises it: an exit "by SIGTERM" is a clean stop too.
        assert ingest.stop() in (0, -signal.SIGTERM), ingest.log_tail()
    finally:
        if ingest.process is not None and ingest.process.poll() is None:
            ingest.stop()

    # Ingest kept answering: every webhook acknowledged in the end, the only other answers 503s soon after the kill.
    answers = sent.answers()
    failed = [(at - fault.killed_at, status) for at, status, _ in sent.tries if status != 200]
    assert sent.given_up == 0, f"{sent.given_up} webhooks never acknowledged; answers {dict(answers)}"
    assert len(sent.acknowledged) == len(deliveries)
    assert {status for _, status in failed} <= {503}, f"answers other than 200/503: {dict(answers)}"
    outside = [round(after, 2) for after, _ in failed if not 0 <= after <= ELECTION_WINDOW_S]
    assert not outside, f"503s outside the {ELECTION_WINDOW_S}s after the kill (seconds after it): {outside[:20]}"

    # Nothing acknowledged is lost: the topic holds every acknowledged POST (and each of its events), nothing else.
    records = await read_back(cluster.bootstrap, topic)
    await delete_topic(cluster.bootstrap, topic)
    bodies = Counter(sha for sha, _ in records)
    events_on_topic = {event_id for _, event_id in records if event_id is not None}
    acknowledged = {hashlib.sha256(d.body).hexdigest(): d for d in sent.acknowledged}
    sent_shas = {hashlib.sha256(d.body).hexdigest() for d in deliveries}
    lost = [sha for sha in acknowledged if sha not in bodies]
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged webhooks are not on the topic"
    assert set(bodies) <= sent_shas, f"{len(set(bodies) - sent_shas)} records come from no webhook of the test"
    per_event = any(event_id is not None for _, event_id in records)
    if per_event:  # one record per event: every event of every acknowledged POST is there
        missing = {e for d in acknowledged.values() for e in d.event_ids} - events_on_topic
        assert not missing, f"{len(missing)} events of acknowledged webhooks are not on the topic"
    expected = sum(len(d.event_ids) for d in deliveries) if per_event else len(deliveries)
    print(
        f"\n[kafka-cluster] cluster-up {cluster.up_s:.1f}s; {len(deliveries)} webhooks / "
        f"{sum(len(d.event_ids) for d in deliveries)} events in {sent.duration_s:.1f}s; kafka-{fault.node} SIGKILLed "
        f"{fault.killed_at - load_started:.1f}s in, up again {fault.restarted_at - load_started:.1f}s in, "
        f"back in every ISR {fault.rejoined_s:.1f}s after; answers {dict(sorted(answers.items()))}, slowest 200 "
        f"{sent.slowest():.2f}s "
        f"(non-200 at {min((a for a, _ in failed), default=0):.1f}..{max((a for a, _ in failed), default=0):.1f}s "
        f"after the kill); topic: {len(records)} records ({'per event' if per_event else 'per POST'}), "
        f"{len(records) - expected} extra copies (503s that landed), acknowledged lost=0; "
        f"test {time.monotonic() - started:.1f}s"
    )
