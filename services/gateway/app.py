"""The send gateway: a drop-in Graph API base URL that archives what the business sends.

A plain ASGI callable, as ingest is (services/ingest/app.py): the send route is a hot path measured against a
direct call to Meta, and does only what it must. Per request (services/gateway/routing.py):

``POST /{version}/{phone-number-id}/messages`` (a send)
    1. read the body (at most ``max_send_bytes``; 413 beyond, nothing forwarded); not JSON → 400, nothing
       forwarded (Meta refuses it too, and the archive could not say what it was);
    2. journal the ``send_attempt`` record (services/gateway/records.py) and wait for Kafka's acknowledgement
       (acks=all). Not acknowledged within ``produce_deadline_s`` → 503 with a Graph error envelope (code 2,
       Meta's "temporarily unavailable", which callers already retry) and **nothing is forwarded**;
    3. :meth:`GatewayApp.decide` — before the attempt is journaled, the business number's policy
       (services/gateway/policy.py; a template send waits for its definition, read through the cache): a send to a
       recipient never written to is refused (403, its ``outbound`` record ``refused`` journaled first); a send a
       rule matches is held: its ``send_held`` event is journaled (acks=all; 503 and nothing held when Kafka does
       not acknowledge), nothing is forwarded, and the answer is Meta's own for a held message with the gateway's
       id (services/gateway/held.py). A held send leaves later, if approved, by the decisions consumer
       (services/gateway/decisions.py);
    4. forward the request once (never retried: a retried send is a duplicate message to a customer), the
       ``Authorization`` header with it and nowhere else (services/core/http1.py: a lean HTTP/1.1 client, the
       send's largest CPU cost otherwise);
    5. hand the ``outbound`` outcome to the producer: ``sent`` / ``refused`` with Meta's answer, ``unknown`` when the
       answer was lost after the request may have left (timeout, reset), ``not_sent`` when no connection was made;
    6. answer Meta's status, headers (minus hop-by-hop) and body verbatim, then wait for the outcome's
       acknowledgement (the caller does not wait for it: the attempt already holds the send). An outcome Kafka does
       not acknowledge is counted and logged; the attempt record is archived. A lost answer is 504 and no
       connection 502, each with a Graph error envelope.

Any other request is forwarded unchanged (method, path, query, body, headers minus hop-by-hop), streamed both
ways, and nothing of it is journaled. Media uploads (``POST …/media``, up to Meta's 100 MB) are streamed through
the same way, never held whole; the medium is archived when a send uses its id: the archiver fetches it through
the Graph API and seals it under the person it was sent to (services/archiver/media.py ``outbound_media_ref``).

The bearer token is never logged, journaled or stored: it goes to Meta with the request it came with, and to the
template read made on that request's behalf (services/gateway/template_cache.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from prometheus_client import CollectorRegistry

from services.core.http import BodyTooLarge, read_body
from services.core.http1 import AnswerLost, Http1Pool, NotSent, RequestFailed
from services.core.journal import GATEWAY_ORIGIN, event_record, webhook_record
from services.core.kafka import AckedProducer, ProduceUnavailable
from services.core.ops_http import OpsServer, ops_app
from services.core.vocabulary import rfc3339_millis
from services.gateway.decisions import DecisionConsumer
from services.gateway.held import (
    AUTHOR_HEADER,
    HeldDecision,
    author_of,
    held_answer,
    held_message_id,
    held_until,
    recipient,
    status_webhook,
)
from services.gateway.metrics import GatewayMetrics
from services.gateway.policy import FORWARD, Policies, Template, Verdict, load_policies
from services.gateway.records import SendContext, attempt_event, held_event, outcome_event, outcome_of
from services.gateway.routing import PASS, SEND, Route, forwarded_headers, route, upload_refusal
from services.gateway.settings import GatewaySettings
from services.gateway.template_cache import TemplateCache
from services.gateway.templates import rendered_text
from services.ingest.signature import app_id, sign

log = logging.getLogger("wa_archive.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

JSON: Final = b"application/json"
# A send waits for its attempt's acknowledgement, so the producer lingers little; but without any linger each record
# is a request of its own to Kafka, with its wake-ups of librdkafka's threads and ours: 1 ms lets the records of
# concurrent sends share requests, and cut the gateway's CPU per send by a third (bench/gateway.py, 1,000-1,100 µs
# without, 600-830 µs with, at 400-600 sends/s), for at most 1 ms more before a send is forwarded.
PRODUCE_LINGER_MS: Final = 1
# Meta's send answers are a few hundred bytes, an error page a few KB: anything larger is not a send's answer.
MAX_ANSWER_BYTES: Final = 8 * 1024 * 1024


def graph_error(status: int, code: int, message: str) -> tuple[int, bytes]:
    """An answer of the gateway's own in the Graph error envelope, so a caller's Graph client reads it as it reads
    Meta's (``type`` names the gateway: a caller can tell who refused)."""
    return status, orjson.dumps({"error": {"message": message, "type": "WaArchiveGateway", "code": code}})


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


