"""Prometheus metrics of the relay. The one label besides fixed sets is ``destination``: a destination's name is
configuration (WA_RELAY_DESTINATIONS), never personal data. Alert rules: deploy/prometheus/rules.yml."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class RelayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.deliveries = Counter(
            "wa_relay_deliveries_total",
            "Journal records a destination is done with, by outcome: delivered (2xx), skipped (not a webhook POST,"
            " or none of the destination's fields), parked (sent to its parking topic).",
            ["destination", "outcome"],
            registry=registry,
        )
        self.parked = Counter(
            "wa_relay_parked_total",
            "Records sent to a destination's parking topic, by reason (rejected: a 4xx or a redirect;"
            " retry_budget_exhausted; unsigned; unreadable).",
            ["destination", "reason"],
            registry=registry,
        )
        self.failures = Counter(
            "wa_relay_attempt_failures_total",
            "Delivery attempts that failed, by kind (status_5xx, status_429, status_408, status_4xx, status_3xx,"
            " timeout, connection).",
            ["destination", "kind"],
            registry=registry,
        )
        self.attempt_seconds = Histogram(
            "wa_relay_attempt_seconds",
            "Time of one delivery attempt (the receiver's answer).",
            ["destination"],
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15),
            registry=registry,
        )
        self.lag_records = Gauge(
            "wa_relay_lag_records",
            "Journal records a destination has not had yet (high watermark - delivered offset, over its partitions).",
            ["destination"],
            registry=registry,
        )
        self.oldest_waiting = Gauge(
            "wa_relay_oldest_waiting_seconds",
            "Age (since Kafka journaled it) of the oldest record fetched for a destination and not yet delivered"
            " or parked; 0 when none waits.",
            ["destination"],
            registry=registry,
        )
        self.last_delivered_journal = Gauge(
            "wa_relay_last_delivered_journal_timestamp_seconds",
            "Journal timestamp of the newest record delivered to a destination (its freshness).",
            ["destination"],
            registry=registry,
        )
        self.last_progress = Gauge(
            "wa_relay_last_progress_timestamp_seconds",
            "When a destination last finished a record (delivered, skipped or parked), or its consumer started.",
            ["destination"],
            registry=registry,
        )
