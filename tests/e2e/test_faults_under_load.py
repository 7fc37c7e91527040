"""Zero loss under faults: ingest and the archiver as real processes, Meta-like load through HTTP, one fault each.

For every scenario a fresh business number sends a paced stream of unique signed webhooks (``--scale`` events,
50,000 by default) through ingest, retrying every non-2xx as Meta does, while one fault is injected:

1. the archiver killed with SIGKILL three times at random points, restarted each time;
2. the Kafka broker stopped and restarted;
3. the S3 server stopped for 60 s;
4. PostgreSQL stopped for 30 s;
5. ingest killed while requests are in flight, restarted.

Once the archiver has caught up: the set of archived event ids equals the set of ids of the acknowledged
webhooks (nothing lost, nothing extra), each message is indexed once, every record decrypts, every offset is
committed; and the real Prometheus, which scrapes the services on their local ports, showed the scenario's
alert condition during the fault and cleared it after. For the freshness alert (WaArchiveStale, staleness over
15 minutes in production) the threshold is scaled down to ``STALE_AFTER_S``; the other conditions are the alert
expressions of deploy/prometheus/rules.yml as they are.
"""

from __future__ import annotations

import asyncio
import os
import random
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import orjson
import pytest
import yaml

from devtools import pipeline
from devtools.broker import committed_offsets, create_topic, end_offsets
from devtools.samples import REPO_ROOT
from services.actions.access import open_access
from services.core.events import Event
from services.core.reader import RecordLocation
from services.tools.loadgen import LoadReport, Tenant, send_load, synthetic_deliveries
from tests.helpers.support import ServiceProcess

pytestmark = [pytest.mark.e2e, pytest.mark.exclusive]  # Kafka, S3 and PostgreSQL are each stopped

PARTITIONS = 6
RATE = float(os.environ.get("WA_E2E_RATE", "2500"))  # events/s offered by the load generator
STALE_AFTER_S = 10.0  # WaArchiveStale's 15 minutes, scaled to the length of a test outage
STACK = str(REPO_ROOT / "deploy" / "local" / "stack.sh")
RULES = REPO_ROOT / "deploy" / "prometheus" / "rules.yml"


@dataclass
class Pipeline:
    ingest: ServiceProcess
    archiver: ServiceProcess
    topic: str
    group: str
    prefix: str
    url: str
    secret: bytes
    demo_env: dict[str, str]


@pytest.fixture(scope="module")
async def services(
    demo_env: dict[str, str], kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Pipeline]:
    """ingest on :8080 and the archiver on :8081 (the ports the stack's Prometheus scrapes), on a topic of their own."""
    for port in (8080, 8081):
        try:
            async with httpx.AsyncClient(timeout=0.5) as client:
                await client.get(f"http://127.0.0.1:{port}/healthz")
        except httpx.HTTPError:
            continue
        pytest.fail(f"port {port} is busy: stop `make run` before the e2e tests", pytrace=False)
    topic = await create_topic(kafka_bootstrap, partitions=PARTITIONS, prefix="e2e-load")
    group, prefix = f"e2e-load-{uuid.uuid4().hex[:8]}", f"test/e2e-load-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **demo_env,
        "WA_INGEST_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_KAFKA__EVENTS_TOPIC": topic,
        "WA_ARCHIVER_GROUP_ID": group,
        "WA_ARCHIVER_S3__PREFIX": prefix,
        "WA_ARCHIVER_FLUSH__MAX_AGE_S": "1",
        "WA_ARCHIVER_RETRY_MAX_S": "2",
    }
    logs = tmp_path_factory.mktemp("fault-logs")
    ingest = ServiceProcess("services.ingest", 8080, env, logs / "ingest.log")
    archiver = ServiceProcess("services.archiver", 8081, env, logs / "archiver.log")
    secret = orjson.loads(demo_env["WA_INGEST_APP_SECRETS"])[0].encode()
    ingest.start()
    archiver.start()
    try:
        await ingest.wait_ready()
        await archiver.wait_ready()
        yield Pipeline(
            ingest, archiver, topic, group, prefix, "http://127.0.0.1:8080/webhooks/whatsapp", secret, demo_env
        )
    finally:
        for service in (ingest, archiver):
            if service.process is not None and service.process.poll() is None:
                service.stop()


@pytest.fixture(scope="module")
def load_events(request: pytest.FixtureRequest) -> int:
    scale: int = request.config.getoption("--scale")
    return scale


# ----------------------------------------------------------------------------------------------- Prometheus


def alert_expr(name: str) -> str:
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if rule.get("alert") == name:
                expr: str = rule["expr"]
                return expr
    raise AssertionError(f"no alert {name} in {RULES}")


