"""Prometheus metrics of the archiver. Labels are bounded: event kinds, partitions, business phone-number ids,
failure reasons from a fixed set. Catalogue and alert rules: docs/METRICS.md, deploy/prometheus/rules.yml."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class ArchiverMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_archived = Counter(
            "wa_archiver_events_archived_total",
            "Events durably archived (object written, index committed), by kind.",
            ["kind"],
            registry=registry,
        )
        self.objects_written = Counter(
            "wa_archiver_objects_written_total", "Batch objects written to the bucket.", registry=registry
        )
        self.bytes_written = Counter(
            "wa_archiver_bytes_written_total", "Bytes of objects written to the bucket.", registry=registry
        )
        self.batch_records = Histogram(
            "wa_archiver_batch_records",
            "Records per batch object.",
            buckets=(1, 10, 50, 100, 500, 1000, 2500, 5000, 10000),
            registry=registry,
        )
        self.batch_age = Histogram(
            "wa_archiver_batch_age_seconds",
            "Age of a batch's first record when the batch became durable.",
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300),
            registry=registry,
        )
        self.flushes = Counter(
            "wa_archiver_flushes_total",
            "Batches closed, by reason (count, size, age, drain).",
            ["reason"],
            registry=registry,
        )
        self.last_success = Gauge(
            "wa_archive_last_success_timestamp_seconds",
            "When an event of this business phone number was last durably archived (Velero-style freshness).",
            ["phone_number_id"],
            registry=registry,
        )
        self.caught_up = Gauge(
            "wa_archiver_caught_up_timestamp_seconds",
            "Last time every assigned partition was fully archived and committed: freshness of quiet tenants.",
            registry=registry,
        )
        self.last_flush = Gauge(
            "wa_archiver_last_flush_timestamp_seconds",
            "When the last batch became durable (any phone number).",
            registry=registry,
        )
        self.lag_records = Gauge(
            "wa_archiver_lag_records",
            "Records in the partition not yet archived and committed (high watermark - committed offset).",
            ["partition"],
            registry=registry,
        )
        self.lag_seconds = Gauge(
            "wa_archiver_lag_seconds",
            "Age of the oldest event acknowledged by Kafka but not yet archived (0 when caught up).",
            registry=registry,
        )
        self.retries = Counter(
            "wa_archiver_retries_total",
            "Transient failures retried with backoff, by dependency (s3, postgres, kafka, keys).",
            ["dependency"],
            registry=registry,
        )
        self.crash_isolations = Counter(
            "wa_archiver_crash_isolations_total",
            "Batches written in smaller pieces because a process died while writing them (out of memory, killed).",
            registry=registry,
        )
        self.dead_letters = Counter(
            "wa_archiver_dead_letters_total",
            "Records that can never be archived, sent to the dead-letter topic, by reason.",
            ["reason"],
            registry=registry,
        )
        self.erased_dropped = Counter(
            "wa_archiver_erased_records_dropped_total",
            "Records of an erased person from before the erasure (a replay, a redelivery, a batch in flight when the"
            " erasure committed): dropped with a tombstone, never sealed again.",
            registry=registry,
        )
        self.media = Counter(
            "wa_archiver_media_total",
            "Media downloads by outcome (archived, missing).",
            ["outcome"],
            registry=registry,
        )
        self.media_failures = Counter(
            "wa_archiver_media_failures_total",
            "Media that could not be archived after every attempt, by reason.",
            ["reason"],
            registry=registry,
        )
        self.media_retries = Counter(
            "wa_archiver_media_retries_total",
            "Media the sweep tried again, by outcome (archived; failed: tried again later; given_up; dropped: the"
            " message left the index or its person was erased).",
            ["outcome"],
            registry=registry,
        )
        self.media_given_up = Counter(
            "wa_archiver_media_given_up_total",
            "Media the sweep gave up (Meta no longer holds them, or a failure no retry can change): their messages"
            " stay archived without them.",
            registry=registry,
        )
        self.media_retry_pending = Gauge(
            "wa_archiver_media_retry_pending",
            "Media waiting in the sweep's queue (media_retry), as of the last sweep.",
            registry=registry,
        )
        self.media_budget_in_use = Gauge(
            "wa_archiver_media_budget_bytes_in_use",
            "Bytes of the media byte budget (WA_ARCHIVER_MEDIA__BUDGET_BYTES) reserved by downloads in flight: at the"
            " budget, further downloads wait their turn.",
            registry=registry,
        )
        self.paused_seconds = Counter(
            "wa_archiver_backpressure_seconds_total",
            "Partition-seconds spent paused because writes could not keep up.",
            registry=registry,
        )
        self.failed_flushes = Counter(
            "wa_archiver_failed_flush_attempts_total",
            "Attempts to make a batch durable that failed (and were retried).",
            registry=registry,
        )
