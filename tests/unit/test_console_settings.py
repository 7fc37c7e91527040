"""The console's own logins: whatever retention's settings hold, the console opens the archive with its own
database role and S3 identity, and keeps retention's bucket, keys and policy."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr, ValidationError

from services.console.settings import ConsoleSettings
from services.core.settings import KeySettings, PostgresSettings, S3Credentials, S3Settings
from services.retention.settings import RetentionSettings

KEY = base64.b64encode(bytes(32)).decode()


def retention() -> RetentionSettings:
    return RetentionSettings(
        s3=S3Settings(
            endpoint_url="http://s3.example:8333",
            bucket="archive",
            prefix="v1",
            access_key="retention-key",
            secret_key=SecretStr("retention-secret"),
        ),
        pg=PostgresSettings(dsn=SecretStr("postgresql://wa_retention:r@db/wa_archive")),
        keys=KeySettings(keks={"k1": SecretStr(KEY)}, current_kek_id="k1", pepper=SecretStr(KEY)),
    )


@pytest.mark.parametrize(
    ("credentials", "expected"),
    [
        pytest.param(
            S3Credentials(access_key="console-key", secret_key=SecretStr("console-secret")),
            ("console-key", "console-secret"),
            id="its own S3 identity",
        ),
        pytest.param(S3Credentials(), (None, None), id="none: the pod's cloud identity, never retention's keys"),
    ],
)
def test_the_console_never_opens_the_archive_with_retentions_logins(
    credentials: S3Credentials, expected: tuple[str | None, str | None]
) -> None:
    console = ConsoleSettings(
        pg=PostgresSettings(dsn=SecretStr("postgresql://wa_console:c@db/wa_archive")), s3=credentials
    )
    opened = console.archive_settings(retention())
    assert opened.pg.dsn.get_secret_value() == "postgresql://wa_console:c@db/wa_archive"
    secret = opened.s3.secret_key.get_secret_value() if opened.s3.secret_key else None
    assert (opened.s3.access_key, secret) == expected
    # Where the archive is and how it is read are retention's.
    assert (opened.s3.endpoint_url, opened.s3.bucket, opened.s3.prefix) == ("http://s3.example:8333", "archive", "v1")
    assert opened.keys == retention().keys
    assert retention().pg.dsn.get_secret_value().startswith("postgresql://wa_retention:"), "the input is unchanged"


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"access_key": "only-the-id"}, id="key id without secret"),
        pytest.param({"secret_key": "only-the-secret"}, id="secret without key id"),
    ],
)
def test_half_an_s3_identity_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError, match="both access_key and secret_key, or neither"):
        S3Credentials.model_validate(fields)
