"""Four eyes in the tests: what cannot be undone is requested by one operator and carried out on another DPO's
approval (services/actions/approvals.py). Every test that erases, releases a hold, closes or exports a case, or
exports above the threshold goes through :func:`approved`, so it proves the same thing as before through the path
an operator takes now."""

from __future__ import annotations

import os
from collections.abc import Awaitable, Sequence
from typing import Any

import orjson
import pytest

from services.actions.layer import Actions, ApprovalRequest, ExecutionContext, Operator
from tests.helpers.support import run_cli

# The second person: never the requester of a test's requests. A test that checks who carried an action out (the
# audit rows' actor) has REQUESTER ask and its own operator approve.
SECOND_DPO = Operator("second-dpo-of-the-tests", "dpo")
REQUESTER = Operator("requesting-dpo-of-the-tests", "dpo")
APPROVAL_REASON = "checked against the ticket by a second DPO"
ERASE_WHY = "the person asked to be erased (ticket in the DPO's register)"
RELEASE_WHY = "the dispute is settled"


async def approved(
    actions: Actions,
    request: Awaitable[ApprovalRequest] | ApprovalRequest | str,
    *,
    approver: Operator = SECOND_DPO,
    context: ExecutionContext | None = None,
) -> Any:
    """Make the request (``actions.request_…(requester, …)``; or take one made through an adapter, or its id),
    approve it as ``approver``, and return what the action returned (an ``ErasureOutcome``, a ``HoldRelease``, a
    ``CaseClosing``, a ``CaseExport``, export jobs)."""
    if isinstance(request, str):
        asked = await actions.approval(approver, request)
    elif isinstance(request, ApprovalRequest):
        asked = request
    else:
        asked = await request
    assert asked.requested_by != approver.name, "four eyes: the approver must be another person"
    done = await actions.approve(approver, asked.request_id, reason=APPROVAL_REASON, context=context)
    assert done.request.state(done.request.decided_at or asked.expires_at) == "approved", done.request.outcome
    return done.result


async def approved_in_cli(
    argv: Sequence[str],
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    *,
    approver: str = SECOND_DPO.name,
) -> tuple[int, Any, str]:
    """The same through ``wa-archive``: run the command that requests (it prints the request and says who may
    approve it), then ``wa-archive approvals approve ID --reason …`` as ``approver`` (``WA_RETENTION_OPERATOR``).
    Returns the approval's exit code, what the action returned (the request's ``outcome``) and its stderr."""
    code, out, err = await run_cli(argv, capsys)
    assert code == 0, err
    asked = orjson.loads(out)
    assert f"wa-archive approvals approve {asked['request_id']}" in err, err
    requester = os.environ.get("WA_RETENTION_OPERATOR", "")
    assert requester != approver, "four eyes: the approver must be another person"
    monkeypatch.setenv("WA_RETENTION_OPERATOR", approver)
    try:
        code, out, err = await run_cli(
            ["approvals", "approve", asked["request_id"], "--reason", APPROVAL_REASON], capsys
        )
    finally:
        monkeypatch.setenv("WA_RETENTION_OPERATOR", requester)
    return code, orjson.loads(out)["outcome"] if code == 0 else None, err
