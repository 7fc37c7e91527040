"""Settings of the send gateway (environment variables prefixed ``WA_GATEWAY_``)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import KafkaSettings

# Meta's limit for a medium uploaded to the Cloud API; a multipart body adds its boundaries and form fields.
MEDIA_MAX_BYTES = 100 * 1024 * 1024
MULTIPART_OVERHEAD_BYTES = 64 * 1024


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_GATEWAY_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8084, ge=1, le=65535)
    ops_host: str = "127.0.0.1"
    ops_port: int = Field(default=9086, ge=1, le=65535)
    log_level: str = "INFO"
    # Meta's Graph API (the stand-in locally). Everything the company calls is forwarded here.
    upstream_url: str = "https://graph.facebook.com"
    # LOCAL ONLY: plain http to a loopback upstream (the Graph API stand-in of the demo and the tests).
    loopback_http: bool = False
    # The WhatsApp Business Account of each business phone number the gateway sends for: the archive files sends
    # under it, and reads a template's text from it (GET /{waba-id}/message_templates).
    business_accounts: dict[str, str] = Field(default_factory=dict)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    # How long a send waits for Kafka's acknowledgement before answering 503 (nothing forwarded): the company's
    # system retries a 503 as it retries Meta's own "temporarily unavailable".
    produce_deadline_s: float = Field(default=5.0, gt=0, le=15)
    # How long Meta may take to answer a send before its outcome is archived "unknown" (the gateway never retries).
    send_timeout_s: float = Field(default=30.0, gt=0)
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # A send request's JSON (Meta's largest are interactive and template messages, a few KB); within one record.
    max_send_bytes: int = Field(default=1024 * 1024, ge=1024, le=3 * 1024 * 1024)
    max_upload_bytes: int = Field(default=MEDIA_MAX_BYTES + MULTIPART_OVERHEAD_BYTES, ge=1024)
    # Templates change rarely and are read with the caller's bearer token; a cached text stays this long.
    template_cache_s: float = Field(default=300.0, ge=0)
    max_concurrency: int = Field(default=512, ge=1)

    # Approval of sensitive messages (services/gateway/policy.py, services/gateway/held.py). Unset: every send is
    # forwarded and no decision is consumed.
    policy_dir: Path | None = None
    # How long a held send waits for a decision (its ``held_until``); the action layer expires it then.
    hold_h: float = Field(default=24.0, gt=0, le=24 * 30)
    # The Meta app's secret: the gateway signs the status webhooks of held sends with it, as Meta signs its own, so
    # that the relay delivers them to the company's systems signed like every other webhook.
    app_secret: SecretStr | None = None
    # The bearer token an approved send is sent with, per business phone number
    # (WA_GATEWAY_SEND_TOKENS__<phone_number_id>, from a Secret): the caller's token is never stored, so a held send
    # cannot be sent with it later.
    send_tokens: dict[str, SecretStr] = Field(default_factory=dict)
    decisions_topic: str = "wa.gateway.decisions.v1"
    decisions_group: str = "wa-gateway-decisions"
    # The Graph API version an approved send is posted to (the held request's own path is not kept).
    graph_version: str = Field(default="v21.0", pattern=r"^v[0-9]{1,3}(\.[0-9]{1,3})?$")
    # The business number as customers see it, per phone_number_id: ``metadata.display_phone_number`` of the
    # status webhooks the gateway writes (left out when unknown).
    display_phone_numbers: dict[str, str] = Field(default_factory=dict)

    @field_validator("upstream_url")
    @classmethod
    def _an_origin(cls, value: str) -> str:
        origin = value.rstrip("/")
        if urlsplit(origin).path or "?" in origin or "#" in origin:
            # Requests keep their own path (/{version}/...): a path here would be dropped, not prefixed.
            raise ValueError(f"upstream_url {value!r} must be an origin (scheme, host, port), without a path")
        return origin

    @model_validator(mode="after")
    def _approval_complete(self) -> GatewaySettings:
        if self.policy_dir is not None and (self.app_secret is None or not self.app_secret.get_secret_value()):
            raise ValueError(
                "policy_dir is set but app_secret is not: the statuses of held sends reach the company's systems as"
                " webhooks signed with the Meta app secret (WA_GATEWAY_APP_SECRET, from the same Secret as ingest's)"
            )
        empty = sorted(number for number, token in self.send_tokens.items() if not token.get_secret_value())
        if empty:
            raise ValueError(f"send_tokens: an empty token for {', '.join(empty)}")
        return self

    @model_validator(mode="after")
    def _https_upstream(self) -> GatewaySettings:
        local = self.loopback_http and self.upstream_url.startswith(("http://127.0.0.1", "http://localhost"))
        if not (self.upstream_url.startswith("https://") or local):
            raise ValueError(
                f"upstream_url {self.upstream_url!r} must be https (plain http only to 127.0.0.1 with loopback_http,"
                " for the local stand-in): the company's bearer token travels on it"
            )
        return self
