"""Four eyes, the pure rules (services/governance/approvals.py, services/actions/approvals.py): when a request is
expired, who may decide it, the open registry of kinds, and the approval every audit row carries while an
approved request is carried out."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.actions.approvals import (
    REQUEST_KINDS,
    ApprovalRequired,
    ExecutionContext,
    RequestKind,
    may_approve,
    register_kind,
    require_approval,
)
from services.actions.operators import REQUIRED_ROLE, Operator
from services.core.audit import on_behalf_of, write_audit
from services.core.refusals import Forbidden, InvalidRequest
from services.governance.approvals import (
    ApprovalRefused,
    ApprovalRequest,
    RequestStatus,
    SelfApproval,
    check_decision,
    check_reason,
    request_state,
)

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
ALICE, BOB, READER = Operator("alice", "dpo"), Operator("bob", "dpo"), Operator("rita", "reader")


def request(*, status: RequestStatus = "pending", kind: str = "erase", by: str = "alice") -> ApprovalRequest:
    return ApprovalRequest(
        request_id="00000000-0000-0000-0000-000000000001",
        kind=kind,
        target={"subject_refs": ["ab" * 32], "request_ref": "GDPR-1"},
        subject_ref="ab" * 32,
        reason="the customer asked",
        requested_by=by,
        requested_at=T0,
        expires_at=T0 + timedelta(hours=72),
        status=status,
        decided_by=None if status == "pending" else "bob",
        decided_at=None,
        decision=None,
        outcome=None,
    )


@pytest.mark.parametrize(
    ("status", "now", "state"),
    [
        pytest.param("pending", T0, "pending", id="fresh"),
        pytest.param("pending", T0 + timedelta(hours=72) - timedelta(microseconds=1), "pending", id="last instant"),
        pytest.param("pending", T0 + timedelta(hours=72), "expired", id="at its expiry"),
        pytest.param("approved", T0 + timedelta(days=30), "approved", id="approved stays approved"),
        pytest.param("rejected", T0 + timedelta(days=30), "rejected", id="rejected stays rejected"),
        pytest.param("failed", T0, "failed", id="failed"),
    ],
)
def test_a_request_is_expired_only_while_pending_past_its_expiry(
    status: RequestStatus, now: datetime, state: str
) -> None:
    assert request_state(status, T0 + timedelta(hours=72), now) == state


@pytest.mark.parametrize(
    ("asked", "decider", "now", "refusal", "words"),
    [
        pytest.param(request(), "alice", T0, SelfApproval, "another person", id="the requester"),
        pytest.param(request(), "alice", T0 + timedelta(days=9), SelfApproval, "another person", id="requester late"),
        pytest.param(request(), "bob", T0 + timedelta(hours=73), ApprovalRefused, "expired", id="expired"),
        pytest.param(request(status="approved"), "carol", T0, ApprovalRefused, "approved already", id="approved"),
        pytest.param(request(status="rejected"), "carol", T0, ApprovalRefused, "rejected already", id="rejected"),
    ],
)
def test_who_may_not_decide_and_when(
    asked: ApprovalRequest, decider: str, now: datetime, refusal: type[Exception], words: str
) -> None:
    with pytest.raises(refusal, match=words):
        check_decision(asked, decider, now)


def test_another_person_decides_a_pending_request() -> None:
    check_decision(request(), "bob", T0 + timedelta(hours=1))


def test_refusals_say_who_said_no() -> None:
    # A self-approval is a 403 (who you are), an expired or decided request a 409 (its state): one handler each.
    assert issubclass(SelfApproval, Forbidden)
    assert SelfApproval.http_status == 403
    assert ApprovalRefused.http_status == 409
    assert issubclass(ApprovalRequired, Forbidden)


@pytest.mark.parametrize("reason", ["", "  ", "ok", None, "x" * 501])
def test_a_decision_needs_a_reason(reason: str | None) -> None:
    with pytest.raises(InvalidRequest):
        check_reason(reason)


def test_the_built_in_kinds_are_registered_with_actions_that_exist() -> None:
    assert {"erase", "hold.release", "case.close", "case.export", "export"} <= set(REQUEST_KINDS)
    for kind in REQUEST_KINDS.values():
        assert kind.action in REQUIRED_ROLE
        assert kind.approver_role == "dpo"


def test_a_kind_is_registered_once() -> None:
    with pytest.raises(ValueError, match="registered already"):
        register_kind(REQUEST_KINDS["erase"])


def test_a_new_kind_is_one_registration() -> None:
    async def execute(*_: Any) -> tuple[object, Mapping[str, Any]]:
        return None, {}

    kind = RequestKind(
        name="test.break-glass", action="messages", approver_role="dpo", describe="a test kind", execute=execute
    )
    register_kind(kind)
    try:
        asked = request(kind="test.break-glass", by="rita")
        assert may_approve(ALICE, asked)
        assert not may_approve(READER, request(kind="test.break-glass", by="alice"))
        assert not may_approve(Operator("rita", "dpo"), asked)  # the requester, whatever their role
    finally:
        del REQUEST_KINDS[kind.name]


def test_a_kind_this_build_does_not_know_is_decided_by_nobody() -> None:
    assert not may_approve(BOB, request(kind="from.a.newer.build"))


def test_the_actions_that_cannot_be_undone_run_only_for_their_approver() -> None:
    with pytest.raises(ApprovalRequired, match="erasing a person needs a second person's approval"):
        require_approval(ALICE, "erase")
    with on_behalf_of(request_id="r", kind="erase", requester="alice", approver="bob"):
        require_approval(BOB, "erase")
        with pytest.raises(ApprovalRequired):
            require_approval(ALICE, "erase")  # the requester, inside the approval, is still not the approver
        with pytest.raises(ApprovalRequired):
            require_approval(BOB, "hold.release")  # an approval is for its kind only
    with pytest.raises(ApprovalRequired):
        require_approval(BOB, "erase")  # the approval ends with its block


class Recorded:
    """The one call write_audit makes: its arguments, as they would reach PostgreSQL."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    async def execute(self, *args: Any) -> str:
        self.calls.append(args)
        return "INSERT 0 1"


