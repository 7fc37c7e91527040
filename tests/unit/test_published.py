"""Published secrets are refused outside a local demo; tokens carry at least 128 bits of randomness."""

from __future__ import annotations

import json
import secrets
import string
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from bench.common import demo_env as bench_env
from devtools.devrun import demo_env as run_env
from devtools.samples import load_demo_env
from services.archiver.settings import ArchiverSettings
from services.console.settings import ConsoleSettings
from services.core.published import (
    LOCAL_DEMO_FLAG,
    PUBLISHED_SHA256,
    digest,
    is_published,
    local_demo,
    published_settings,
    refusal,
)
from services.core.settings import load_settings
from services.core.token_strength import MIN_TOKEN_BITS, estimated_bits, token_weakness
from services.gateway.settings import GatewaySettings
from services.ingest.settings import IngestSettings
from services.retention.settings import AdminToken, RetentionSettings

DEMO = load_demo_env()


def demo_secrets() -> dict[str, str]:
    """Every secret value of deploy/local/demo.env, recomputed from the file, by where it is."""
    found = {
        "WA_S3_SECRET_KEY": DEMO["WA_S3_SECRET_KEY"],
        "WA_PG_PASSWORD": DEMO["WA_PG_PASSWORD"],
        "WA_INGEST_VERIFY_TOKEN": DEMO["WA_INGEST_VERIFY_TOKEN"],
        "WA_ARCHIVER_KEYS__PEPPER": DEMO["WA_ARCHIVER_KEYS__PEPPER"],
        "WA_ARCHIVER_GRAPH__TOKEN": DEMO["WA_ARCHIVER_GRAPH__TOKEN"],
    }
    for i, value in enumerate(json.loads(DEMO["WA_INGEST_APP_SECRETS"])):
        found[f"WA_INGEST_APP_SECRETS[{i}]"] = value
    for i, value in enumerate(json.loads(DEMO["WA_INGEST_OUTBOUND_TOKENS"])):
        found[f"WA_INGEST_OUTBOUND_TOKENS[{i}]"] = value
    for kek_id, value in json.loads(DEMO["WA_ARCHIVER_KEYS__KEKS"]).items():
        found[f"KEK {kek_id}"] = value
    for name, entry in json.loads(DEMO["WA_RETENTION_ADMIN_TOKENS"]).items():
        found[f"admin token {name}"] = entry["token"]
    for service in ("ARCHIVER", "RETENTION", "CONSOLE"):  # each service's own S3 identity and database role
        found[f"WA_{service}_S3__SECRET_KEY"] = DEMO[f"WA_{service}_S3__SECRET_KEY"]
        password = urlsplit(DEMO[f"WA_{service}_PG__DSN"]).password
        assert password is not None
        found[f"WA_{service}_PG__DSN password"] = password
    # Each one's Kafka principal; the action layer's (wa-actions) is the retention service's and the console's.
    for service in ("INGEST", "ARCHIVER", "RELAY", "GATEWAY", "RETENTION", "CONSOLE"):
        found[f"WA_{service}_KAFKA__SASL_PASSWORD"] = DEMO[f"WA_{service}_KAFKA__SASL_PASSWORD"]
    # The backup tooling's S3 identity and its exporter's database role (services/backups).
    found["WA_PGBACKUP_S3_SECRET_KEY"] = DEMO["WA_PGBACKUP_S3_SECRET_KEY"]
    found["WA_PGBACKUP_PG__DSN password"] = urlsplit(DEMO["WA_PGBACKUP_PG__DSN"]).password or ""
    found["WA_RETENTION_EXPORT_SIGNING__KEY"] = DEMO["WA_RETENTION_EXPORT_SIGNING__KEY"]
    found["WA_RETENTION_SIGNING__PRIVATE_KEY"] = DEMO["WA_RETENTION_SIGNING__PRIVATE_KEY"]
    # The identity provider's (Keycloak, local stack): its administrator, the clients' secrets, the demo people.
    for name in ("WA_KEYCLOAK_ADMIN_PASSWORD", "WA_KEYCLOAK_API_CLIENT_SECRET", "WA_CONSOLE_OIDC__CLIENT_SECRET"):
        found[name] = DEMO[name]
    for name in ("WA_KEYCLOAK_DEMO_PASSWORDS", "WA_KEYCLOAK_DEMO_TOTP_SECRETS"):
        for username, value in json.loads(DEMO[name]).items():
            found[f"{name} {username}"] = value
    return found


def test_the_digests_are_exactly_the_secrets_of_demo_env() -> None:
    """Every secret of the file is known (none added to demo.env without its digest) and every digest is one of
    them (none left behind when a demo secret changes)."""
    assert {digest(value) for value in demo_secrets().values()} == PUBLISHED_SHA256


