"""Break-glass: a reader asks to open a conversation outside the cases assigned to them, with a reason; a data
protection officer other than them approves it (four eyes, services/actions/approvals.py, kind ``break_glass``);
the approval opens that person's records (or that group's) to that reader for ``WA_RETENTION_BREAK_GLASS_H`` hours
(8: a working day), whatever their time, and nothing else.

Flagged and counted at every step:
- the request and its decision are audited by the four-eyes layer (``approval.requested`` / ``approval.approved``
  / ``approval.rejected``, ``details.kind = "break_glass"``); the approval writes ``break_glass.granted`` (the
  reader, the pseudonyms or the group, until when; with the approval's names);
- every read that relies on the access carries ``details.break_glass`` (the requests' ids) in its audit rows
  (services/core/audit.py under_break_glass);
- ``wa_retention_break_glass_total{step}`` counts requested, approved and rejected, and ``WaBreakGlassAccess``
  alerts on each request and approval (deploy/prometheus/rules.yml).

The access lives in the approved request itself (its ``outcome.until``): services/governance/scope.py
load_reader_scope adds it to the reader's scope while it has not ended. Nothing revokes it early but its end.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from services.actions.approvals import (
    ApprovalActions,
    ApprovalRequest,
    Executed,
    ExecutionContext,
    RequestKind,
    register_kind,
)
from services.actions.operators import Operator, authorize
from services.actions.reading import ReadingActions
from services.core.audit import write_audit
from services.core.identity import expand_subject_refs
from services.core.pseudonym import group_ref
from services.core.refusals import InvalidRequest
from services.core.vocabulary import is_pseudonym

if TYPE_CHECKING:
    from services.actions.layer import Actions

BREAK_GLASS = "break_glass"


class BreakGlassActions(ReadingActions, ApprovalActions):
    """Asking for break-glass access (a reader), and counting its decisions."""

    async def request_break_glass(
        self,
        operator: Operator,
        *,
        reason: str | None,
        subject_ref: str | None = None,
        group_id: str | None = None,
    ) -> ApprovalRequest:
        """Ask to read the person ``subject_ref`` names (with their linked pseudonyms) or the group ``group_id``,
        outside one's cases, for ``reason``: a pending request a DPO other than the requester decides.
        :class:`InvalidRequest` without exactly one of them, for a malformed pseudonym, or for an operator who
        reads everything already (the DPO, a deployment that reads ``all``); :class:`Forbidden` without the reader
        role. Counted (``requested``); audited ``approval.requested`` (kind ``break_glass``)."""
        authorize(operator, "messages")
        if (subject_ref is None) == (group_id is None):
            raise InvalidRequest("name the person (subject_ref) or the group (group_id), one of them")
        if (await self.reading_scope(operator)).everything:
            raise InvalidRequest("you read every conversation already: no break-glass access is needed")
        if subject_ref is not None:
            if not is_pseudonym(subject_ref):
                raise InvalidRequest("a subject_ref is 64 lowercase hex digits")
            refs = await expand_subject_refs(self.access.pool, [subject_ref])
            request = await self.request_approval(
                operator, BREAK_GLASS, target={"subject_refs": refs}, reason=reason, subject_refs=refs
            )
        else:
            target = {"group_ref": group_ref(self.access.pepper, group_id or "")}
            request = await self.request_approval(operator, BREAK_GLASS, target=target, reason=reason)
        self.metrics.break_glass.labels("requested").inc()
        return request

    async def reject(self, operator: Operator, request_id: str, *, reason: str | None) -> ApprovalRequest:
        rejected = await super().reject(operator, request_id, reason=reason)
        if rejected.kind == BREAK_GLASS:
            self.metrics.break_glass.labels("rejected").inc()
        return rejected


async def _grant(actions: Actions, approver: Operator, request: ApprovalRequest, _: ExecutionContext) -> Executed:
    """Open the request's person or group to its requester until ``break_glass_h`` hours from now (audited
    ``break_glass.granted``, the approval's names added by the four-eyes layer; counted ``approved``)."""
    until = datetime.now(UTC) + timedelta(hours=actions.access.break_glass_h)
    outcome = {
        "granted_to": request.requested_by,
        "until": until.isoformat(),
        "subject_refs": list(request.target.get("subject_refs") or []),
        "group_ref": request.target.get("group_ref"),
    }
    await write_audit(
        actions.access.pool,
        actor=approver.name,
        action="break_glass.granted",
        reason=None,
        subject_ref=request.subject_ref,
        details={**outcome, "break_glass": [request.request_id]},
    )
    actions.metrics.break_glass.labels("approved").inc()
    return until, outcome


register_kind(
    RequestKind(
        name=BREAK_GLASS,
        action="messages",
        approver_role="dpo",
        describe="reading a conversation outside one's cases (break-glass)",
        execute=_grant,
    )
)
