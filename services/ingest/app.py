"""The ingest ASGI application: Meta's webhooks in, acknowledged Kafka events out.

A plain ASGI callable rather than a framework: the webhook route is the hot path (Meta asks for a median answer
under 250 ms at up to 1,000 updates/s per number) and does only what it must: read the capped body, check the
signature over the raw bytes, check the envelope, journal the POST as one Kafka record, answer. Splitting the
body into events is the archiver's work (services/core/journal.py).

Outcomes of ``POST /webhooks/whatsapp``:
    200  the POST's journal record was acknowledged by Kafka (acks=all)
    401  signature missing or wrong — nothing produced
    400  not JSON, or not a whatsapp_business_account envelope — nothing produced
    413  body over the cap — nothing produced (announced: at once, before anything else; /v1/outbound too)
    503  Kafka did not acknowledge in time — Meta retries; a record that did land deduplicates by event_id
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, TypeVar
from urllib.parse import parse_qs

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest

from services.core.events import WebhookRejected, decode_webhook, text_fault, webhook_scope
from services.core.http import BodyTooLarge, read_body
from services.core.journal import event_record, webhook_record
from services.core.kafka import AckedProducer, OutgoingRecord, ProduceUnavailable
from services.core.ops_http import PROBE_PATHS, probe
from services.ingest.metrics import IngestMetrics
from services.ingest.outbound import outbound_event
from services.ingest.settings import IngestSettings
from services.ingest.signature import SignatureVerifier, app_id

log = logging.getLogger("wa_archive.ingest")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

WEBHOOK_PATH = "/webhooks/whatsapp"
OUTBOUND_PATH = "/v1/outbound"
TEXT = b"text/plain; charset=utf-8"
JSON = b"application/json"


class UtcClock:
    """``received_at`` stamps: the text :func:`services.core.vocabulary.rfc3339_millis` writes (UTC, milliseconds
    truncated, ``Z``), made faster: the date and time up to the second are formatted once a second, since this
    runs on every request. ``tests/unit/test_vocabulary.py`` checks that both write the same text."""

    def __init__(self, now_ns: Callable[[], int] = time.time_ns) -> None:
        self._now_ns = now_ns
        self._second = -1
        self._prefix = ""

    def __call__(self) -> str:
        second, nanoseconds = divmod(self._now_ns(), 1_000_000_000)
        if second != self._second:
            self._second, self._prefix = second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{nanoseconds // 1_000_000:03d}Z"


Metric = TypeVar("Metric", Counter, Gauge)


def bound(children: dict[str, Metric], metric: Metric, label: str) -> Metric:
    """The child of a one-label metric, bound once: ``labels()`` validates and locks on every call."""
    child = children.get(label)
    if child is None:
        child = children[label] = metric.labels(label)
    return child


async def send_response(
    send: Send, status: int, body: bytes, content_type: bytes = TEXT, *, close: bool = False
) -> None:
    """``close``: the request's body was not read; the server closes the connection instead of draining it."""
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    if close:
        headers.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def error_body(reason: str) -> bytes:
    return orjson.dumps({"error": reason})


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value).decode("latin-1")
    return None