async def respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None, *, close: bool = False
) -> None:
    out = [*(headers if headers is not None else [(b"content-type", JSON)])]
    out.append((b"content-length", str(len(body)).encode()))
    if close:
        out.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": out})
    await send({"type": "http.response.body", "body": body})


def request_target(scope: Scope) -> str:
    """The path as the client sent it (percent-escapes kept) and its query."""
    raw_path = scope.get("raw_path") or scope["path"].encode()
    query = bytes(scope.get("query_string", b""))
    return bytes(raw_path).decode("latin-1") + ("?" + query.decode("latin-1") if query else "")


class GatewayApp:
    """ASGI app; owns its producer, its HTTP/1.1 connections to the Graph API (one pool for sends, pass-through
    and template reads), its ops server (started and stopped by the ASGI lifespan) and its metrics registry."""

    def __init__(
        self,
        settings: GatewaySettings,
        *,
        producer: AckedProducer | None = None,
        registry: CollectorRegistry | None = None,
        ops: bool = True,
        policies: Policies | None = None,
    ) -> None:
        self.settings = settings
        # Read and checked here, at start: a malformed file stops the gateway (PolicyError names it).
        if policies is None:
            policies = load_policies(settings.policy_dir) if settings.policy_dir is not None else Policies({})
        self.policies = policies
        self.producer = producer or AckedProducer(settings.kafka, linger_ms=PRODUCE_LINGER_MS)
        self.registry = registry or CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self._topic = settings.kafka.events_topic
        self._ops = OpsServer(ops_app(self.registry, self.ready), settings.ops_host, settings.ops_port) if ops else None
        self.templates: TemplateCache | None = None
        self.upstream: Http1Pool
        self._sends = {
            outcome: self.metrics.sends.labels("messages", outcome)
            for outcome in ("sent", "refused", "unknown", "not_sent", "unavailable", "bad_request", "held", "blocked")
        }
        # Every rule name of every policy file: a bounded label set, known at start.
        self._held = {name: self.metrics.held.labels(name) for name in sorted(policies.rule_names)}
        secret = settings.app_secret.get_secret_value().encode() if settings.app_secret is not None else None
        self._app_secret = secret
        self._app_id = app_id(secret) if secret is not None else None
        self.decisions: DecisionConsumer | None = None
        self._added = self.metrics.added_seconds.labels("messages")
        self._upstream = self.metrics.upstream_seconds.labels("messages")

    def ready(self) -> bool:
        connected = self.producer.connected
        self.metrics.kafka_connected.set(1 if connected else 0)
        return connected

    async def start(self) -> None:
        # No retries, no redirects followed, no proxy: one request to Meta per send (services/core/http1.py).
        self.upstream = Http1Pool(
            self.settings.upstream_url,
            connect_timeout_s=self.settings.connect_timeout_s,
            timeout_s=self.settings.send_timeout_s,
            max_idle=self.settings.max_concurrency,
        )
        self.templates = TemplateCache(self.upstream, ttl_s=self.settings.template_cache_s, metrics=self.metrics)
        await self.producer.start()
        if self.policies:
            self.decisions = DecisionConsumer(self.settings, self.carry_out, self.metrics)
            await self.decisions.start()
        if self._ops is not None:
            await self._ops.start()

    async def stop(self) -> None:
        if self._ops is not None:
            await self._ops.stop()
        if self.decisions is not None:
            await self.decisions.stop()
            self.decisions = None
        await self.producer.stop()
        await self.upstream.aclose()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        where = route(scope["method"], scope["path"])
        if where.kind == SEND:
            await self._send(scope, receive, send, where)
        elif where.kind == PASS:
            await self._pass(scope, receive, send)
        else:
            await self._upload(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def decide(self, context: SendContext, template: Template | None = None) -> Verdict:
        """Whether a send is forwarded, held for approval or refused: its business number's policy (its own file,
        else the default, else none: forwarded) on the request and, for a template, what the cache knows of it."""
        policy = self.policies.for_number(context.phone_number_id)
        return policy.judge(context.request, template) if policy is not None else FORWARD

    async def _send(self, scope: Scope, receive: Receive, send: Send, where: Route) -> None:
        started = time.perf_counter()
        try:
            raw = await read_body(scope, receive, self.settings.max_send_bytes)
        except BodyTooLarge:
            self._sends["bad_request"].inc()
            refusal = graph_error(413, 100, f"a send body exceeds {self.settings.max_send_bytes} bytes")
            await respond(send, *refusal, close=True)
            return
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError:
            self._sends["bad_request"].inc()
            await respond(send, *graph_error(400, 100, "the gateway forwards JSON send requests only"))
            return
        assert where.phone_number_id is not None
        assert where.version is not None
        context = SendContext(
            send_id=uuid.uuid4().hex,
            waba_id=self.settings.business_accounts.get(where.phone_number_id, ""),
            phone_number_id=where.phone_number_id,
            raw=raw,
            request=request,
            received_at=rfc3339_millis(datetime.now(UTC)),
        )
        authorization = header(scope, b"authorization")
        # The template's definition is read while the attempt is journaled and the send forwarded (a cache hit: at
        # once); a policy waits for it (a template's category and text are part of what it judges).
        template_task = self._template_definition(context, where.version, authorization)
        definition: dict[str, Any] | None = None
        settled = False
        verdict = FORWARD
        if self.policies.for_number(where.phone_number_id) is not None:
            if template_task is not None:
                definition, settled = await _settled(template_task), True
            verdict = self.decide(context, _template(context.request, definition))
        if verdict.refused or verdict.held:
            if template_task is not None:
                template_task.cancel()
            if verdict.refused:
                await self._refuse(send, context, verdict.refused)
            else:
                await self._hold(scope, send, context, verdict.held, _rendered(context.request, definition))
            return
        try:
            await self.producer.produce(
                (event_record(self._topic, attempt_event(context)),), deadline_s=self.settings.produce_deadline_s
            )
        except ProduceUnavailable as exc:
            if template_task is not None:
                template_task.cancel()
            log.warning("send not journaled (%s): answering 503, nothing forwarded", exc)
            self._sends["unavailable"].inc()
            await respond(send, *graph_error(503, 2, "the archive's journal is unavailable; nothing was sent"))
            return
        journaled = time.perf_counter()
        headers = forwarded_headers(list(scope["headers"]))
        # The answer is archived as well as returned: it comes unencoded, whatever the caller accepts.
        headers = [(k, v) for k, v in headers if k.lower() != b"accept-encoding"] + [(b"accept-encoding", b"identity")]
        status: int | None = None
        answer = b""
        decoded: Any = None  # Meta's answer decoded once, for the outcome and its record
        answer_headers: list[tuple[bytes, bytes]] = []
        try:
            response = await self.upstream.request(
                "POST", request_target(scope), headers, raw, max_answer_bytes=MAX_ANSWER_BYTES
            )
            status, answer = response.status, response.body
            answer_headers = forwarded_headers(response.headers)
            decoded = _json_or_none(answer)
            outcome = outcome_of(status, decoded)
        except NotSent:
            outcome = "not_sent"  # no connection was made: nothing left
        except AnswerLost as exc:
            outcome = "unknown"  # the request may have reached Meta: it may have been sent
            log.warning("a send's answer was lost (%s): archived with outcome unknown", exc)
        answered = time.perf_counter()
        self._upstream.observe(answered - journaled)
        if not settled:
            definition = await _settled(template_task)
        text = _rendered(context.request, definition)
        event = outcome_event(context, outcome=outcome, status=status, response=decoded, text=text)
        # Handed to the producer before answering, acknowledged after: the caller does not wait for a second
        # round trip to Kafka (the attempt, acknowledged before forwarding, already holds the send).
        journal_outcome = asyncio.ensure_future(
            self.producer.produce((event_record(self._topic, event),), deadline_s=self.settings.produce_deadline_s)
        )
        self._sends[outcome].inc()
        self._added.observe((journaled - started) + (time.perf_counter() - answered))
        if status is not None:
            await respond(send, status, answer, answer_headers)
        elif outcome == "not_sent":
            await respond(send, *graph_error(502, 2, "the Graph API could not be reached; nothing was sent"))
        else:
            await respond(send, *graph_error(504, 2, "the Graph API did not answer; the message may have been sent"))
        try:
            await journal_outcome
        except ProduceUnavailable as exc:
            self.metrics.unjournaled_outcomes.inc()
            log.error("a send's outcome (%s) was not journaled (%s); its attempt record is archived", outcome, exc)

    def _template_definition(
        self, context: SendContext, version: str, authorization: bytes | None
    ) -> asyncio.Task[dict[str, Any] | None] | None:
        request = context.request if isinstance(context.request, dict) else {}
        template = request.get("template")
        if request.get("type") != "template" or not isinstance(template, dict) or self.templates is None:
            return None
        if not context.waba_id or authorization is None:
            return None
        return asyncio.create_task(self.templates.definition(context.waba_id, version, template, authorization))

    async def _refuse(self, send: Send, context: SendContext, rules: tuple[str, ...]) -> None:
        """A send to a recipient the policy says is never written to: its ``outbound`` record (``refused``, the
        gateway's answer as the response) is journaled, then the refusal answered; nothing is forwarded."""
        status, answer = graph_error(
            403, 10, f"the business's policy forbids writing to this recipient (rule {', '.join(rules)})"
        )
        event = outcome_event(context, outcome="refused", status=status, response=orjson.loads(answer))
        try:
            await self.producer.produce(
                (event_record(self._topic, event),), deadline_s=self.settings.produce_deadline_s
            )
        except ProduceUnavailable as exc:
            log.warning("a refused send not journaled (%s): answering 503", exc)
            self._sends["unavailable"].inc()
            await respond(send, *graph_error(503, 2, "the archive's journal is unavailable; nothing was sent"))
            return
        self._sends["blocked"].inc()
        log.info("send refused by policy rules %s", ", ".join(rules))
        await respond(send, status, answer)

    async def _hold(
        self, scope: Scope, send: Send, context: SendContext, rules: tuple[str, ...], text: str | None
    ) -> None:
        """A send a rule matched: ``send_held`` journaled (acks=all) and Meta's held answer with the gateway's id;
        nothing forwarded. Kafka not acknowledging: 503, nothing held (the caller retries as for Meta's own 503)."""
        message_id = held_message_id(context.send_id)
        until = held_until(datetime.now(UTC), self.settings.hold_h)
        author = author_of(header(scope, AUTHOR_HEADER))
        event = held_event(context, message_id=message_id, rules=rules, author=author, held_until=until, text=text)
        try:
            await self.producer.produce(
                (event_record(self._topic, event),), deadline_s=self.settings.produce_deadline_s
            )
        except ProduceUnavailable as exc:
            log.warning("a held send not journaled (%s): answering 503, nothing held nor forwarded", exc)
            self._sends["unavailable"].inc()
            await respond(send, *graph_error(503, 2, "the archive's journal is unavailable; nothing was sent"))
            return
        self._sends["held"].inc()
        for rule in rules:
            counter = self._held.get(rule)
            if counter is not None:
                counter.inc()
        log.info("send %s held for approval by rules %s", context.send_id, ", ".join(rules))
        await respond(send, 200, held_answer(context.request, message_id))

    async def carry_out(self, decision: HeldDecision, commit: Callable[[], Awaitable[None]]) -> None:
        """Act on one decision about a held send (services/gateway/decisions.py calls it, in order, once per send
        id). ``approved``: the send is journaled (``send_attempt``, acks=all), ``commit`` is awaited — from then on
        a crash leaves it archived with outcome unknown, never sent twice — then it is forwarded once with the
        number's configured token, its ``outbound`` outcome journaled and a ``sent`` (or ``failed``) status about
        the gateway's id journaled for the relay. ``rejected`` / ``expired``: a ``failed`` status with the reason,
        then ``commit``. Raises ProduceUnavailable (nothing committed: the consumer tries the record again) when
        Kafka does not acknowledge a record that must precede the commit."""
        if decision.decision != "approved":
            await self._report(decision, failure=decision.decision, details=decision.reason)
            await commit()
            self.metrics.decisions.labels(decision.decision).inc()
            return
        token = self.settings.send_tokens.get(decision.phone_number_id)
        if token is None:
            log.error("an approved send for a number without a send token: reported failed, not sent")
            await self._report(decision, failure="no_token", details=None)
            await commit()
            self.metrics.decisions.labels("no_token").inc()
            return
        raw = orjson.dumps(decision.request)
        context = SendContext(
            send_id=decision.send_id,
            waba_id=decision.waba_id or self.settings.business_accounts.get(decision.phone_number_id, ""),
            phone_number_id=decision.phone_number_id,
            raw=raw,
            request=decision.request,
            received_at=rfc3339_millis(datetime.now(UTC)),
            held={
                "held_send_id": decision.send_id,
                "held_message_id": decision.message_id,
                "request_id": decision.request_id,
                "decided_at": decision.decided_at,
            },
        )
        await self.producer.produce(
            (event_record(self._topic, attempt_event(context)),), deadline_s=self.settings.produce_deadline_s
        )
        # At most once: committed before the send leaves, so a crash after this line never sends it again.
        await commit()
        headers = [
            (b"authorization", b"Bearer " + token.get_secret_value().encode()),
            (b"content-type", JSON),
            (b"accept-encoding", b"identity"),
        ]
        target = f"/{self.settings.graph_version}/{decision.phone_number_id}/messages"
        status: int | None = None
        answer = b""
        try:
            response = await self.upstream.request("POST", target, headers, raw, max_answer_bytes=MAX_ANSWER_BYTES)
            status, answer = response.status, response.body
            outcome = outcome_of(status, _json_or_none(answer))
        except NotSent:
            outcome = "not_sent"
        except AnswerLost as exc:
            outcome = "unknown"
            log.warning("an approved send's answer was lost (%s): archived with outcome unknown", exc)
        response_json = _json_or_none(answer)
        event = outcome_event(context, outcome=outcome, status=status, response=response_json)
        self.metrics.decisions.labels(f"approved_{outcome}").inc()
        try:
            await self.producer.produce(
                (event_record(self._topic, event),), deadline_s=self.settings.produce_deadline_s
            )
        except ProduceUnavailable as exc:
            self.metrics.unjournaled_outcomes.inc()
            log.error("an approved send's outcome (%s) was not journaled (%s)", outcome, exc)
        if outcome == "sent":
            await self._report(decision, sent_message_id=event.message_id)
        elif outcome in ("refused", "not_sent"):
            await self._report(decision, failure=outcome, details=_graph_message(response_json))
        else:
            # The message may have reached the customer: neither "sent" nor "failed" would be true. The archive
            # keeps it as outcome unknown; Meta's own statuses, if it was sent, name an id the gateway never saw.
            log.warning("an approved send's outcome is unknown: no status reported for it")

    async def _report(
        self,
        decision: HeldDecision,
        *,
        sent_message_id: str | None = None,
        failure: str | None = None,
        details: str | None = None,
    ) -> None:
        """Journal a status webhook about the gateway's id, signed with the Meta app secret as Meta signs its own
        and in ingest's record format (marked as the gateway's): the archiver archives it, the relay delivers it.
        Raises ProduceUnavailable."""
        assert self._app_secret is not None, "the settings require app_secret with a policy"
        body = status_webhook(
            waba_id=decision.waba_id or self.settings.business_accounts.get(decision.phone_number_id, ""),
            phone_number_id=decision.phone_number_id,
            display_phone_number=self.settings.display_phone_numbers.get(decision.phone_number_id),
            message_id=decision.message_id,
            recipient_id=recipient(decision.request),
            timestamp=int(time.time()),
            sent_message_id=sent_message_id,
            failure=failure,
            details=details,
        )
        record = webhook_record(
            self._topic,
            decision.phone_number_id,
            body,
            signature=sign(body, self._app_secret),
            received_at=rfc3339_millis(datetime.now(UTC)),
            app=self._app_id,
            origin=GATEWAY_ORIGIN,
        )
        await self.producer.produce((record,), deadline_s=self.settings.produce_deadline_s)

    async def _upload(self, scope: Scope, receive: Receive, send: Send) -> None:
        """``POST …/media``: refused at once when it is not a multipart form or announces more than
        ``max_upload_bytes``; otherwise streamed through (:meth:`_pass`), and cut off — Meta then gets a truncated
        form, which it refuses — should it stream more than that."""
        refused = upload_refusal(
            header(scope, b"content-type"), header(scope, b"content-length"), self.settings.max_upload_bytes
        )
        if refused is not None:
            self.metrics.sends.labels("media", "bad_request").inc()
            status = 413 if "exceeds" in refused else 400
            await respond(send, *graph_error(status, 100, refused), close=True)
            return
        outcome = await self._pass(scope, receive, send, limit=self.settings.max_upload_bytes)
        self.metrics.sends.labels("media", outcome).inc()

    async def _pass(self, scope: Scope, receive: Receive, send: Send, *, limit: int | None = None) -> str:
        """Forward a request unchanged and stream the answer back; its outcome as ``wa_gateway_sends_total`` says
        it (sent: 2xx, refused: another answer, not_sent: Meta unreachable, bad_request: over ``limit``)."""
        received = 0
        over = False

        async def body() -> AsyncIterator[bytes]:
            nonlocal received, over
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return
                chunk = message.get("body", b"")
                received += len(chunk)
                if limit is not None and received > limit:
                    over = True
                    raise BodyTooLarge
                if chunk:
                    yield chunk
                if not message.get("more_body", False):
                    return

        streamed = scope["method"] not in ("GET", "HEAD")
        length = header(scope, b"content-length")
        answering = False
        try:
            async with self.upstream.stream(
                scope["method"],
                request_target(scope),
                forwarded_headers(list(scope["headers"])),
                body() if streamed else None,
                length=int(length) if streamed and length is not None and length.isdigit() else None,
            ) as response:
                headers = forwarded_headers(response.headers)
                headers += [(name, value) for name, value in response.headers if name == b"content-length"]
                answering = True
                await send({"type": "http.response.start", "status": response.status, "headers": headers})
                async for chunk in response.chunks():
                    await send({"type": "http.response.body", "body": chunk, "more_body": True})
                await send({"type": "http.response.body", "body": b""})
        except (RequestFailed, BodyTooLarge) as exc:
            if answering:
                raise  # the answer is under way: the server cuts the caller's connection, as Meta's did
            if over:
                await respond(send, *graph_error(413, 100, f"an upload exceeds {limit} bytes"), close=True)
                return "bad_request"
            self.metrics.passed.labels("failed").inc()
            log.warning("a pass-through request failed (%s)", type(exc).__name__)
            await respond(send, *graph_error(502, 2, "the Graph API could not be reached"))
            return "not_sent"
        self.metrics.passed.labels("answered").inc()
        return "sent" if 200 <= response.status < 300 else "refused"


def _json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _template(request: Any, definition: dict[str, Any] | None) -> Template | None:
    """What a policy knows of a template send: its name, and its definition's category and text when read."""
    send = request.get("template") if isinstance(request, dict) and request.get("type") == "template" else None
    if not isinstance(send, dict):
        return None
    name = send.get("name")
    category = definition.get("category") if definition is not None else None
    return Template(
        name=name if isinstance(name, str) else None,
        category=category if isinstance(category, str) else None,
        text=_rendered(request, definition),
    )


def _rendered(request: Any, definition: dict[str, Any] | None) -> str | None:
    send = request.get("template") if isinstance(request, dict) else None
    if definition is None or not isinstance(send, dict):
        return None
    return rendered_text(definition, send)


def _graph_message(response: Any) -> str | None:
    error = response.get("error") if isinstance(response, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    return message if isinstance(message, str) else None


async def _settled(task: asyncio.Task[dict[str, Any] | None] | None) -> dict[str, Any] | None:
    """The template's definition, or None when it could not be read (the send is archived without its text)."""
    if task is None:
        return None
    try:
        return await task
    except Exception as exc:  # the text is a convenience of the archive: its failure never fails a send
        log.warning("a template's text could not be read (%s)", type(exc).__name__)
        return None


def create_app(settings: GatewaySettings) -> GatewayApp:
    return GatewayApp(settings)
