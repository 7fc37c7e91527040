"""Prometheus metrics of ingest. Labels are bounded: routes, outcomes, business phone-number ids
(a company has a handful; they identify the business, never a customer). Catalogue: docs/METRICS.md."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class IngestMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "wa_ingest_requests_total",
            "HTTP requests by route and outcome (ok, bad_signature, bad_request, too_large, unavailable, ...).",
            ["route", "outcome"],
            registry=registry,
        )
        self.records_produced = Counter(
            "wa_ingest_records_produced_total",
            "Records acknowledged by Kafka, by route: one per webhook POST (the archiver splits it), one per "
            "outbound report.",
            ["route"],
            registry=registry,
        )
        self.produce_seconds = Histogram(
            "wa_ingest_produce_seconds",
            "Time from sending a POST's record to Kafka's acknowledgement.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=registry,
        )
        self.signature_failures = Counter(
            "wa_ingest_signature_failures_total",
            "POSTs rejected because X-Hub-Signature-256 was missing or did not match any app secret.",
            registry=registry,
        )
        self.body_bytes = Counter(
            "wa_ingest_body_bytes_total",
            "Bytes of webhook bodies received (accepted or not).",
            registry=registry,
        )
        self.kafka_connected = Gauge(
            "wa_ingest_kafka_connected",
            "1 when the Kafka producer is connected (the readiness condition), else 0.",
            registry=registry,
        )
        self.last_event_timestamp = Gauge(
            "wa_ingest_last_acknowledged_timestamp_seconds",
            "When Kafka last acknowledged a webhook or report of this business phone number (the archive lag's "
            "reference).",
            ["phone_number_id"],
            registry=registry,
        )
