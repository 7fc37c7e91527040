"""Settings of the retention service and of the operator CLI (environment variables prefixed ``WA_RETENTION_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import (
    ApiOidcSettings,
    KafkaSettings,
    KeySettings,
    PostgresSettings,
    S3Settings,
    SigningSettings,
    strong_token,
)
from services.core.vocabulary import ReaderScope, Role
from services.evidence.settings import ExportSigningSettings


class AdminToken(BaseModel):
    """A bearer token of the admin API: ``reader`` may search and retrieve; ``dpo`` may also erase, hold, export
    and run retention. The token's name is what the audit log records as the actor."""

    token: SecretStr
    role: Role

    @field_validator("token")
    @classmethod
    def _strong(cls, value: SecretStr) -> SecretStr:
        # The token signs a person in to the console and opens the admin API: 128 bits, not a password.
        return strong_token(value)


class FourEyesSettings(BaseModel):
    """Four eyes (services/actions/approvals.py): what one operator requests waits for another's approval at most
    ``expiry_h`` hours; an export of more than ``export_messages`` messages is requested too (smaller ones run at
    once, as before)."""

    expiry_h: float = Field(default=72, gt=0)
    export_messages: int = Field(default=1_000, ge=0)


class RetentionSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_RETENTION_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8082, ge=0, le=65535)
    # /healthz, /readyz, /metrics and the API's documentation without a token: a port of its own, for Prometheus
    # and the cluster, which the admin API's clients need not reach.
    ops_port: int = Field(default=9082, ge=0, le=65535)
    # Requests and connections served at once (beyond, 503), and the largest request body (beyond, 413): the
    # API's requests are a few small JSON fields.
    max_concurrency: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    log_level: str = "INFO"
    s3: S3Settings = Field(default_factory=S3Settings)
    pg: PostgresSettings = Field(default_factory=PostgresSettings)
    keys: KeySettings
    policy_file: Path | None = None
    # Named static tokens: accepted by the admin API (and the console) in the local demo only.
    admin_tokens: dict[str, AdminToken] = Field(default_factory=dict)
    # The admin API's bearer access tokens from an OpenID Connect provider (services/retention/api/gate.py).
    oidc: ApiOidcSettings | None = None
    # Who the CLI acts as, for the audit log (e.g. the operator's login); the API uses the token's name.
    operator: str = "cli"
    # What a reader may search and open (services/governance/scope.py), in the API, the CLI and the console alike:
    # ``cases``, the custodians of the open cases assigned to them, within each case's period (anything else is
    # break-glass); ``all``, every conversation, as before cases existed. ``all`` is for a support team that must
    # read everything (a community manager in a crisis): docs/OPERATIONS.md "Reader scope" says what it costs.
    reader_scope: ReaderScope = "cases"
    # How long an approved break-glass access (a reader's conversation outside their cases) lasts: a working day.
    break_glass_h: float = Field(default=8, gt=0, le=24)
    # Scheduled retention run; 0 disables it (e.g. when a Kubernetes CronJob runs `wa-archive retention run`).
    run_interval_s: float = Field(default=86_400, ge=0)
    metrics_refresh_s: float = Field(default=15, gt=0)
    # The Ed25519 key that signs exported bags (a Secret; docs/OPERATIONS.md "Export signing key").
    export_signing: ExportSigningSettings = Field(default_factory=ExportSigningSettings)
    # The key that signs the hash chain's checkpoints (a Secret: WA_RETENTION_SIGNING__PRIVATE_KEY); without it no
    # checkpoint is written and `wa-archive verify` says so. A checkpoint every checkpoint_interval_s (0: none but
    # those an export asks for).
    signing: SigningSettings = Field(default_factory=SigningSettings)
    checkpoint_interval_s: float = Field(default=3_600, ge=0)
    # Export jobs (services/evidence/jobs.py): their files go to this bucket (unlocked: they are deleted when they
    # expire), under exports/<job id>/, and are kept export_ttl_s. The worker looks for a queued job every
    # export_poll_s; a job left `running` without a heartbeat for export_stale_s (its worker died) is taken again.
    work_bucket: str = "wa-archive-work"
    export_ttl_s: float = Field(default=24 * 3600, gt=0)
    export_poll_s: float = Field(default=2, gt=0)
    export_stale_s: float = Field(default=300, gt=0)
    # WA_RETENTION_FOUR_EYES__EXPIRY_H, WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES (the console reads the same).
    four_eyes: FourEyesSettings = Field(default_factory=FourEyesSettings)
    # Held messages (services/actions/held_sends.py): the decision records go to the send gateway on this topic
    # through WA_RETENTION_KAFKA__* (a producer-only principal; the console may name its own, WA_CONSOLE_KAFKA__*),
    # connected only when a decision is first published. The sweep that publishes the expired ones runs every
    # held_sweep_interval_s in the retention service (0: never; then `wa-archive approvals sweep` does it).
    kafka: KafkaSettings = Field(default_factory=lambda: KafkaSettings(client_id="wa-actions"))
    decisions_topic: str = "wa.gateway.decisions.v1"
    held_sweep_interval_s: float = Field(default=30, ge=0)

    @field_validator("admin_tokens")
    @classmethod
    def _tokens_distinct(cls, value: dict[str, AdminToken]) -> dict[str, AdminToken]:
        secrets = [t.token.get_secret_value() for t in value.values()]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two admin tokens share the same secret")
        return value
