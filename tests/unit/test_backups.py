"""barman-cloud's commands and PostgreSQL's archiving and recovery settings (services/backups/barman.py)."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.backups.barman import (
    BackupListUnreadable,
    BackupStore,
    archiving_conf,
    newest_complete,
    parse_backup_list,
    postgres_quote,
    recovery_conf,
)

pytestmark = pytest.mark.unit

STORE = BackupStore(
    tools=Path("/opt/barman/bin"),
    endpoint_url="http://127.0.0.1:8333",
    bucket="wa-archive-pg-backups",
    prefix="/site-a/",
    server_name="main",
    credentials_file=Path("/var/lib/pg it's/creds"),
)


def listed(*items: dict[str, object]) -> str:
    return json.dumps({"backups_list": list(items)})


def ended(backup_id: str) -> datetime:
    """Ten seconds after the backup began (its id is its start)."""
    return datetime.strptime(backup_id, "%Y%m%dT%H%M%S").replace(tzinfo=UTC) + timedelta(seconds=10)


def item(backup_id: str, status: str = "DONE", end: str | None = "") -> dict[str, object]:
    if end == "":
        end = ended(backup_id).isoformat()
    return {"backup_id": backup_id, "status": status, "end_time_iso": end, "begin_wal": "A", "end_wal": "B"}


def test_the_destination_and_server_end_every_command() -> None:
    argv = STORE.list_argv()
    assert argv[0] == "/opt/barman/bin/barman-cloud-backup-list"
    assert argv[-2:] == ["s3://wa-archive-pg-backups/site-a", "main"]
    assert "--endpoint-url" in argv
    assert "--profile" in argv
    assert STORE.restore_argv("20261206T160757", Path("/d"))[-4:] == [
        "s3://wa-archive-pg-backups/site-a", "main", "20261206T160757", "/d",
    ]  # fmt: skip


def test_the_archive_command_names_the_credentials_file_never_a_secret() -> None:
    command = STORE.wal_archive_command()
    words = shlex.split(command)
    assert words[0] == "AWS_SHARED_CREDENTIALS_FILE=/var/lib/pg it's/creds"
    assert words[-1] == "%p"
    assert "secret" not in command.lower()


@pytest.mark.parametrize(
    ("target", "line"),
    [
        pytest.param("latest", "recovery_target_timeline = latest", id="every archived segment"),
        pytest.param("base", "recovery_target = immediate", id="the base backup alone"),
        pytest.param(
            datetime(2026, 12, 6, 17, 0, tzinfo=timezone(timedelta(hours=1))),
            "recovery_target_time = '2026-12-06T16:00:00+00:00'",
            id="a point in time, in UTC",
        ),
    ],
)
def test_recovery_settings_per_target(target: datetime | str, line: str) -> None:
    conf = recovery_conf(STORE, target)  # type: ignore[arg-type]
    assert line in conf.splitlines()
    assert "recovery_target_action = promote" in conf
    assert "barman-cloud-wal-restore" in conf
    assert "%f %p" in conf


def test_archiving_settings_quote_the_command_for_postgresql_conf() -> None:
    conf = archiving_conf(STORE, archive_timeout_s=60)
    assert "archive_mode = on" in conf
    assert "archive_timeout = 60" in conf
    line = next(x for x in conf.splitlines() if x.startswith("archive_command = "))
    # What PostgreSQL reads (quotes doubled) is what the shell then runs (shell quoting): the same words.
    value = line.removeprefix("archive_command = ")[1:-1].replace("''", "'")
    assert shlex.split(value) == shlex.split(STORE.wal_archive_command())
    assert shlex.split(value)[0] == "AWS_SHARED_CREDENTIALS_FILE=/var/lib/pg it's/creds"


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\x00")))
def test_postgres_quote_round_trips(value: str) -> None:
    quoted = postgres_quote(value)
    assert quoted[0] == quoted[-1] == "'"
    assert quoted[1:-1].replace("''", "'") == value


@pytest.mark.parametrize(
    ("text", "newest"),
    [
        pytest.param(listed(), None, id="no backup"),
        pytest.param(listed(item("20261205T010000"), item("20261206T010000")), "20261206T010000", id="newest"),
        pytest.param(
            listed(item("20261205T010000"), item("20261206T010000", status="FAILED", end=None)),
            "20261205T010000",
            id="a failed backup is not restorable",
        ),
        pytest.param(
            listed(item("20261205T010000"), item("20261206T010000", status="STARTED", end=None)),
            "20261205T010000",
            id="one in progress neither",
        ),
    ],
)
def test_the_newest_complete_backup(text: str, newest: str | None) -> None:
    found = newest_complete(parse_backup_list(text))
    assert (found.backup_id if found else None) == newest
    if found:
        assert found.end_time == ended(found.backup_id)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("ERROR: Barman cloud backup list exception: boom", id="an error message"),
        pytest.param(json.dumps({"backups": []}), id="another format"),
        pytest.param(listed({"status": "DONE"}), id="an entry without id"),
        pytest.param(listed(item("20261205T010000", end="yesterday")), id="an unreadable time"),
    ],
)
def test_anything_else_is_unreadable_never_no_backup(text: str) -> None:
    with pytest.raises(BackupListUnreadable):
        parse_backup_list(text)
