"""Prometheus metrics of the send gateway. Labels are bounded: routes, outcomes (never a phone number, a
template name or a path). Catalogue: docs/METRICS.md."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Milliseconds matter here: the gateway's own cost is measured against a p99 of a few milliseconds.
ADDED_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sends = Counter(
            "wa_gateway_sends_total",
            "Sends and uploads by route (messages, media) and outcome: sent, refused (Meta's error answer), unknown "
            "(the answer was lost), not_sent (Meta unreachable), unavailable (Kafka did not acknowledge: nothing "
            "forwarded), bad_request (refused by the gateway: too large), held (held for approval by a policy), "
            "blocked (to a recipient a policy says is never written to).",
            ["route", "outcome"],
            registry=registry,
        )
        self.passed = Counter(
            "wa_gateway_passthrough_total",
            "Other Graph API requests forwarded unchanged, by outcome (answered, failed).",
            ["outcome"],
            registry=registry,
        )
        self.added_seconds = Histogram(
            "wa_gateway_added_seconds",
            "Time a send spends in the gateway outside Meta's answer: journaling before and after, staging.",
            ["route"],
            buckets=ADDED_BUCKETS,
            registry=registry,
        )
        self.upstream_seconds = Histogram(
            "wa_gateway_upstream_seconds",
            "Time Meta's Graph API took to answer a send or an upload.",
            ["route"],
            registry=registry,
        )
        self.unjournaled_outcomes = Counter(
            "wa_gateway_outcomes_not_journaled_total",
            "Outcomes Kafka did not acknowledge after Meta answered (the send's attempt record is archived; its "
            "wamid is not): should stay 0.",
            registry=registry,
        )
        self.template_reads = Counter(
            "wa_gateway_template_reads_total",
            "Template definitions read from the Graph API (cache misses), by outcome (found, missing, failed).",
            ["outcome"],
            registry=registry,
        )
        self.held = Counter(
            "wa_gateway_held_total",
            "Sends held for approval, by the policy rule that matched (rule names come from the policy files: a "
            "bounded set; a send several rules match counts for each).",
            ["rule"],
            registry=registry,
        )
        self.decisions = Counter(
            "wa_gateway_decisions_total",
            "Decisions about held sends carried out, by result: rejected, expired, no_token (approved, but no send "
            "token for its number: reported failed), approved_<outcome> (sent, refused, unknown, not_sent), "
            "invalid (a record that is not a decision: skipped), duplicate (a send id already decided: skipped).",
            ["result"],
            registry=registry,
        )
        self.kafka_connected = Gauge(
            "wa_gateway_kafka_connected",
            "1 when the Kafka producer is connected (the readiness condition), else 0.",
            registry=registry,
        )