class IngestApp:
    """ASGI app; owns its producer (started and stopped by the ASGI lifespan) and its metrics registry."""

    def __init__(
        self,
        settings: IngestSettings,
        *,
        producer: AckedProducer | None = None,
        registry: CollectorRegistry | None = None,
        clock: Callable[[], str] | None = None,
    ) -> None:
        self.settings = settings
        self.producer = producer or AckedProducer(settings.kafka)
        self.registry = registry or CollectorRegistry()
        self.metrics = IngestMetrics(self.registry)
        secrets = [s.get_secret_value().encode() for s in settings.app_secrets]
        self.verifier = SignatureVerifier(secrets)
        self._app_ids = [app_id(secret) for secret in secrets]
        self._verify_token = settings.verify_token.get_secret_value().encode()
        self._outbound_tokens = [t.get_secret_value().encode() for t in settings.outbound_tokens]
        self._topic = settings.kafka.events_topic
        self._clock = clock or UtcClock()
        # Bound metric children: labels() validates and locks on every call, and this is the hot path.
        self._ok = {route: self.metrics.requests.labels(route, "ok") for route in ("webhook", "outbound")}
        self._produced = {route: self.metrics.records_produced.labels(route) for route in ("webhook", "outbound")}
        self._acknowledged: dict[str, Gauge] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        method, path = scope["method"], scope["path"]
        if path == WEBHOOK_PATH and method == "POST":
            await self._webhook(scope, receive, send)
        elif path == WEBHOOK_PATH and method == "GET":
            await self._handshake(scope, send)
        elif path == OUTBOUND_PATH and method == "POST":
            await self._outbound(scope, receive, send)
        elif path in PROBE_PATHS:
            await send_response(send, *probe(path, lambda: self.producer.connected, b"kafka not connected"))
        elif path == "/metrics":
            self.metrics.kafka_connected.set(1 if self.producer.connected else 0)
            await send_response(send, 200, generate_latest(self.registry), CONTENT_TYPE_LATEST.encode())
        elif path in (WEBHOOK_PATH, OUTBOUND_PATH):
            await send_response(send, 405, error_body("method not allowed"), JSON)
        else:
            await send_response(send, 404, error_body("not found"), JSON)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.producer.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.producer.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _refused(self, route: str, outcome: str, status: int) -> None:
        """Count and log a refusal (what, never the request's content or who sent it)."""
        self.metrics.requests.labels(route, outcome).inc()
        log.warning("%s request refused: %s (%d)", route, outcome, status)

    async def _handshake(self, scope: Scope, send: Send) -> None:
        query = parse_qs(bytes(scope.get("query_string", b"")).decode("latin-1"))
        mode = query.get("hub.mode", [""])[0]
        token = query.get("hub.verify_token", [""])[0].encode()
        challenge = query.get("hub.challenge", [""])[0]
        if mode == "subscribe" and challenge and hmac.compare_digest(token, self._verify_token):
            self.metrics.requests.labels("handshake", "ok").inc()
            await send_response(send, 200, challenge.encode())
            return
        self._refused("handshake", "forbidden", 403)
        await send_response(send, 403, b"verification failed")

    async def _webhook(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            raw = await read_body(scope, receive, self.settings.max_body_bytes)
        except BodyTooLarge:
            self._refused("webhook", "too_large", 413)
            await send_response(
                send, 413, error_body(f"body exceeds {self.settings.max_body_bytes} bytes"), JSON, close=True
            )
            return
        self.metrics.body_bytes.inc(len(raw))
        signature = header(scope, b"x-hub-signature-256")
        app = self.verifier.verified_by(raw, signature)
        if app is None:
            self.metrics.signature_failures.inc()
            self._refused("webhook", "bad_signature", 401)
            await send_response(send, 401, error_body("invalid or missing X-Hub-Signature-256"), JSON)
            return
        try:
            scope_id, numbers = webhook_scope(decode_webhook(raw))
        except WebhookRejected as rejected:
            self.metrics.requests.labels("webhook", "bad_request").inc()
            await send_response(send, rejected.status, error_body(rejected.reason), JSON)
            return
        record = webhook_record(
            self._topic, scope_id, raw, signature=signature, received_at=self._clock(), app=self._app_ids[app]
        )
        await self._produce_and_answer("webhook", record, numbers, send)

    async def _outbound(self, scope: Scope, receive: Receive, send: Send) -> None:
        announced = header(scope, b"content-length")
        if announced is not None and announced.isdigit() and int(announced) > self.settings.max_body_bytes:
            # Over the cap whoever sends it, as for the webhook: 413 at once.
            self._refused("outbound", "too_large", 413)
            await send_response(
                send, 413, error_body(f"body exceeds {self.settings.max_body_bytes} bytes"), JSON, close=True
            )
            return
        if not self._authorised(header(scope, b"authorization")):
            self._refused("outbound", "unauthorized", 401)
            # Decided from the headers: the body is not read, and the connection is closed rather than drained.
            await send_response(send, 401, error_body("missing or invalid bearer token"), JSON, close=True)
            return
        try:
            raw = await read_body(scope, receive, self.settings.max_body_bytes)
            event = outbound_event(raw, received_at=self._clock())
        except BodyTooLarge:
            self._refused("outbound", "too_large", 413)
            await send_response(
                send, 413, error_body(f"body exceeds {self.settings.max_body_bytes} bytes"), JSON, close=True
            )
            return
        except WebhookRejected as rejected:
            self.metrics.requests.labels("outbound", "bad_request").inc()
            await send_response(send, rejected.status, error_body(rejected.reason), JSON)
            return
        await self._produce_and_answer(
            "outbound", event_record(self._topic, event), frozenset(n for n in (event.phone_number_id,) if n), send
        )

    def _authorised(self, authorization: str | None) -> bool:
        if not authorization or not authorization.startswith("Bearer "):
            return False
        offered = authorization[len("Bearer ") :].encode()
        # Compare against every token so the time taken does not reveal which one nearly matched.
        matches = [hmac.compare_digest(offered, token) for token in self._outbound_tokens]
        return any(matches)

    async def _produce_and_answer(
        self, route: str, record: OutgoingRecord, numbers: frozenset[str], send: Send
    ) -> None:
        started = time.perf_counter()
        try:
            await self.producer.produce((record,), deadline_s=self.settings.produce_deadline_s)
        except ProduceUnavailable as exc:
            # Meta retries non-2xx for days, so 503 is safe when Kafka is down; nothing was acknowledged to Meta.
            log.warning("%s: record not acknowledged by Kafka: %s; answering 503", route, exc)
            self.metrics.requests.labels(route, "unavailable").inc()
            await send_response(send, 503, error_body("event store unavailable, retry later"), JSON)
            return
        self.metrics.produce_seconds.observe(time.perf_counter() - started)
        self._produced[route].inc()
        now = time.time()
        for phone_number_id in numbers:
            # A label Prometheus could not carry (NUL, lone surrogate, over-long) is left out; the archiver
            # dead-letters such records anyway.
            if text_fault(phone_number_id) is None:
                bound(self._acknowledged, self.metrics.last_event_timestamp, phone_number_id).set(now)
        self._ok[route].inc()
        await send_response(send, 200, b"ok")


def create_app(settings: IngestSettings) -> IngestApp:
    return IngestApp(settings)
