"""Settings of the archiver (environment variables prefixed ``WA_ARCHIVER_``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.archiver.media import LOOPBACK_HOSTS, META_MEDIA_HOSTS, READ_BYTES, Egress
from services.archiver.media_store import MIN_PART_BYTES, stream_memory
from services.core.crypto import MAX_CHUNK_BYTES
from services.core.settings import KafkaSettings, KeySettings, PostgresSettings, S3Settings

HOST_NAME = re.compile(r"[a-z0-9]([a-z0-9.-]*[a-z0-9])?")


class GraphSettings(BaseModel):
    """Meta's Graph API, for media downloads (on arrival; a media id lives 30 days, a download URL minutes)."""

    base_url: str = "https://graph.facebook.com/v21.0"
    token: SecretStr | None = None
    attempts: int = Field(default=3, ge=1)
    backoff_s: float = Field(default=0.5, ge=0)
    timeout_s: float = Field(default=30.0, gt=0)
    max_bytes: int = Field(default=100 * 1024 * 1024, ge=1)
    concurrency: int = Field(default=8, ge=1)
    # The hosts a download URL from the Graph API may name (exact, or "*.domain" for any host below it): the bearer
    # token is sent to these and to base_url only. Meta's CDN by default.
    download_hosts: tuple[str, ...] = META_MEDIA_HOSTS
    # LOCAL ONLY: lets base_url and downloads use plain http to a loopback address (the Graph API stand-in of the
    # demo and the tests, deploy/local/demo.env). Everything else stays https-only either way.
    loopback_http: bool = False

    @field_validator("download_hosts")
    @classmethod
    def _host_patterns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            name = pattern.removeprefix("*.")
            if not (HOST_NAME.fullmatch(name) or name in LOOPBACK_HOSTS):
                raise ValueError(f"download host {pattern!r}: expected a lower-case host name, or '*.' and a domain")
        return value

    @model_validator(mode="after")
    def _https_base_url(self) -> GraphSettings:
        refused = self.egress().refusal(self.base_url, check_host=False)
        if refused is not None:
            raise ValueError(
                f"graph base_url {self.base_url!r} is refused ({refused}): use https (plain http only to 127.0.0.1"
                " with loopback_http, for the local stand-in)"
            )
        return self

    def egress(self) -> Egress:
        return Egress(download_hosts=self.download_hosts, loopback_http=self.loopback_http)


class MediaSettings(BaseModel):
    """How media are archived: streamed (download → sha256 → sealed in chunks → S3 multipart), within a budget of
    bytes for the whole process, so the archiver's memory depends on neither the size nor the number of media."""

    # Bytes all media downloads of the process may hold at once (services/core/budget.py). A download reserves
    # what its upload may hold (services/archiver/media_store.py stream_memory): about a chunk plus two parts for a
    # large file (16.3 MiB with the defaults), twice its size for a small one; the rest wait their turn.
    budget_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    # Plaintext bytes per sealed chunk (format version 3; docs/ARCHIVE_FORMAT.md): what a reader holds at a time.
    chunk_bytes: int = Field(default=256 * 1024, ge=4 * 1024, le=MAX_CHUNK_BYTES)
    # Bytes per S3 multipart part (S3's minimum is 5 MiB for all but the last); a smaller medium is one PUT.
    part_bytes: int = Field(default=8 * 1024 * 1024, ge=MIN_PART_BYTES)
    # How often the media sweep (services/archiver/sweep.py) tries again the media whose download failed, and how
    # many per round; 0 turns it off (another archiver of the group may run it: entries are leased).
    sweep_interval_s: float = Field(default=60.0, ge=0)
    sweep_batch: int = Field(default=10, ge=1)

    @model_validator(mode="after")
    def _budget_holds_one_stream(self) -> MediaSettings:
        one = stream_memory(None, chunk_bytes=self.chunk_bytes, part_bytes=self.part_bytes) + READ_BYTES
        if self.budget_bytes < one:
            raise ValueError(
                f"media budget_bytes ({self.budget_bytes}) must hold at least one large download ({one} bytes with"
                f" chunk_bytes {self.chunk_bytes} and part_bytes {self.part_bytes}): raise it or lower part_bytes"
            )
        return self


