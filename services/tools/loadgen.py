"""A Meta-like load generator: a paced stream of unique signed webhooks, each retried until it is acknowledged.

Meta keeps retrying a webhook that did not get a 2xx; the generator does the same (with capped backoff, until a
deadline), so after a run every delivery is either acknowledged or reported as given up. The report keeps the
event ids of the acknowledged deliveries, computed with the same splitter ingest uses, which is what a zero-loss
check compares the archive with. Used by ``wa-archive replay --generate``, the fault tests and the benchmarks.

The synthetic traffic is one business number talking to a pool of contacts: text messages (one to
``max_per_body`` per webhook, as Meta batches a busy sender) and status updates of earlier messages. The texts
are generated ("load message 17"): nothing in it is anybody's data.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import orjson

from services.core.events import parse_webhook
from services.core.retry import Attempt, RetryPolicy
from services.ingest.signature import sign
from services.tools.replay import Unacknowledged

RETRY_BACKOFF_S = (0.1, 2.0)  # first and longest pause between two tries of one delivery


@dataclass(frozen=True)
class SyntheticWebhook:
    """One generated webhook body and the ids of the events ingest will split it into (not the events' own
    :class:`services.core.events.Delivery`, which records how a webhook arrived)."""

    body: bytes
    event_ids: tuple[str, ...]


@dataclass(frozen=True)
class Tenant:
    """The business side of the synthetic traffic (fresh random ids per run keep runs apart)."""

    waba_id: str
    phone_number_id: str

    @classmethod
    def fresh(cls, rng: random.Random) -> Tenant:
        return cls(digits(rng, 15), digits(rng, 15))


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789") for _ in range(n))


def webhook_body(
    waba_id: str,
    phone_number_id: str,
    value: dict[str, object],
    *,
    field: str = "messages",
    display_phone_number: str = "15550001111",
) -> bytes:
    """A Cloud API webhook body with one change, shaped as Meta sends it (see tests/data/whatsapp)."""
    return orjson.dumps(
        {
            "object": "whatsapp_business_account",
            "entry": [
                {
                    "id": waba_id,
                    "changes": [
                        {
                            "field": field,
                            "value": {
                                "messaging_product": "whatsapp",
                                "metadata": {
                                    "display_phone_number": display_phone_number,
                                    "phone_number_id": phone_number_id,
                                },
                                **value,
                            },
                        }
                    ],
                }
            ],
        }
    )


def _synthetic_webhook(body: bytes) -> SyntheticWebhook:
    events = parse_webhook(body, raw_sha256=hashlib.sha256(body).hexdigest(), signature=None, received_at="-")
    return SyntheticWebhook(body, tuple(e.event_id for e in events))


def synthetic_deliveries(
    events: int,
    *,
    tenant: Tenant,
    contacts: int = 200,
    max_per_body: int = 5,
    status_share: float = 0.2,
    seed: int = 0,
) -> Iterator[SyntheticWebhook]:
    """Unique webhooks holding ``events`` events in all (messages and statuses), in sending order."""
    rng = random.Random(seed)
    run = digits(rng, 8)
    people = ["1" + digits(rng, 10) for _ in range(contacts)]
    sent: list[str] = []  # wamids that may receive a status
    now = int(time.time())
    produced = 0
    n = 0
    while produced < events:
        if sent and rng.random() < status_share:
            wamid = rng.choice(sent)
            state = rng.choice(("sent", "delivered", "read"))
            n += 1  # a distinct timestamp keeps every status a distinct event
            status = {"id": wamid, "status": state, "timestamp": str(now + n), "recipient_id": rng.choice(people)}
            value: dict[str, object] = {"statuses": [status]}
            delivery = _synthetic_webhook(webhook_body(tenant.waba_id, tenant.phone_number_id, value))
        else:
            wa_id = rng.choice(people)
            messages = []
            for _ in range(min(rng.randint(1, max_per_body), events - produced)):
                n += 1
                wamid = f"wamid.LOAD{run}{n:09d}"
                sent.append(wamid)
                messages.append(
                    {"from": wa_id, "id": wamid, "timestamp": str(now), "type": "text", "text": {"body": f"load {n}"}}
                )
            value = {"contacts": [{"profile": {"name": "Load"}, "wa_id": wa_id}], "messages": messages}
            delivery = _synthetic_webhook(webhook_body(tenant.waba_id, tenant.phone_number_id, value))
        produced += len(delivery.event_ids)
        yield delivery


@dataclass(kw_only=True)
class LoadReport:
    deliveries: int = 0
    events: int = 0
    acknowledged_ids: set[str] = field(default_factory=set)
    acknowledged_deliveries: int = 0
    given_up: int = 0
    rejected: int = 0  # 4xx: a retry cannot change it
    retries: int = 0
    answers: Counter[int] = field(default_factory=Counter)  # 0 = no answer (connection refused, reset, timeout)
    latencies_ms: list[float] = field(default_factory=list)  # of the acknowledged try
    duration_s: float = 0.0

    def summary(self) -> str:
        answers = dict(sorted(self.answers.items()))
        return (
            f"{self.deliveries} webhooks / {self.events} events in {self.duration_s:.1f}s: "
            f"{self.acknowledged_deliveries} acknowledged, {self.rejected} rejected, {self.given_up} given up, "
            f"{self.retries} retries; answers {answers}"
        )


class HttpConnection:
    """A minimal HTTP/1.1 keep-alive client for one origin: a load generator must cost far less than the server it
    measures (httpx spends more CPU per request than ingest does)."""

    def __init__(self, url: str, timeout_s: float) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        self.target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.authority = parts.netloc
        self.timeout_s = timeout_s
        self._streams: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

    async def post(self, body: bytes, headers: dict[str, str]) -> int:
        """POST and read the whole answer; returns the status. Raises OSError/TimeoutError on a broken connection."""
        try:
            return await asyncio.wait_for(self._exchange(body, headers), self.timeout_s)
        except BaseException:
            self.close()
            raise

    async def _exchange(self, body: bytes, headers: dict[str, str]) -> int:
        if self._streams is None:
            self._streams = await asyncio.open_connection(self.host, self.port, ssl=self.tls or None)
        reader, writer = self._streams
        head = f"POST {self.target} HTTP/1.1\r\nhost: {self.authority}\r\ncontent-length: {len(body)}\r\n"
        head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
        writer.write(head.encode("latin-1") + b"\r\n" + body)
        status_line = await reader.readline()
        if not status_line:
            raise ConnectionResetError("connection closed before an answer")
        status = int(status_line.split(b" ", 2)[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = "chunked" in value
            elif name == "connection":
                close = value == "close"
        if chunked:
            while size := int((await reader.readline()).split(b";")[0], 16):
                await reader.readexactly(size + 2)
            await reader.readline()
        elif length:
            await reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self._streams is not None:
            self._streams[1].close()
            self._streams = None


async def send_load(
    deliveries: Sequence[SyntheticWebhook],
    *,
    url: str,
    app_secret: bytes,
    events_per_s: float | None = None,
    concurrency: int = 16,
    give_up_after_s: float = 300.0,
    timeout_s: float = 30.0,
) -> LoadReport:
    """POST the deliveries paced at ``events_per_s`` (None: as fast as ``concurrency`` connections allow),
    retrying each non-2xx or broken connection with backoff until ``give_up_after_s`` after its first try."""
    report = LoadReport(deliveries=len(deliveries), events=sum(len(d.event_ids) for d in deliveries))
    due: list[float] = []
    cumulative = 0
    for delivery in deliveries:
        due.append(cumulative / events_per_s if events_per_s else 0.0)
        cumulative += len(delivery.event_ids)
    upcoming = iter(range(len(deliveries)))
    # As Meta does: every non-2xx but a 4xx is retried with backoff, until give_up_after_s after the first try.
    retry = RetryPolicy(
        initial_s=RETRY_BACKOFF_S[0], max_s=RETRY_BACKOFF_S[1], jitter=0.5, give_up_after_s=give_up_after_s
    )
    started = time.monotonic()

    async def deliver(connection: HttpConnection, delivery: SyntheticWebhook) -> None:
        headers = {"content-type": "application/json", "x-hub-signature-256": sign(delivery.body, app_secret)}
        began = 0.0

        async def post() -> int:
            nonlocal began
            began = time.perf_counter()
            try:
                status = await connection.post(delivery.body, headers)
            except (OSError, TimeoutError, ValueError, asyncio.IncompleteReadError):
                status = 0
            report.answers[status] += 1
            if 200 <= status < 500:
                return status
            raise Unacknowledged(status)

        def count(_attempt: Attempt) -> None:
            report.retries += 1

        try:
            status = await retry.run(post, retry_on=lambda exc: isinstance(exc, Unacknowledged), on_retry=count)
        except Unacknowledged:
            report.given_up += 1
            return
        if status >= 400:
            report.rejected += 1
            return
        report.latencies_ms.append((time.perf_counter() - began) * 1000)
        report.acknowledged_deliveries += 1
        report.acknowledged_ids.update(delivery.event_ids)

    async def worker() -> None:
        connection = HttpConnection(url, timeout_s)
        try:
            for index in upcoming:
                if (wait := started + due[index] - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await deliver(connection, deliveries[index])
        finally:
            connection.close()

    async with asyncio.TaskGroup() as group:
        for _ in range(concurrency):
            group.create_task(worker())
    report.duration_s = time.monotonic() - started
    return report
