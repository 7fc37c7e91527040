"""Settings of ingest (environment variables prefixed ``WA_INGEST_``)."""

from __future__ import annotations

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import KafkaSettings, strong_token


class IngestSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_INGEST_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=1, le=65535)
    log_level: str = "INFO"
    # One secret per Meta app delivering to this endpoint (several apps / WABAs may share it).
    app_secrets: list[SecretStr]
    verify_token: SecretStr
    # Bearer tokens of the company's own systems that report outbound messages (POST /v1/outbound).
    outbound_tokens: list[SecretStr] = Field(default_factory=list)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    # Meta retries any non-2xx for days, so answering 503 past this deadline is safe; Meta itself gives up on
    # a request after about 20 s, so keep well under that.
    produce_deadline_s: float = Field(default=5.0, gt=0, le=15)
    # Meta sends at most ~3 MB (1,000 updates) in one POST.
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # Connections and requests served at once; beyond, 503 before the app runs (Meta retries). Each request holds
    # at most max_body_bytes, so this also bounds the memory bodies can take.
    max_concurrency: int = Field(default=512, ge=1)

    @field_validator("app_secrets")
    @classmethod
    def _secrets_present(cls, value: list[SecretStr]) -> list[SecretStr]:
        if not value or any(not s.get_secret_value() for s in value):
            raise ValueError("at least one non-empty Meta app secret is required")
        return value

    @field_validator("outbound_tokens")
    @classmethod
    def _outbound_tokens_strong(cls, value: list[SecretStr]) -> list[SecretStr]:
        return [strong_token(token) for token in value]

    @field_validator("verify_token")
    @classmethod
    def _token_present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value():
            raise ValueError("the webhook verify token must not be empty")
        return value
