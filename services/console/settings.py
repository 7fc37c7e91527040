"""Settings of the review console (environment variables prefixed ``WA_CONSOLE_``).

The console opens the archive that the retention service's settings locate (``WA_RETENTION_``: the bucket, the
keys, the policy): one action layer. It signs people in through an OpenID Connect provider (``WA_CONSOLE_OIDC__*``);
in the local demo only, also with the named tokens of ``WA_RETENTION_ADMIN_TOKENS``.
It connects with credentials of its own, never retention's: its PostgreSQL role (``WA_CONSOLE_PG__DSN``) may not
create a key or rewrite the audit log, its S3 identity (``WA_CONSOLE_S3__ACCESS_KEY``/``SECRET_KEY``) may only read.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import ConsoleOidcSettings, KafkaSettings, PostgresSettings, S3Credentials
from services.retention.settings import RetentionSettings


class ConsoleSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_CONSOLE_", env_nested_delimiter="__", extra="ignore")

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
    # Single sign-on (services/console/oidc.py): required outside the local demo, where the named tokens remain.
    oidc: ConsoleOidcSettings | None = None
    # The console's own logins (see the module docstring).
    pg: PostgresSettings = Field(default_factory=PostgresSettings)
    s3: S3Credentials = Field(default_factory=S3Credentials)
    # The producer of held messages' decisions (an approval in the console publishes it): its own principal when
    # set, else retention's WA_RETENTION_KAFKA__*.
    kafka: KafkaSettings | None = None

    def archive_settings(self, retention: RetentionSettings) -> RetentionSettings:
        """Retention's view of the archive with the console's own database role and S3 identity in place of
        retention's: whatever ``WA_RETENTION_PG__DSN`` and ``WA_RETENTION_S3__*_KEY`` hold, the console never uses
        them."""
        s3 = retention.s3.model_copy(update={"access_key": self.s3.access_key, "secret_key": self.s3.secret_key})
        return retention.model_copy(update={"pg": self.pg, "s3": s3, "kafka": self.kafka or retention.kafka})

    @field_validator("default_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value
