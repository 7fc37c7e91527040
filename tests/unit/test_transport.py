"""Links in clear are named at start-up outside a local demo: Kafka without TLS, PostgreSQL without a verified
certificate, S3 over http; the production configuration of deploy/k8s names none."""

from __future__ import annotations

import logging
import secrets

import pytest
from pydantic import SecretStr

from devtools.samples import REPO_ROOT, load_demo_env
from services.archiver.settings import ArchiverSettings
from services.core.published import LOCAL_DEMO_FLAG
from services.core.settings import KafkaSettings, PostgresSettings, S3Settings, read_env_file
from services.core.transport import plaintext_links, warn_plaintext
from services.ingest.settings import IngestSettings
from services.retention.settings import RetentionSettings

pytestmark = pytest.mark.unit

PASSWORD = "a-secret-password-never-logged"


@pytest.mark.parametrize(
    ("kafka", "expected"),
    [
        pytest.param(KafkaSettings(), ["KAFKA: Kafka security_protocol PLAINTEXT (use SASL_SSL)"], id="plaintext"),
        pytest.param(
            KafkaSettings(
                security_protocol="SASL_PLAINTEXT",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username="u",
                sasl_password=SecretStr(PASSWORD),
            ),
            ["KAFKA: Kafka security_protocol SASL_PLAINTEXT (use SASL_SSL)"],
            id="SASL without TLS",
        ),
        pytest.param(KafkaSettings(security_protocol="SSL"), [], id="TLS"),
        pytest.param(
            KafkaSettings(
                security_protocol="SASL_SSL",
                sasl_mechanism="SCRAM-SHA-512",
                sasl_username="u",
                sasl_password=SecretStr(PASSWORD),
            ),
            [],
            id="SASL over TLS",
        ),
    ],
)
def test_kafka(kafka: KafkaSettings, expected: list[str]) -> None:
    assert plaintext_links(kafka, "KAFKA") == expected


@pytest.mark.parametrize(
    ("dsn", "expected"),
    [
        pytest.param(f"postgresql://u:{PASSWORD}@db:5432/d", "prefer (the default)", id="no sslmode"),
        pytest.param(f"postgresql://u:{PASSWORD}@db/d?sslmode=require", "require", id="require: no certificate check"),
        pytest.param(f"postgresql://u:{PASSWORD}@db/d?sslmode=verify-ca", "verify-ca", id="verify-ca: no name check"),
        pytest.param(f"postgresql://u:{PASSWORD}@db/d?sslmode=disable", "disable", id="disable"),
        pytest.param(f"postgresql://u:{PASSWORD}@db/d?sslmode=verify-full", None, id="verify-full"),
        pytest.param(
            f"postgresql://u:{PASSWORD}@db/d?application_name=x&sslmode=verify-full", None, id="among other options"
        ),
    ],
)
def test_postgres(dsn: str, expected: str | None) -> None:
    links = plaintext_links(PostgresSettings(dsn=SecretStr(dsn)), "WA_X_PG")
    assert links == ([] if expected is None else [f"WA_X_PG: PostgreSQL sslmode={expected} (use sslmode=verify-full)"])
    assert all(PASSWORD not in link for link in links), "never the DSN's password"


@pytest.mark.parametrize(
    ("endpoint", "in_clear"),
    [
        pytest.param("http://127.0.0.1:8333", True, id="http"),
        pytest.param("HTTP://s3.internal", True, id="upper-case http"),
        pytest.param("https://s3.eu-central-1.amazonaws.com", False, id="https"),
        pytest.param(None, False, id="the SDK's default endpoint (https)"),
    ],
)
def test_s3(endpoint: str | None, in_clear: bool) -> None:
    assert plaintext_links(S3Settings(endpoint_url=endpoint), "S3") == (
        ["S3: S3 endpoint over http (use https)"] if in_clear else []
    )


def test_the_local_demo_s_links_are_all_named_with_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in load_demo_env().items():
        monkeypatch.setenv(name, value)
    assert [link.split(":")[0] for link in plaintext_links(ArchiverSettings())] == [
        "WA_ARCHIVER_KAFKA",
        "WA_ARCHIVER_S3",
        "WA_ARCHIVER_PG",
    ]


def production_env() -> dict[str, str]:
    """deploy/k8s's ConfigMap, with Secrets as the README tells the platform team to make them."""
    env = read_env_file(REPO_ROOT / "deploy/k8s/base/config.env")
    token = secrets.token_urlsafe(32)
    for service in ("INGEST", "ARCHIVER", "RETENTION"):
        env[f"WA_{service}_KAFKA__SASL_PASSWORD"] = token
    env["WA_INGEST_APP_SECRETS"] = f'["{token}"]'
    env["WA_INGEST_VERIFY_TOKEN"] = token
    env["WA_ARCHIVER_PG__DSN"] = f"postgresql://wa_archiver:{token}@db:5432/wa_archive?sslmode=verify-full"
    env["WA_RETENTION_PG__DSN"] = f"postgresql://wa_retention:{token}@db:5432/wa_archive?sslmode=verify-full"
    env["WA_ARCHIVER_KEYS__KEKS"] = '{"prod-2026": "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="}'
    env["WA_RETENTION_KEYS__KEKS"] = env["WA_ARCHIVER_KEYS__KEKS"]
    env["WA_ARCHIVER_KEYS__PEPPER"] = "MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE="
    env["WA_RETENTION_KEYS__PEPPER"] = env["WA_ARCHIVER_KEYS__PEPPER"]
    return env


@pytest.mark.parametrize("cls", [IngestSettings, ArchiverSettings, RetentionSettings])
def test_the_production_configuration_has_no_link_in_clear(
    cls: type[IngestSettings | ArchiverSettings | RetentionSettings], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in [n for n in __import__("os").environ if n.startswith("WA_")]:
        monkeypatch.delenv(name)
    for name, value in production_env().items():
        monkeypatch.setenv(name, value)
    assert plaintext_links(cls()) == []


def test_the_warning_is_logged_outside_a_local_demo_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    links = plaintext_links(PostgresSettings(dsn=SecretStr(f"postgresql://u:{PASSWORD}@db/d")), "WA_X_PG")
    monkeypatch.setenv(LOCAL_DEMO_FLAG, "1")
    with caplog.at_level(logging.WARNING, logger="wa_archive.transport"):
        assert warn_plaintext(links) == []
    assert caplog.records == []
    monkeypatch.delenv(LOCAL_DEMO_FLAG)
    with caplog.at_level(logging.WARNING, logger="wa_archive.transport"):
        assert warn_plaintext(links) == links
    assert [r.getMessage().split(":")[0] for r in caplog.records] == ["INSECURE TRANSPORT WA_X_PG"]
    assert PASSWORD not in caplog.text