def stale_condition() -> str:
    expr = alert_expr("WaArchiveStale")
    assert "> 15 * 60" in expr, expr
    return expr.replace("> 15 * 60", f"> {STALE_AFTER_S}")


@dataclass(frozen=True)
class Condition:
    """An alert expression, optionally narrowed to one business number."""

    expr: str
    phone_number_id: str | None = None

    def matches(self, series: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.phone_number_id is None:
            return series
        return [s for s in series if s["metric"].get("phone_number_id") == self.phone_number_id]

    async def seen_between(self, prometheus: str, start: float, end: float) -> bool:
        async with httpx.AsyncClient(base_url=prometheus, timeout=10) as client:
            params: dict[str, str | float] = {"query": self.expr, "start": start, "end": end, "step": 1}
            body = (await client.get("/api/v1/query_range", params=params)).json()
        assert body["status"] == "success", body
        return bool(self.matches(body["data"]["result"]))

    async def wait_cleared(self, prometheus: str, timeout_s: float) -> float:
        """Seconds until the condition no longer holds (bounded)."""
        started = time.monotonic()
        async with httpx.AsyncClient(base_url=prometheus, timeout=10) as client:
            while time.monotonic() - started < timeout_s:
                body = (await client.get("/api/v1/query", params={"query": self.expr})).json()
                if body["status"] == "success" and not self.matches(body["data"]["result"]):
                    return time.monotonic() - started
                await asyncio.sleep(1)
        raise AssertionError(f"alert condition still holds after {timeout_s}s: {self.expr}")


# ----------------------------------------------------------------------------------------------- the run


def stack(action: str, part: str) -> None:
    subprocess.run([STACK, action, part], check=True, capture_output=True, timeout=180)


async def wait_caught_up(pipe: Pipeline, bootstrap: str, pool: asyncpg.Pool, tenant: Tenant, ids: set[str]) -> float:
    """Seconds until every acknowledged event is indexed and the group has committed the whole topic (bounded)."""
    started = time.monotonic()
    while time.monotonic() - started < 300:
        archived = await pool.fetchval(
            "SELECT count(*) FROM archived_events WHERE phone_number_id = $1", tenant.phone_number_id
        )
        if archived >= len(ids):
            committed = await committed_offsets(bootstrap, pipe.group, pipe.topic, PARTITIONS)
            if committed == await end_offsets(bootstrap, pipe.topic, PARTITIONS):
                return time.monotonic() - started
        await asyncio.sleep(1)
    raise AssertionError(f"the archiver did not catch up within 300s: {pipe.archiver.log_tail()}")


async def assert_exactly_archived(pipe: Pipeline, pool: asyncpg.Pool, tenant: Tenant, report: LoadReport) -> int:
    """The archive holds exactly the acknowledged events, each once, and every record decrypts to its event."""
    rows = await pool.fetch(
        "SELECT encode(event_id, 'hex') AS event_id, kind, encode(message_ref, 'hex') AS message_ref, object_key,"
        " record_index FROM archived_events WHERE phone_number_id = $1",
        tenant.phone_number_id,
    )
    archived = {r["event_id"] for r in rows}
    assert not report.acknowledged_ids - archived, f"{len(report.acknowledged_ids - archived)} acknowledged lost"
    assert not archived - report.acknowledged_ids, f"{len(archived - report.acknowledged_ids)} never acknowledged"
    messages = [r["message_ref"] for r in rows if r["kind"] == "message"]
    assert len(messages) == len(set(messages)), "a message is indexed twice"

    access = await open_access(pipeline.retention_settings(pipe.demo_env, pipe.prefix))
    try:
        opened = await access.reader.open(
            [RecordLocation(r["event_id"], r["object_key"], r["record_index"]) for r in rows]
        )
    finally:
        await access.close()
    undecryptable = [event_id for event_id, value in opened.items() if value is None]
    assert not undecryptable, f"{len(undecryptable)} records do not decrypt"
    assert all(Event.from_json(value).event_id == event_id for event_id, value in opened.items() if value)
    return len(rows)


Fault = Callable[[Pipeline], Awaitable[str]]


async def run_scenario(
    name: str,
    fault: Fault,
    condition: Callable[[Tenant], Condition],
    *,
    pipe: Pipeline,
    bootstrap: str,
    pool: asyncpg.Pool,
    prometheus: str,
    events: int,
    clear_within_s: float = 90,
) -> None:
    tenant = Tenant.fresh(random.Random())
    deliveries = list(synthetic_deliveries(events, tenant=tenant, seed=random.randrange(1 << 30)))
    started_at = time.time()
    load = asyncio.create_task(
        send_load(deliveries, url=pipe.url, app_secret=pipe.secret, events_per_s=RATE, give_up_after_s=400)
    )
    await asyncio.sleep(3)  # the fault strikes a pipeline in full flow
    fault_started = time.time()
    what = await fault(pipe)
    fault_over = time.time()
    await pool.expire_connections()  # pooled connections a PostgreSQL restart broke
    report = await load
    await wait_caught_up(pipe, bootstrap, pool, tenant, report.acknowledged_ids)
    recovery_s = time.time() - fault_over
    archived = await assert_exactly_archived(pipe, pool, tenant, report)
    wanted = condition(tenant)
    seen = await wanted.seen_between(prometheus, fault_started, time.time())
    cleared_s = await wanted.wait_cleared(prometheus, clear_within_s) if seen else float("nan")
    print(
        f"\n[{name}] {what}; load: {report.summary()}; archived={archived} lost=0 duplicated=0; "
        f"recovery={recovery_s:.1f}s (fault over → all acknowledged events archived and committed); "
        f"alert condition seen={seen} cleared after {cleared_s:.1f}s; total {time.time() - started_at:.1f}s"
    )
    assert report.given_up == 0
    assert report.rejected == 0
    assert report.acknowledged_deliveries == len(deliveries)
    assert seen, f"Prometheus never showed the alert condition during the fault: {wanted.expr}"


# ----------------------------------------------------------------------------------------------- faults


async def kill_archiver_three_times(pipe: Pipeline) -> str:
    rng = random.Random()
    downtimes = [rng.uniform(0.5, 3), STALE_AFTER_S + 5, rng.uniform(0.5, 3)]  # one long enough to be stale
    for downtime in downtimes:
        await asyncio.sleep(rng.uniform(1, 5))
        pipe.archiver.kill()
        await asyncio.sleep(downtime)
        pipe.archiver.start()
        await pipe.archiver.wait_ready()
    return "archiver SIGKILLed 3 times, down " + ", ".join(f"{d:.1f}s" for d in downtimes)


async def restart_kafka(pipe: Pipeline) -> str:
    began = time.monotonic()
    await asyncio.to_thread(stack, "down", "kafka")
    await asyncio.sleep(10)
    await asyncio.to_thread(stack, "up", "kafka")
    return f"Kafka stopped and restarted ({time.monotonic() - began:.1f}s without a broker)"


async def s3_outage(pipe: Pipeline) -> str:
    await asyncio.to_thread(stack, "down", "s3")
    await asyncio.sleep(60)
    await asyncio.to_thread(stack, "up", "s3")
    return "S3 stopped for 60s"


async def postgres_outage(pipe: Pipeline) -> str:
    await asyncio.to_thread(stack, "down", "postgres")
    await asyncio.sleep(30)
    await asyncio.to_thread(stack, "up", "postgres")
    return "PostgreSQL stopped for 30s"


async def kill_ingest(pipe: Pipeline) -> str:
    pipe.ingest.kill()  # requests are in flight: the load is running
    await asyncio.sleep(6)  # long enough for Prometheus (2 s scrapes) to see it down
    pipe.ingest.start()
    await pipe.ingest.wait_ready()
    return "ingest SIGKILLed in flight, restarted after 6s"


def stale(tenant: Tenant) -> Condition:
    return Condition(stale_condition(), tenant.phone_number_id)


SCENARIOS: dict[str, tuple[Fault, Callable[[Tenant], Condition]]] = {
    "archiver-kill-9-x3": (kill_archiver_three_times, stale),
    "kafka-restart": (restart_kafka, lambda _: Condition(alert_expr("WaIngestKafkaUnavailable"))),
    "s3-down-60s": (s3_outage, stale),
    "postgres-down-30s": (postgres_outage, stale),
    "ingest-kill-in-flight": (kill_ingest, lambda _: Condition(alert_expr("WaIngestDown"))),
}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", list(SCENARIOS))
async def test_nothing_acknowledged_is_lost(
    name: str,
    services: Pipeline,
    kafka_bootstrap: str,
    pg_pool: asyncpg.Pool,
    prometheus_url: str,
    load_events: int,
) -> None:
    fault, condition = SCENARIOS[name]
    await run_scenario(
        name,
        fault,
        condition,
        pipe=services,
        bootstrap=kafka_bootstrap,
        pool=pg_pool,
        prometheus=prometheus_url,
        events=load_events,
        clear_within_s=150 if name == "kafka-restart" else 90,
    )
