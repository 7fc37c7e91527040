"""Prometheus metrics of retention and GDPR work. No labels carry personal data: classes, outcomes, roles."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge

from services.core.vocabulary import BREAK_GLASS_STEPS


class RetentionMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.last_run_success = Gauge(
            "wa_retention_last_run_success_timestamp_seconds",
            "When a retention run last completed without error (pgBackRest/Velero-style freshness).",
            registry=registry,
        )
        self.api_refusals = Counter(
            "wa_retention_api_refusals_total",
            "Admin API requests refused before their body was read, by status (401, 403, 413, 503) and reason "
            "(token, role, body, provider: the identity provider's keys could not be read).",
            ["status", "reason"],
            registry=registry,
        )
        self.runs = Counter(
            "wa_retention_runs_total",
            "Retention runs by outcome (success, failure, dry_run).",
            ["outcome"],
            registry=registry,
        )
        self.objects_deleted = Counter(
            "wa_retention_objects_deleted_total",
            "Archive objects deleted because every record in them expired and none is held.",
            registry=registry,
        )
        self.events_expired = Counter(
            "wa_retention_events_expired_total",
            "Index rows removed by retention, by retention class.",
            ["class"],
            registry=registry,
        )
        self.objects_locked = Counter(
            "wa_retention_objects_locked_total",
            "Expired objects whose deletion the bucket refused (Object Lock still running); retried next run.",
            registry=registry,
        )
        self.erasure_pending = Gauge(
            "wa_retention_erasure_requests_pending",
            "Erasure requests (GDPR Art. 17) open: received, blocked by a hold, extended or in progress.",
            registry=registry,
        )
        self.erasure_oldest_pending_age = Gauge(
            "wa_retention_oldest_pending_erasure_age_seconds",
            "Age of the oldest open erasure request.",
            registry=registry,
        )
        self.erasure_nearest_deadline = Gauge(
            "wa_retention_erasure_nearest_deadline_seconds",
            "Seconds until the nearest deadline of an open erasure request (one month, three when extended;"
            " negative when overdue; NaN without open requests).",
            registry=registry,
        )
        self.erasures_overdue = Gauge(
            "wa_retention_erasure_requests_overdue",
            "Open erasure requests past their deadline.",
            registry=registry,
        )
        self.erasures = Counter(
            "wa_retention_erasures_total",
            "Erasure request transitions by outcome (completed, blocked_by_hold, refused, extended).",
            ["outcome"],
            registry=registry,
        )
        self.keys_shredded = Counter(
            "wa_retention_keys_shredded_total", "Subject data keys destroyed (crypto-shredding).", registry=registry
        )
        self.approvals_pending = Gauge(
            "wa_retention_approval_requests_pending",
            "Four-eyes requests waiting for a second person's approval (not expired), by kind (the registered kinds:"
            " erase, hold.release, case.close, case.export, export…).",
            ["kind"],
            registry=registry,
        )
        self.approvals_expiring = Gauge(
            "wa_retention_approval_request_nearest_expiry_seconds",
            "Seconds until the soonest pending four-eyes request of the kind expires unanswered (NaN when none"
            " waits); an expired request is never carried out.",
            ["kind"],
            registry=registry,
        )
        self.holds_active = Gauge(
            "wa_retention_legal_holds_active", "Legal holds currently in force.", registry=registry
        )
        self.decryptions = Counter(
            "wa_retention_audited_reads_total",
            "Audited decryptions of a subject's records (search, retrieval, export), by purpose.",
            ["purpose"],
            registry=registry,
        )
        self.exports = Counter(
            "wa_retention_subject_exports_total", "Subject-access exports (Art. 15/20) written.", registry=registry
        )
        self.verify_findings = Gauge(
            "wa_archive_verify_findings",
            "What the last `wa-archive verify` run found (services/evidence/verify.py): objects missing, altered or"
            " unexpected, faults of the hash chain, checkpoints that do not verify. Anything above 0 is tampering"
            " until shown otherwise (docs/OPERATIONS.md, ArchiveTamperingSuspected).",
            ["kind"],
            registry=registry,
        )
        self.verify_last_run = Gauge(
            "wa_archive_verify_last_run_timestamp_seconds",
            "When the last `wa-archive verify` run that finished (whatever it found) finished.",
            registry=registry,
        )
        self.chain_last_checkpoint = Gauge(
            "wa_archive_chain_last_checkpoint_timestamp_seconds",
            "When the last signed checkpoint of the hash chain was written by this process.",
            registry=registry,
        )
        self.export_jobs = Counter(
            "wa_retention_export_jobs_total",
            "Export jobs run by the retention service's worker, by outcome (done, failed).",
            ["outcome"],
            registry=registry,
        )
        self.break_glass = Counter(
            "wa_retention_break_glass_total",
            "Break-glass accesses (a reader's read outside their cases), by step: requested, approved, rejected."
            " Each one alerts (WaBreakGlassAccess).",
            ["step"],
            registry=registry,
        )
        for step in BREAK_GLASS_STEPS:
            # At 0 from the start: increase() sees the first request (a series born at 1 shows no increase).
            self.break_glass.labels(step)