class FlushSettings(BaseModel):
    max_records: int = Field(default=2_000, ge=1)
    max_bytes: int = Field(default=8 * 1024 * 1024, ge=1024)
    # A record waits at most this long for its batch: webhook to durable p99 ≈ this + one write (bench/freshness.py).
    max_age_s: float = Field(default=1.0, gt=0)


class ArchiverSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="WA_ARCHIVER_", env_nested_delimiter="__", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8081, ge=0, le=65535)  # 0: any free port (tests)
    log_level: str = "INFO"
    group_id: str = "wa-archiver"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    # Extra aiokafka consumer options. Offsets are committed by the archiver after the data is durable; an
    # auto-commit setting here would commit before that and lose data on a crash, so it is refused.
    consumer_options: dict[str, Any] = Field(default_factory=dict)
    s3: S3Settings = Field(default_factory=S3Settings)
    pg: PostgresSettings = Field(default_factory=PostgresSettings)
    keys: KeySettings
    graph: GraphSettings = Field(default_factory=GraphSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    flush: FlushSettings = Field(default_factory=FlushSettings)
    max_poll_records: int = Field(default=2_000, ge=1)
    # Records buffered per partition behind an in-flight write before the partition is paused (backpressure).
    max_buffered_records: int = Field(default=2_000, ge=1)
    # Retention classes (services.core.policy.py); without a file every record is kept 7 years.
    retention_policy_file: Path | None = None
    # Batches being made durable at once (across partitions). Writes overlap S3/PostgreSQL round trips; more of
    # them buys little on one Python core and costs memory (each holds its decoded batch).
    max_concurrent_writes: int = Field(default=2, ge=1)
    # Prefetch bounds of the Kafka consumer (memory): per partition, and per fetch. aiokafka keeps each partition's
    # last fetch, and the record batches decompressed from it, until every record of it is taken. With 1 MiB per
    # partition the archiver's RSS climbed through a 200,000-event backlog (peaks of 206-295 MB); with 256 KiB and
    # the consumer loop's full collections (services/core/runtime.py) it levels off under 200 MB, for no measurable
    # CPU (docs/OPERATIONS.md, "Archiver memory sizing"). A record batch larger
    # than the bound still comes whole (Kafka returns it alone: tests/integration/test_archiver.py), so a POST of up
    # to MAX_RECORD_BYTES is consumed all the same.
    max_partition_fetch_bytes: int = Field(default=256 * 1024, ge=64 * 1024)
    fetch_max_bytes: int = Field(default=4 * 1024 * 1024, ge=1024 * 1024)
    dek_cache_size: int = Field(default=100_000, ge=1)
    # Backoff of a batch that cannot be made durable (an outage): doubling from retry_initial_s up to retry_max_s,
    # until it succeeds or the archiver is stopped.
    retry_initial_s: float = Field(default=0.2, gt=0)
    retry_max_s: float = Field(default=10.0, gt=0)
    drain_timeout_s: float = Field(default=60.0, gt=0)
    # Tries of a batch, and of a record alone, failing with an exception nobody classified before the record is
    # dead-lettered (services/archiver/writer.py); with retry_initial_s 0.2 the five tries span about 3 s.
    unexpected_attempts: int = Field(default=5, ge=1)
    # After a process died while writing a range, the range is written in this many pieces
    # (services/archiver/inflight.py).
    crash_fan_out: int = Field(default=8, ge=2)

    @field_validator("consumer_options")
    @classmethod
    def _no_auto_commit(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, option in value.items():
            normalised = name.replace(".", "_").lower()
            if normalised == "enable_auto_commit" and str(option).lower() not in ("false", "0"):
                raise ValueError(
                    "enable_auto_commit would commit offsets before the data is archived (at-most-once): refused"
                )
            if normalised in ("group_id", "auto_commit_interval_ms"):
                raise ValueError(f"{name} is managed by the archiver")
        return value

    @model_validator(mode="after")
    def _retry_bounds(self) -> ArchiverSettings:
        if self.retry_max_s < self.retry_initial_s:
            raise ValueError(
                f"retry_max_s ({self.retry_max_s}) must be at least retry_initial_s ({self.retry_initial_s})"
            )
        return self