def test_every_secret_looking_variable_of_demo_env_is_covered() -> None:
    """A new secret variable in demo.env cannot slip past demo_secrets() above."""
    secret_words = ("SECRET", "TOKEN", "PASSWORD", "KEKS", "PEPPER", "DSN", "SIGNING__KEY", "PRIVATE_KEY")
    covered = {v for v in demo_secrets().values()}
    for name, value in DEMO.items():
        if not any(word in name for word in secret_words):
            continue
        if name.endswith("DSN"):
            assert urlsplit(value).password in covered, name
        elif value.startswith(("[", "{")):
            assert any(secret in value for secret in covered), name
        else:
            assert value in covered, name


def test_the_demo_dsn_is_recognised_by_its_password() -> None:
    assert is_published(DEMO["WA_RETENTION_PG__DSN"])
    password = urlsplit(DEMO["WA_RETENTION_PG__DSN"]).password
    assert password is not None
    assert not is_published(DEMO["WA_RETENTION_PG__DSN"].replace(password, secrets.token_urlsafe(16)))
    assert not is_published("postgresql://[broken")


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        pytest.param({}, False, id="unset"),
        pytest.param({LOCAL_DEMO_FLAG: "1"}, True, id="set to 1"),
        pytest.param({LOCAL_DEMO_FLAG: "true"}, False, id="only 1 counts"),
        pytest.param({LOCAL_DEMO_FLAG: ""}, False, id="empty"),
    ],
)
def test_local_demo_flag(environ: dict[str, str], expected: bool) -> None:
    assert local_demo(environ) is expected


