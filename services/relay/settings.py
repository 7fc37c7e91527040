"""Settings of the relay (environment variables prefixed ``WA_RELAY_``).

Destinations are a JSON list (``WA_RELAY_DESTINATIONS='[{"name": "inbox", "url": "https://…", "fields":
["messages"]}]'``); a destination's own secret is best given by its own variable
(``WA_RELAY_DESTINATION_SECRETS='{"inbox": "…"}'``, from a Kubernetes Secret), so that the list itself holds none.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.core.settings import KafkaSettings
from services.relay.delivery import Backoff

# A destination's name is a metric label, part of a consumer group's and a topic's name, and configuration, never
# personal data: short, lower case.
DESTINATION_NAME = re.compile(r"[a-z0-9]([a-z0-9-]{0,38}[a-z0-9])?")


def loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return host is not None and ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class DestinationSettings(BaseModel):
    """One of the company's systems fed from the journal."""

    name: str
    url: str
    # The webhook fields it wants (``messages``, ``message_template_status_update`` …); empty: every webhook.
    fields: tuple[str, ...] = ()
    # A secret of its own (another Meta app's secret, which its receiver verifies with): the relay then signs the
    # bytes with it (services/relay/delivery.py). Unset: Meta's own signature is passed on.
    secret: SecretStr | None = None
    # Plain http is refused except to a loopback address (the local test receiver) or when allowed here, for a
    # receiver inside the cluster behind its NetworkPolicy.
    allow_plain_http: bool = False
    connect_timeout_s: float = Field(default=5.0, gt=0)
    # Meta itself gives a receiver about 20 s; a receiver slower than this is retried.
    timeout_s: float = Field(default=15.0, gt=0)
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    retry_jitter: float = Field(default=0.2, ge=0, lt=1)
    # How long one record is retried before it is parked: a receiver down for less than this gets everything
    # afterwards, in order; past it the record is parked and the destination moves on. Meta itself retries a
    # failing receiver for up to 7 days, but a parked record is one an operator replays: an hour by default.
    retry_budget_s: float = Field(default=3600.0, ge=0)
    # Default: wa-relay-<name>-parked (provisioned with the destination; deploy/k8s/base/kafka-topics.yaml).
    parking_topic: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not DESTINATION_NAME.fullmatch(value):
            raise ValueError(f"destination name {value!r}: 1-40 of a-z, 0-9 and '-', not starting or ending with '-'")
        return value

    @model_validator(mode="after")
    def _url_and_backoff(self) -> DestinationSettings:
        parts = urlsplit(self.url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"destination {self.name}: url must be an absolute https URL")
        if parts.scheme == "http" and not (self.allow_plain_http or loopback(parts.hostname)):
            raise ValueError(
                f"destination {self.name}: plain http is refused (the bytes are messages): use https, or set"
                " allow_plain_http for a receiver inside the cluster"
            )
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(f"destination {self.name}: retry_max_s must be at least retry_initial_s")
        return self

    def backoff(self) -> Backoff:
        return Backoff(
            initial_s=self.retry_initial_s,
            max_s=self.retry_max_s,
            jitter=self.retry_jitter,
            budget_s=self.retry_budget_s,
        )

    def topic_for_parking(self) -> str:
        return self.parking_topic or f"wa-relay-{self.name}-parked"


class RelaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_RELAY_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8086, ge=0, le=65535)  # the ops port: /healthz, /readyz, /metrics; 0: any (tests)
    log_level: str = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    destinations: list[DestinationSettings]
    # Secrets by destination name, merged into ``destinations`` (a Secret's key per destination).
    destination_secrets: dict[str, SecretStr] = Field(default_factory=dict)
    # Consumer group of a destination: this prefix and its name.
    group_prefix: str = "wa-relay-"
    # Records fetched but not yet delivered, per partition, before the partition is paused (backpressure).
    max_buffered_records: int = Field(default=500, ge=1)
    max_poll_records: int = Field(default=500, ge=1)
    # Offsets are committed after delivery (or parking), at most this often, and on revoke and shutdown.
    commit_interval_s: float = Field(default=1.0, gt=0)
    max_partition_fetch_bytes: int = Field(default=256 * 1024, ge=64 * 1024)

    @model_validator(mode="after")
    def _destinations(self) -> RelaySettings:
        if not self.destinations:
            raise ValueError("WA_RELAY_DESTINATIONS: at least one destination is required")
        names = [d.name for d in self.destinations]
        if len(set(names)) != len(names):
            raise ValueError("WA_RELAY_DESTINATIONS: destination names must be unique")
        unknown = sorted(set(self.destination_secrets) - set(names))
        if unknown:
            raise ValueError(f"WA_RELAY_DESTINATION_SECRETS names no destination: {', '.join(unknown)}")
        for destination in self.destinations:
            secret = self.destination_secrets.get(destination.name)
            if secret is not None:
                destination.secret = secret
            if destination.secret is not None and not destination.secret.get_secret_value():
                raise ValueError(f"destination {destination.name}: an empty secret")
        return self

    def group_id(self, destination: DestinationSettings) -> str:
        return self.group_prefix + destination.name

    def consumer_options(self) -> dict[str, Any]:
        return {**self.kafka.client_options(), "max_partition_fetch_bytes": self.max_partition_fetch_bytes}
