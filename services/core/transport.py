"""Links a service's settings open in clear: Kafka without TLS, PostgreSQL without a verified certificate, S3 over
http. Outside a local demo each one is a loud warning at start-up (:func:`services.core.settings.load_settings`):
the archive carries every customer conversation, and a journal record is the webhook's plaintext.

The production overlay (deploy/k8s/) sets ``SASL_SSL`` for Kafka, ``sslmode=verify-full`` in every DSN and https
for S3; the local stack runs on 127.0.0.1 in clear, under ``WA_LOCAL_DEMO=1``. A warning, not a refusal: a service
mesh (mTLS sidecars) may encrypt what the settings cannot see.

:func:`plaintext_links` (pure) walks a settings value and names what is in clear, in fixed words;
:func:`warn_plaintext` logs them, once logging is configured, unless ``WA_LOCAL_DEMO=1``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, SecretStr
from pydantic_settings import BaseSettings

from services.core.published import local_demo
from services.core.settings import KafkaSettings, PostgresSettings, S3Settings

log = logging.getLogger("wa_archive.transport")

# libpq's sslmode values that check the server's certificate and its name: anything less accepts a man in the middle.
VERIFIED_SSLMODES: Final = frozenset({"verify-full"})


def _models(value: Any, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], BaseModel]]:
    if isinstance(value, BaseModel):
        yield path, value
        for name in type(value).model_fields:
            yield from _models(getattr(value, name), (*path, name))


def _kafka(settings: KafkaSettings) -> str | None:
    if settings.security_protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
        return f"Kafka security_protocol {settings.security_protocol} (use SASL_SSL)"
    return None


def _postgres(settings: PostgresSettings) -> str | None:
    dsn = settings.dsn.get_secret_value() if isinstance(settings.dsn, SecretStr) else str(settings.dsn)
    try:
        modes = parse_qs(urlsplit(dsn).query).get("sslmode", [])
    except ValueError:
        modes = []
    mode = modes[-1] if modes else "prefer (the default)"
    if mode not in VERIFIED_SSLMODES:
        return f"PostgreSQL sslmode={mode} (use sslmode=verify-full)"
    return None


def _s3(settings: S3Settings) -> str | None:
    endpoint = settings.endpoint_url
    if endpoint is not None and urlsplit(endpoint).scheme.lower() != "https":
        return "S3 endpoint over http (use https)"
    return None


def plaintext_links(settings: BaseModel, env_prefix: str | None = None) -> list[str]:
    """Each link of ``settings`` that is not encrypted and authenticated, as ``VARIABLE: what`` (no secret, no
    address), in field order; ``env_prefix`` defaults to the settings class's own."""
    if env_prefix is None:
        env_prefix = str(settings.model_config.get("env_prefix", "")) if isinstance(settings, BaseSettings) else ""
    found: list[str] = []
    for path, model in _models(settings, ()):
        problem = None
        if isinstance(model, KafkaSettings):
            problem = _kafka(model)
        elif isinstance(model, PostgresSettings):
            problem = _postgres(model)
        elif isinstance(model, S3Settings):
            problem = _s3(model)
        if problem is not None:
            found.append(f"{env_prefix}{'__'.join(path).upper()}: {problem}")
    return found


def warn_plaintext(links: list[str]) -> list[str]:
    """Log a warning for each of ``links`` (:func:`plaintext_links`), unless this is a local demo; returns what it
    logged. Called once logging is configured, so that the warning reaches the log pipeline in its format."""
    if local_demo():
        return []
    for link in links:
        log.warning(
            "INSECURE TRANSPORT %s: the archive's data crosses this link in clear or to an unverified server"
            " (docs/OPERATIONS.md, 'Transport security')",
            link,
        )
    return links
