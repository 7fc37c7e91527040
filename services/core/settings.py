"""Settings shared by the services: connection blocks for Kafka, S3, PostgreSQL and the key material.

Each service has one pydantic-settings class with its own prefix (``WA_INGEST_``, ``WA_ARCHIVER_``,
``WA_RETENTION_``) and nests these blocks with ``__`` (``WA_ARCHIVER_KAFKA__BOOTSTRAP_SERVERS``). Settings are
validated when a service starts; a bad value stops it with a message that names the variable, and so does a secret
the repository publishes, outside a local demo (services/core/published.py).
"""

from __future__ import annotations

import base64
import binascii
import sys
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from services.core.published import is_published, local_demo, published_settings, refusal
from services.core.token_strength import token_weakness
from services.core.vocabulary import Role
from services.evidence.signing import load_private_key, load_public_key

SettingsT = TypeVar("SettingsT", bound=BaseSettings)


class KafkaSettings(BaseModel):
    """Where the events live. Production clusters use TLS and SASL; the local stack is plaintext."""

    bootstrap_servers: str = "127.0.0.1:9092"
    events_topic: str = "wa.events.v1"
    dlq_topic: str = "wa.events.dlq.v1"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    client_id: str = "wa-archive"

    @property
    def uses_sasl(self) -> bool:
        """Whether the clients authenticate with SASL; only then are the SASL settings handed to them (a
        configuration that overrides the protocol to plaintext leaves the credentials it inherited unused)."""
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @model_validator(mode="after")
    def _sasl_complete(self) -> KafkaSettings:
        if self.uses_sasl and not (self.sasl_mechanism and self.sasl_username and self.sasl_password):
            raise ValueError("SASL needs sasl_mechanism, sasl_username and sasl_password")
        return self

    def client_options(self) -> dict[str, object]:
        """Keyword arguments common to aiokafka's producer, consumer and admin client."""
        options: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context  # noqa: PLC0415 — only needed with TLS

            options["ssl_context"] = create_ssl_context(cafile=self.ssl_cafile)
        if self.uses_sasl:
            options["sasl_mechanism"] = self.sasl_mechanism
            options["sasl_plain_username"] = self.sasl_username
            options["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return options


class S3Settings(BaseModel):
    """The archive bucket. Any S3 API works (AWS, SeaweedFS, MinIO, Ceph RGW)."""

    endpoint_url: str | None = None
    region: str = "us-east-1"
    access_key: str | None = None
    secret_key: SecretStr | None = None
    bucket: str = "wa-archive"
    prefix: str = "v1"
    # WORM: when set, every object is written with this Object Lock mode and retention (DESIGN.md §4).
    object_lock_mode: Literal["GOVERNANCE", "COMPLIANCE"] | None = None
    object_lock_days: int = Field(default=0, ge=0)
    max_pool_connections: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _lock_has_duration(self) -> S3Settings:
        if self.object_lock_mode and self.object_lock_days == 0:
            raise ValueError("object_lock_mode needs object_lock_days > 0")
        return self


class PostgresSettings(BaseModel):
    """A service's database login: each service has a role of its own (migration 0017 says what it may do)."""

    dsn: SecretStr = SecretStr("postgresql://wa_archive@127.0.0.1:5432/wa_archive")
    min_connections: int = Field(default=1, ge=1)
    max_connections: int = Field(default=8, ge=1)


class S3Credentials(BaseModel):
    """An S3 identity without the bucket's address: the console reads retention's bucket with keys of its own.
    Both unset: the SDK's own chain (the pod's cloud identity, IRSA or Workload Identity)."""

    access_key: str | None = None
    secret_key: SecretStr | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> S3Credentials:
        if (self.access_key is None) != (self.secret_key is None):
            raise ValueError("set both access_key and secret_key, or neither")
        return self


class SigningSettings(BaseModel):
    """The Ed25519 key that signs what the archive vouches for (the hash chain's checkpoints; services/evidence/
    signing.py): ``private_key`` from a Secret, PEM or the base64 of its 32-byte seed. ``trusted_public_keys`` are
    the public keys of earlier signing keys, so that what they signed still verifies after a rotation."""

    private_key: SecretStr | None = None
    trusted_public_keys: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _keys_readable(self) -> SigningSettings:
        if self.private_key is not None:
            load_private_key(self.private_key.get_secret_value())
        for text in self.trusted_public_keys:
            load_public_key(text)
        return self


# The realm roles of deploy/local's Keycloak realm (and a sensible naming elsewhere).
DEFAULT_ROLE_MAP: dict[str, Role] = {"archive-reader": "reader", "archive-dpo": "dpo"}


class OidcRoleSettings(BaseModel):
    """How a provider's token says what a person or a machine may do: the claim that holds its roles (a dotted path,
    ``realm_access.roles`` for Keycloak's realm roles; ``roles`` or ``groups`` for most others) and which of those
    roles map to which archive role (JSON, provider role -> ``reader`` or ``dpo``; the strongest mapped role wins)."""

    roles_claim: str = Field(default="realm_access.roles", min_length=1)
    role_map: dict[str, Role] = Field(default_factory=lambda: dict(DEFAULT_ROLE_MAP), min_length=1)


class ConsoleOidcSettings(OidcRoleSettings):
    """The console's OpenID Connect client (``WA_CONSOLE_OIDC__*``; services/console/oidc.py).

    ``issuer`` is compared exactly with the tokens' ``iss`` (no trailing slash unless the provider has one). A
    person's roles are read again from the provider every ``roles_reread_s`` (at most 5 minutes: a person removed
    from the DPO group loses the DPO pages within that delay). ``step_up_acr`` (e.g. ``mfa``): the ``acr`` an
    erasure, a hold release or an export needs, obtained within ``step_up_max_age_s``; empty, none.
    ``redirect_base_url``: the console's public origin (``https://console.example.org``), from which the callback
    and post-logout addresses are made; unset, the request's own origin (fine locally; set it behind a proxy)."""

    issuer: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr | None = None
    step_up_acr: str = ""
    step_up_max_age_s: float = Field(default=300, gt=0)
    roles_reread_s: float = Field(default=120, gt=0, le=300)
    redirect_base_url: str | None = None

    @field_validator("redirect_base_url")
    @classmethod
    def _origin(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("https://", "http://")):
            raise ValueError("redirect_base_url must be an http(s) origin such as https://console.example.org")
        return value.rstrip("/") if value else None


class ApiOidcSettings(OidcRoleSettings):
    """The admin API's bearer access tokens (``WA_RETENTION_OIDC__*``): JWTs of ``issuer`` whose audience holds
    ``audience``; the caller's roles as for the console (``roles_claim``, ``role_map``)."""

    issuer: str = Field(min_length=1)
    audience: str = Field(default="wa-archive-api", min_length=1)


class MigratorSettings(BaseSettings):
    """``wa-archive migrate`` (prefix ``WA_MIGRATOR_``): the login of the schema's owner, which no service holds."""

    model_config = SettingsConfigDict(env_prefix="WA_MIGRATOR_", env_nested_delimiter="__", extra="ignore")

    pg: PostgresSettings = Field(default_factory=PostgresSettings)


def decode_key(value: str, what: str) -> bytes:
    """Base64 of exactly 32 bytes, or a ValueError that says which key is wrong (never its value)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must decode to 32 bytes, got {len(raw)}")
    return raw


class KeySettings(BaseModel):
    """Key material: key-encryption keys by id (rotation: wrap with the current one, unwrap with any) and the
    pepper of the subject pseudonyms. In production these come from a Kubernetes Secret or a KMS."""

    keks: dict[str, SecretStr]
    current_kek_id: str
    pepper: SecretStr

    @field_validator("keks")
    @classmethod
    def _keks_are_keys(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not value:
            raise ValueError("at least one KEK is needed")
        for kek_id, secret in value.items():
            decode_key(secret.get_secret_value(), f"KEK {kek_id!r}")
        return value

    @model_validator(mode="after")
    def _current_is_known(self) -> KeySettings:
        if self.current_kek_id not in self.keks:
            raise ValueError(f"current_kek_id {self.current_kek_id!r} is not one of the KEK ids {sorted(self.keks)}")
        decode_key(self.pepper.get_secret_value(), "pepper")
        return self

    def kek_bytes(self) -> dict[str, bytes]:
        return {kid: decode_key(s.get_secret_value(), f"KEK {kid!r}") for kid, s in self.keks.items()}

    def pepper_bytes(self) -> bytes:
        return decode_key(self.pepper.get_secret_value(), "pepper")


def strong_token(value: SecretStr) -> SecretStr:
    """A bearer token that carries at least 128 bits of randomness (services/core/token_strength.py), else a
    ValueError saying so (never the token). A published demo token is left to the published-secret rule, which
    allows it in a local demo only."""
    token = value.get_secret_value()
    if not is_published(token):
        weakness = token_weakness(token)
        if weakness is not None:
            raise ValueError(weakness)
    return value


def load_settings(cls: type[SettingsT]) -> SettingsT:
    """Build a service's settings from the environment; on error print what is wrong and exit(2). A secret that the
    repository publishes (deploy/local/demo.env) is such an error unless ``WA_LOCAL_DEMO=1``."""
    try:
        settings = cls()
    except SettingsError as exc:
        print(f"invalid configuration for {cls.__name__}: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValidationError as exc:
        prefix = str(cls.model_config.get("env_prefix", ""))
        lines = [f"invalid configuration for {cls.__name__}:"]
        for error in exc.errors():
            where = "__".join(str(part) for part in error["loc"]).upper()
            lines.append(f"  {prefix}{where}: {error['msg']}")
        print("\n".join(lines), file=sys.stderr)
        raise SystemExit(2) from None
    published = published_settings(settings, str(cls.model_config.get("env_prefix", "")))
    if published and not local_demo():
        print(f"invalid configuration for {cls.__name__}: {refusal(published)}", file=sys.stderr)
        raise SystemExit(2)
    return settings


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of an env file such as deploy/local/demo.env: comments and blank lines ignored, one level of
    surrounding quotes removed (the file is also sourced by shells, which need JSON values quoted)."""
    values: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        name, sep, value = stripped.partition("=")
        if not sep:
            raise ValueError(f"{path}: not KEY=VALUE: {stripped!r}")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[name] = value
    return values