def set_demo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in DEMO.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize(
    ("cls", "expected"),
    [
        pytest.param(
            IngestSettings,
            [
                "WA_INGEST_APP_SECRETS",
                "WA_INGEST_VERIFY_TOKEN",
                "WA_INGEST_OUTBOUND_TOKENS",
                "WA_INGEST_KAFKA__SASL_PASSWORD",
            ],
            id="ingest",
        ),
        pytest.param(
            ArchiverSettings,
            [
                "WA_ARCHIVER_KAFKA__SASL_PASSWORD",
                "WA_ARCHIVER_S3__SECRET_KEY",
                "WA_ARCHIVER_PG__DSN",
                "WA_ARCHIVER_KEYS__KEKS",
                "WA_ARCHIVER_KEYS__PEPPER",
                "WA_ARCHIVER_GRAPH__TOKEN",
            ],
            id="archiver",
        ),
        pytest.param(
            GatewaySettings,
            ["WA_GATEWAY_KAFKA__SASL_PASSWORD", "WA_GATEWAY_APP_SECRET", "WA_GATEWAY_SEND_TOKENS"],
            id="gateway",
        ),
        pytest.param(
            RetentionSettings,
            [
                "WA_RETENTION_S3__SECRET_KEY",
                "WA_RETENTION_PG__DSN",
                "WA_RETENTION_KEYS__KEKS",
                "WA_RETENTION_KEYS__PEPPER",
                "WA_RETENTION_ADMIN_TOKENS__TOKEN",
                "WA_RETENTION_EXPORT_SIGNING__KEY",
                "WA_RETENTION_SIGNING__PRIVATE_KEY",
                "WA_RETENTION_KAFKA__SASL_PASSWORD",  # the action layer's Kafka principal (held sends' decisions)
            ],
            id="retention, console and CLI",
        ),
    ],
)
def test_each_published_setting_is_named(
    cls: type[IngestSettings | ArchiverSettings | RetentionSettings],
    expected: list[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_demo_env(monkeypatch)
    prefix = str(cls.model_config.get("env_prefix"))
    assert published_settings(cls(), prefix) == expected


def test_load_settings_refuses_published_secrets_without_the_flag(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    set_demo_env(monkeypatch)
    monkeypatch.delenv(LOCAL_DEMO_FLAG, raising=False)
    with pytest.raises(SystemExit) as exited:
        load_settings(IngestSettings)
    assert exited.value.code == 2
    message = capsys.readouterr().err
    assert "WA_INGEST_APP_SECRETS" in message
    assert f"{LOCAL_DEMO_FLAG}=1" in message
    assert DEMO["WA_INGEST_VERIFY_TOKEN"] not in message  # the variable is named, never its value


def test_load_settings_accepts_them_in_a_local_demo(monkeypatch: pytest.MonkeyPatch) -> None:
    set_demo_env(monkeypatch)
    monkeypatch.setenv(LOCAL_DEMO_FLAG, "1")
    assert load_settings(IngestSettings).verify_token.get_secret_value() == DEMO["WA_INGEST_VERIFY_TOKEN"]


def test_the_console_s_own_logins_are_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """The console holds a database role, an S3 identity and an OIDC client of its own: the demo's are refused,
    others are not."""
    monkeypatch.delenv(LOCAL_DEMO_FLAG, raising=False)
    set_demo_env(monkeypatch)
    assert published_settings(ConsoleSettings(), "WA_CONSOLE_") == [
        "WA_CONSOLE_OIDC__CLIENT_SECRET",
        "WA_CONSOLE_PG__DSN",
        "WA_CONSOLE_S3__SECRET_KEY",
        "WA_CONSOLE_KAFKA__SASL_PASSWORD",  # the action layer's Kafka principal (held sends' decisions)
    ]
    monkeypatch.setenv("WA_CONSOLE_OIDC__CLIENT_SECRET", secrets.token_urlsafe(24))
    monkeypatch.setenv("WA_CONSOLE_PG__DSN", f"postgresql://wa_console:{secrets.token_urlsafe(24)}@db:5432/wa_archive")
    monkeypatch.setenv("WA_CONSOLE_S3__SECRET_KEY", secrets.token_urlsafe(24))
    monkeypatch.setenv("WA_CONSOLE_KAFKA__SASL_PASSWORD", secrets.token_urlsafe(24))
    assert published_settings(ConsoleSettings(), "WA_CONSOLE_") == []


def test_the_refusal_says_what_to_do() -> None:
    message = refusal(["WA_INGEST_APP_SECRETS"])
    assert "secrets.token_urlsafe(32)" in message
    assert "openssl rand -base64 32" in message


# ------------------------------------------------------------------------------------------ token strength


@pytest.mark.parametrize(
    ("token", "weak"),
    [
        pytest.param("udTvlLKqESaFZUFfhSpfgQ", False, id="token_urlsafe(16) without digits: 22 characters, 128 bits"),
        pytest.param(secrets.token_hex(16), False, id="token_hex(16): 32 hex digits, 128 bits"),
        pytest.param(secrets.token_hex(16).upper(), False, id="upper-case hex"),
        pytest.param(secrets.token_urlsafe(32), False, id="token_urlsafe(32)"),
        pytest.param(secrets.token_hex(15), True, id="30 hex digits: 120 bits"),
        pytest.param("udTvlLKqESaFZUFfhSpf", True, id="20 base64url characters: 120 bits"),
        pytest.param("demo-reader-token-local", True, id="a phrase of lower-case words"),
        pytest.param("reader-token-for-tests", True, id="a phrase of 22 lower-case letters and dashes"),
        pytest.param("a" * 64, True, id="one character repeated"),
        pytest.param("abcd" * 16, True, id="a pattern repeated"),
        pytest.param("0123456789abcdef" * 2, True, id="a hex sequence twice"),
        pytest.param("", True, id="empty"),
    ],
)
def test_token_weakness(token: str, weak: bool) -> None:
    assert (token_weakness(token) is not None) is weak


def test_random_tokens_of_128_bits_always_pass() -> None:
    """The shortest tokens the rule asks for, drawn the way README tells operators to: none is refused."""
    refused = [t for t in (secrets.token_urlsafe(32) for _ in range(20_000)) if token_weakness(t)]
    refused += [t for t in (secrets.token_hex(16) for _ in range(20_000)) if token_weakness(t)]
    assert refused == []


@given(st.text(alphabet=string.printable, max_size=19))
def test_anything_under_20_characters_is_refused(token: str) -> None:
    # 19 characters of even the widest alphabet (94 printable) carry under 128 bits.
    assert estimated_bits(token) < MIN_TOKEN_BITS
    assert token_weakness(token) is not None


@given(st.text(alphabet=string.ascii_letters + string.digits, min_size=1, max_size=7), st.integers(2, 20))
def test_a_repeated_pattern_is_refused(pattern: str, times: int) -> None:
    assert token_weakness(pattern * times) is not None


def test_admin_and_outbound_tokens_are_checked_but_demo_ones_are_left_to_the_published_rule() -> None:
    with pytest.raises(ValidationError, match="128 bits"):
        AdminToken(token=SecretStr("short-but-16-chars"), role="reader")
    assert AdminToken(token=SecretStr(json.loads(DEMO["WA_RETENTION_ADMIN_TOKENS"])["demo-dpo"]["token"]), role="dpo")
    with pytest.raises(ValidationError, match="128 bits"):
        IngestSettings(
            app_secrets=[SecretStr("s")], verify_token=SecretStr("v"), outbound_tokens=[SecretStr("outbound-token")]
        )


def test_only_the_local_runs_set_the_flag() -> None:
    """make run and the benchmarks set WA_LOCAL_DEMO; deploy/local/demo.env does not, so that a Secret seeded from
    it is still refused."""
    assert LOCAL_DEMO_FLAG not in DEMO
    assert run_env()[LOCAL_DEMO_FLAG] == "1"
    assert bench_env()[LOCAL_DEMO_FLAG] == "1"