async def test_every_audit_row_written_for_an_approved_request_carries_both_names() -> None:
    conn = Recorded()
    with on_behalf_of(request_id="r-1", kind="erase", requester="alice", approver="bob"):
        await write_audit(conn, actor="bob", action="erasure.completed", reason="GDPR-1", details={"keys": 2})  # type: ignore[arg-type]
    await write_audit(conn, actor="bob", action="hold.create", reason=None, details={"case": "C-1"})  # type: ignore[arg-type]
    inside, outside = (orjson.loads(call[-1]) for call in conn.calls)
    assert inside == {
        "keys": 2,
        "approval": {"request_id": "r-1", "kind": "erase", "requester": "alice", "approver": "bob"},
    }
    assert outside == {"case": "C-1"}


@pytest.mark.parametrize(
    ("target", "with_key", "ready"),
    [
        pytest.param({"case_ref": "C-1", "out": "/exports/c1"}, False, False, id="a folder, no key: refused"),
        pytest.param({"case_ref": "C-1", "out": "/exports/c1"}, True, True, id="a folder, the key: written there"),
        pytest.param({"case_ref": "C-1", "destination": "work"}, False, True, id="the work bucket: the worker signs"),
    ],
)
def test_a_case_export_needs_the_signing_key_only_where_it_is_written(
    target: dict[str, str], with_key: bool, ready: bool
) -> None:
    asked = dataclasses.replace(request(kind="case.export"), target=target, subject_ref=None)
    context = ExecutionContext(export_signing_key=Ed25519PrivateKey.generate() if with_key else None)
    refusal = REQUEST_KINDS["case.export"].ready(asked, context)
    assert (refusal is None) == ready
    if refusal is not None:
        assert "wa-archive approvals approve" in refusal
