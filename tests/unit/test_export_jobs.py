"""Pure parts of the export jobs: the download links' signature and expiry, the status transitions, which job a
worker may take (services/evidence/links.py, services/evidence/jobs.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.evidence.jobs import JOB_STATUSES, MAX_ATTEMPTS, claimable, may_become, object_key
from services.evidence.links import link_key, link_valid, sign_link

KEY = link_key(b"p" * 32)
JOB = "8d0c7a52-34f0-4f3e-9d9e-6a3f1f0c2b11"
NOW = 1_800_000_000.0


def test_a_link_works_until_it_expires_then_never() -> None:
    link = sign_link(KEY, job_id=JOB, name="a.json", now=NOW, ttl_s=300)
    assert link.expires == int(NOW + 300)
    assert link_valid(KEY, job_id=JOB, name="a.json", expires=str(link.expires), signature=link.signature, now=NOW)
    assert link_valid(KEY, job_id=JOB, name="a.json", expires=link.expires, signature=link.signature, now=NOW + 299)
    assert not link_valid(KEY, job_id=JOB, name="a.json", expires=link.expires, signature=link.signature, now=NOW + 300)


@pytest.mark.parametrize(
    ("job_id", "name", "expires", "signature", "key"),
    [
        pytest.param("00000000-0000-0000-0000-000000000000", "a.json", None, None, KEY, id="another job"),
        pytest.param(JOB, "b.json", None, None, KEY, id="another file"),
        pytest.param(JOB, "a.json", str(int(NOW) + 3600), None, KEY, id="expiry pushed later"),
        pytest.param(JOB, "a.json", "soon", None, KEY, id="expiry not a number"),
        pytest.param(JOB, "a.json", None, "0" * 64, KEY, id="forged signature"),
        pytest.param(JOB, "a.json", None, "", KEY, id="empty signature"),
        pytest.param(JOB, "a.json", None, None, link_key(b"q" * 32), id="another console's key"),
    ],
)
def test_a_tampered_link_is_refused(
    job_id: str, name: str, expires: str | None, signature: str | None, key: bytes
) -> None:
    link = sign_link(KEY, job_id=JOB, name="a.json", now=NOW, ttl_s=300)
    assert not link_valid(
        key,
        job_id=job_id,
        name=name,
        expires=expires if expires is not None else str(link.expires),
        signature=signature if signature is not None else link.signature,
        now=NOW,
    )


def test_a_missing_part_is_refused() -> None:
    link = sign_link(KEY, job_id=JOB, name="a.json", now=NOW, ttl_s=300)
    assert not link_valid(KEY, job_id=JOB, name="a.json", expires=None, signature=link.signature, now=NOW)
    assert not link_valid(KEY, job_id=JOB, name="a.json", expires=link.expires, signature=None, now=NOW)


@settings(max_examples=200)
@given(name=st.text(max_size=40), ttl=st.integers(min_value=1, max_value=3600), offset=st.integers(-10, 4000))
def test_a_signed_link_is_valid_exactly_before_its_expiry(name: str, ttl: int, offset: int) -> None:
    link = sign_link(KEY, job_id=JOB, name=name, now=NOW, ttl_s=ttl)
    valid = link_valid(KEY, job_id=JOB, name=name, expires=link.expires, signature=link.signature, now=NOW + offset)
    assert valid == (offset < ttl)


@pytest.mark.parametrize(
    ("current", "new", "allowed"),
    [
        pytest.param("queued", "running", True, id="claimed"),
        pytest.param("running", "done", True, id="finished"),
        pytest.param("running", "failed", True, id="failed"),
        pytest.param("running", "running", True, id="taken again after its worker died"),
        pytest.param("done", "expired", True, id="expired"),
        pytest.param("queued", "done", False, id="done without running"),
        pytest.param("done", "running", False, id="run again once done"),
        pytest.param("failed", "running", False, id="a failed job stays failed"),
        pytest.param("expired", "done", False, id="an expired job stays expired"),
        pytest.param("done", "failed", False, id="done cannot fail afterwards"),
    ],
)
def test_status_transitions(current: str, new: str, allowed: bool) -> None:
    assert may_become(current, new) is allowed


def test_every_status_has_its_transitions() -> None:
    assert all(may_become(s, t) in (True, False) for s in JOB_STATUSES for t in JOB_STATUSES)
    assert not any(may_become(final, t) for final in ("failed", "expired") for t in JOB_STATUSES)


T0 = datetime(2026, 12, 6, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("status", "heartbeat_ago_s", "attempts", "expected"),
    [
        pytest.param("queued", None, 0, True, id="queued"),
        pytest.param("running", 10, 1, False, id="running with a live heartbeat"),
        pytest.param("running", 301, 1, True, id="running, heartbeat stale: its worker died"),
        pytest.param("running", 301, MAX_ATTEMPTS, False, id="died too often"),
        pytest.param("done", 301, 1, False, id="done"),
        pytest.param("failed", None, 1, False, id="failed"),
    ],
)
def test_which_job_a_worker_may_take(status: str, heartbeat_ago_s: int | None, attempts: int, expected: bool) -> None:
    heartbeat = None if heartbeat_ago_s is None else T0 - timedelta(seconds=heartbeat_ago_s)
    assert claimable(status, heartbeat, attempts, now=T0, stale_s=300) is expected


def test_object_keys_name_the_job_and_file_only() -> None:
    assert object_key(JOB, "subject-export-SAR-1.json") == f"exports/{JOB}/subject-export-SAR-1.json"
