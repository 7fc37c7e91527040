"""Settings of the review console (environment variables prefixed ``WA_CONSOLE_``).

The console opens the archive with the retention service's access settings (``WA_RETENTION_``: PostgreSQL, S3,
keys, policy) and signs people in with its named credentials (``WA_RETENTION_ADMIN_TOKENS``): one set of secrets,
one action layer.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_CONSOLE_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8083, ge=0, le=65535)
    # /healthz, /readyz and /metrics: a port of their own, so that the Ingress of the pages cannot reach them.
    ops_port: int = Field(default=9083, ge=0, le=65535)
    log_level: str = "INFO"
    # A session unused this long is signed out (and its row deleted at the next sign-in).
    idle_timeout_s: float = Field(default=900, ge=30)
    # Behind TLS (the Ingress) the cookie is `Secure`; only the local demo over plain HTTP turns this off.
    secure_cookies: bool = True
    # The viewer's time zone when the browser does not tell it (no JavaScript).
    default_timezone: str = "Europe/Paris"
    # How many messages a timeline page shows.
    page_size: int = Field(default=100, ge=10, le=1000)

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value
