"""Four eyes in the tests: what cannot be undone is requested by one operator and carried out on another DPO's
approval (services/actions/approvals.py). Every test that erases, releases a hold, closes or exports a case, or
exports above the threshold goes through :func:`approved`, so it proves the same thing as before through the path
an operator takes now."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

from services.actions.layer import Actions, ApprovalRequest, ExecutionContext, Operator

# The second person: never the requester of a test's requests.
SECOND_DPO = Operator("second-dpo-of-the-tests", "dpo")
APPROVAL_REASON = "checked against the ticket by a second DPO"


async def approved(
    actions: Actions,
    request: Awaitable[ApprovalRequest],
    *,
    approver: Operator = SECOND_DPO,
    context: ExecutionContext | None = None,
) -> Any:
    """Make the request (``actions.request_…(requester, …)``), approve it as ``approver``, and return what the
    action returned (an ``ErasureOutcome``, a ``HoldRelease``, a ``CaseClosing``, a ``CaseExport``, export jobs)."""
    asked = await request
    assert asked.requested_by != approver.name, "four eyes: the approver must be another person"
    done = await actions.approve(approver, asked.request_id, reason=APPROVAL_REASON, context=context)
    assert done.request.state(done.request.decided_at or asked.expires_at) == "approved", done.request.outcome
    return done.result
