"""Four eyes against the real stack (services/actions/approvals.py, services/governance/approvals.py): an erasure
requested by one DPO is carried out only when a second one approves it; the requester, a reader, an expired or a
rejected request change nothing; the audit rows carry both names; no reason or phone number is stored in clear."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import asyncpg
import orjson
import pytest
from prometheus_client import CollectorRegistry

from devtools import pipeline
from devtools.pipeline import Person
from services.actions.access import ArchiveAccess
from services.actions.layer import (
    REQUEST_KINDS,
    Actions,
    ApprovalRefused,
    ApprovalRequest,
    ApprovalRequired,
    Forbidden,
    NotFound,
    Operator,
    SelfApproval,
)
from services.governance.metrics import RetentionMetrics
from services.retention.service import refresh_gauges
from services.retention.settings import FourEyesSettings
from tests.helpers.approvals import SECOND_DPO, approved
from tests.helpers.archive_runs import NOW, archive
from tests.helpers.erasure import readable
from tests.helpers.support import run_cli

pytestmark = [pytest.mark.integration, pytest.mark.export_queue]

ALICE = Operator(f"alice-dpo-{pipeline.digits(6)}", "dpo")
CAROL = Operator(f"carol-dpo-{pipeline.digits(6)}", "dpo")
READER = Operator(f"rita-reader-{pipeline.digits(6)}", "reader")


@pytest.fixture
async def actions(access: ArchiveAccess) -> Actions:
    return Actions(access, RetentionMetrics(CollectorRegistry()))


async def audit_of(pool: asyncpg.Pool, request_id: str) -> list[tuple[str, str, dict[str, object]]]:
    """Every audit row of the request: its own steps and the rows the action wrote on its behalf."""
    rows = await pool.fetch(
        "SELECT actor, action, details::text AS details FROM audit_log WHERE details->>'request_id' = $1"
        " OR details->'approval'->>'request_id' = $1 ORDER BY audit_id",
        request_id,
    )
    return [(row["actor"], row["action"], orjson.loads(row["details"])) for row in rows]


async def test_the_requester_cannot_approve_their_erasure_a_second_dpo_can(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, prefix: str, access: ArchiveAccess, actions: Actions
) -> None:
    person = Person.fresh()
    await archive(demo_env, pg_pool, prefix, [pipeline.text_message(person, "wamid.F1", "please erase me", NOW)])
    assert await readable(access, person) == ["wamid.F1"]
    why = f"the customer {person.wa_id} asked by e-mail"

    # An export above the threshold (0 here) is a request; approved, it becomes an export job.
    strict = Actions(dataclasses.replace(access, four_eyes=FourEyesSettings(export_messages=0)), actions.metrics)
    large = await strict.export_or_request(ALICE, contact=person.wa_id, reason="Art. 15 request", formats=["json"])
    assert isinstance(large, ApprovalRequest)
    assert (large.kind, large.target["messages"], large.target["formats"]) == ("export", 1, ["json"])
    with pytest.raises(ApprovalRequired):
        await strict.queue_export(ALICE, subject_ref=large.target["subject_refs"][0], reason="Art. 15 request")
    (job,) = await approved(strict, large)
    # (Its status is the worker's: any retention service on this database may have claimed it already.)
    assert (job.subject_ref, job.requested_by) == (large.target["subject_refs"][0], SECOND_DPO.name)

    with pytest.raises(ApprovalRequired):
        await actions.erase(ALICE, contact=person.wa_id, request_ref="GDPR-direct")
    with pytest.raises(Forbidden):
        await actions.request_erasure(READER, contact=person.wa_id, request_ref="GDPR-r", reason=why)
    ticket = f"GDPR-4E-{pipeline.digits(8)}"
    asked = await actions.request_erasure(ALICE, contact=person.wa_id, request_ref=ticket, reason=why)
    assert (asked.kind, asked.requested_by, asked.reason, asked.state(datetime.now(UTC))) == (
        "erase",
        ALICE.name,
        why,
        "pending",
    )

    # Nothing about the person in clear: the target holds pseudonyms, the reason is sealed under their key.
    row = await pg_pool.fetchrow("SELECT * FROM approval_requests WHERE request_id = $1::uuid", asked.request_id)
    assert row is not None
    assert person.wa_id not in row["target"]
    assert person.wa_id.encode() not in bytes(row["sealed_reason"])
    assert row["dek_id"] is not None

    with pytest.raises(SelfApproval, match="another person"):
        await actions.approve(ALICE, asked.request_id, reason="I am sure")
    with pytest.raises(Forbidden):
        await actions.approve(READER, asked.request_id, reason="looks fine")
    assert await readable(access, person) == ["wamid.F1"]
    assert asked.request_id in {r.request_id for r in await actions.approvals(SECOND_DPO)}
    assert asked.request_id not in {r.request_id for r in await actions.approvals(ALICE)}  # not theirs to decide
    assert asked.request_id not in {r.request_id for r in await actions.approvals(READER)}

    done = await actions.approve(SECOND_DPO, asked.request_id, reason="ticket checked")
    assert done.result.status == "completed"  # type: ignore[attr-defined]
    assert await readable(access, person) == []
    assert done.request.state(datetime.now(UTC)) == "approved"
    assert done.request.decided_by == SECOND_DPO.name
    assert done.request.reason is None  # sealed under the person's key, which the erasure destroyed
    with pytest.raises(ApprovalRefused, match="approved already"):
        await actions.approve(CAROL, asked.request_id, reason="me too")

    rows = await audit_of(pg_pool, asked.request_id)
    assert rows[0][:2] == (ALICE.name, "approval.requested")
    assert rows[1][:2] == (SECOND_DPO.name, "approval.approved")
    assert (rows[1][2]["requester"], rows[1][2]["approver"]) == (ALICE.name, SECOND_DPO.name)
    carried_out = rows[2:]
    assert {action for _, action, _ in carried_out} >= {"erasure.received", "erasure.completed"}
    for actor, _, details in carried_out:
        assert actor == SECOND_DPO.name
        assert details["approval"] == {
            "request_id": asked.request_id,
            "kind": "erase",
            "requester": ALICE.name,
            "approver": SECOND_DPO.name,
        }
    assert all(why not in str(details) for _, _, details in rows)


async def test_expired_rejected_and_failed_requests_change_nothing(
    access: ArchiveAccess,
    actions: Actions,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    hold = await actions.create_hold(
        ALICE, scope="phone_number", case_ref=f"CASE-4E-{pipeline.digits(6)}", phone_number_id=pipeline.digits(15)
    )

    async def active() -> bool:
        return hold.hold_id in {h.hold_id for h in await actions.holds(ALICE)}

    # Expired: approving it does nothing, and it is shown expired, not waiting.
    hasty = Actions(dataclasses.replace(access, four_eyes=FourEyesSettings(expiry_h=1e-9)), actions.metrics)
    old = await hasty.request_hold_release(ALICE, hold.hold_id, reason="the dispute is settled")
    with pytest.raises(ApprovalRefused, match="expired"):
        await actions.approve(SECOND_DPO, old.request_id, reason="checked it")
    assert await active()
    assert old.request_id not in {r.request_id for r in await actions.approvals(SECOND_DPO)}
    everything = {r.request_id: r for r in await actions.approvals(SECOND_DPO, waiting_for_me=False)}
    assert everything[old.request_id].state(datetime.now(UTC)) == "expired"

    # Rejected, with a reason: nothing released, and it cannot be approved after.
    with pytest.raises(NotFound):
        await actions.request_hold_release(ALICE, "00000000-0000-0000-0000-000000000000", reason="no such hold")
    asked = await actions.request_hold_release(ALICE, hold.hold_id, reason="the dispute is settled")
    with pytest.raises(SelfApproval):
        await actions.reject(ALICE, asked.request_id, reason="changed my mind")
    rejected = await actions.reject(CAROL, asked.request_id, reason="the appeal period is still running")
    assert (rejected.state(datetime.now(UTC)), rejected.decision) == ("rejected", "the appeal period is still running")
    with pytest.raises(ApprovalRefused, match="rejected already"):
        await actions.approve(SECOND_DPO, asked.request_id, reason="checked it")
    assert await active()
    assert [action for _, action, _ in await audit_of(access.pool, asked.request_id)] == [
        "approval.requested",
        "approval.rejected",
    ]

    # Two requests for one release: the second, approved after the first, fails as the release would, recorded.
    first = await actions.request_hold_release(ALICE, hold.hold_id, reason="the dispute is settled")
    second = await actions.request_hold_release(CAROL, hold.hold_id, reason="settled, as Alice says")
    metrics = RetentionMetrics(CollectorRegistry())
    await refresh_gauges(access, metrics)
    for kind in REQUEST_KINDS:
        assert metrics.approvals_pending.labels(kind)._value.get() >= 0
    assert metrics.approvals_pending.labels("hold.release")._value.get() >= 2
    release = await approved(actions, actions.request_hold_release(ALICE, hold.hold_id, reason="settled"))
    assert release.hold.hold_id == hold.hold_id
    assert not await active()
    with pytest.raises(NotFound):
        await actions.approve(SECOND_DPO, first.request_id, reason="checked it")
    failed = await actions.approval(ALICE, first.request_id)
    assert (failed.state(datetime.now(UTC)), failed.outcome) == (
        "failed",
        {"error": "not_found", "message": "no active hold with this id"},
    )
    assert second.request_id in {r.request_id for r in await actions.approvals(ALICE)}

    # The same through wa-archive: the requester may not approve; another lists and rejects it.
    monkeypatch.setenv("WA_RETENTION_S3__PREFIX", prefix)
    monkeypatch.setenv("WA_RETENTION_OPERATOR", CAROL.name)
    code, _out, err = await run_cli(["approvals", "approve", second.request_id, "--reason", "mine"], capsys)
    assert (code, "another person must approve" in err) == (2, True)
    monkeypatch.setenv("WA_RETENTION_OPERATOR", ALICE.name)
    code, out, err = await run_cli(["approvals", "list", "--format", "json"], capsys)
    assert code == 0, err
    assert second.request_id in {r["request_id"] for r in orjson.loads(out)}
    code, out, err = await run_cli(["approvals", "reject", second.request_id, "--reason", "one is enough"], capsys)
    assert code == 0, err
    assert (orjson.loads(out)["state"], orjson.loads(out)["decided_by"]) == ("rejected", ALICE.name)
