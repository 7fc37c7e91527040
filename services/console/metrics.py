"""Prometheus metrics of the review console's own work (the actions' metrics are services/governance/metrics.py).
Labels are closed sets: outcomes, statuses, reasons; never a name, an address or a token."""

from __future__ import annotations

from typing import Literal

from prometheus_client import CollectorRegistry, Counter

SignInOutcome = Literal["accepted", "refused", "locked", "no_role", "failed"]
RefusalReason = Literal["form", "role", "scope", "body", "credentials", "locked"]
SessionEnd = Literal["revoked", "reread", "logout"]


class ConsoleMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sign_ins = Counter(
            "wa_console_sign_ins_total",
            "Console sign-ins, by outcome: accepted, refused (wrong name or token), locked (throttled: too many "
            "attempts for the name or from the address; the credentials were not checked), no_role (the provider "
            "signed the person in, no archive role is mapped to them), failed (the provider's answer did not check "
            "out: state, code, ID token, step-up).",
            ["outcome"],
            registry=registry,
        )
        self.refused_forms = Counter(
            "wa_console_refused_forms_total", "Console forms refused (CSRF token or origin).", registry=registry
        )
        self.refusals = Counter(
            "wa_console_refusals_total",
            "Console requests refused, by status (401, 403, 413, 429) and reason (credentials, locked, form, role, "
            "scope: a reader's read outside their cases, body).",
            ["status", "reason"],
            registry=registry,
        )
        self.sessions_ended = Counter(
            "wa_console_sessions_ended_total",
            "Sessions ended by the console, by why: revoked (the named credential that opened it was removed, "
            "replaced or given another role), reread (reading its roles from the provider failed or left no role), "
            "logout (the provider's back-channel logout).",
            ["reason"],
            registry=registry,
        )

    def refused(self, status: int, reason: RefusalReason) -> None:
        self.refusals.labels(str(status), reason).inc()
