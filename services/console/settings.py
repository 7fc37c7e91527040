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
    # A session ends this long after its sign-in however busy it is (a working day), so that a stolen or forgotten
    # one does not live for ever.
    session_lifetime_s: float = Field(default=12 * 3600, ge=60)
    # Sign-in throttling (services/console/throttle.py): per account name, per client address; an attempt past the
    # allowance of its window locks that name or address out for lockout_s.
    signin_attempts_per_name: int = Field(default=5, ge=1)
    signin_attempts_per_address: int = Field(default=20, ge=1)
    signin_window_s: float = Field(default=900, gt=0)
    signin_lockout_s: float = Field(default=900, gt=0)
    # Who may say, by X-Forwarded-For, which address a request comes from (uvicorn's forwarded_allow_ips): the
    # client address is what the sign-in throttle counts. Behind the Ingress, its controller ("*" is safe when
    # only the controller can reach the port, as the NetworkPolicy makes it).
    forwarded_allow_ips: str = "127.0.0.1"
    # Requests and connections served at once (beyond, 503); the largest request body and form (beyond, 413): the
    # console's forms are a few short fields.
    max_concurrency: int = Field(default=64, ge=1)
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_form_fields: int = Field(default=32, ge=1)
    max_form_field_bytes: int = Field(default=8 * 1024, ge=256)
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
