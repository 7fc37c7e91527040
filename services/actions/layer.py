"""Every operator action, once. The admin API, the ``wa-archive`` CLI and the scheduler are adapters over these.

An action of :class:`Actions` takes the :class:`Operator` who asks (a name for the audit log and a role) and typed
arguments, and is the one place that
1. checks the role (:class:`Forbidden`), four eyes (:class:`ApprovalRequired`: erasing, releasing a hold, closing
   or exporting a case, a large export run only on another person's approval, services/actions/approvals.py)
   and, where a person's records are decrypted, the reason
   (:class:`ReasonRequired`, before anything is read);
2. writes the audit row with the operator's name for every action that changes the archive or discloses what it
   holds: retrievals and exports (one row per pseudonym, before decrypting), searches, holds, erasures, retention
   runs (dry or real, failed ones too), index rebuilds and key rewraps. Listings of the system's own records (holds,
   erasure requests, the audit log itself, the keys per KEK) are not audited: they hold pseudonyms and references
   only;
3. counts the metrics (:class:`RetentionMetrics`: the process's registry in the service, a registry of its own
   in the CLI);
4. returns a typed result.

Refusals derive from :class:`services.core.refusals.ActionRefused` and carry their HTTP status and exit code
(:class:`Forbidden` 403/2, :class:`NotFound` 404/1, the others 400/2: :class:`ReasonRequired`, :class:`PersonRequired`,
:class:`GroupRequired`, :class:`HoldError`, :class:`ErasureError`, :class:`RewrapRefused`,
:class:`CaseRefused`); each adapter registers one handler for the base. Anything else is a failure of the system.
"""

from __future__ import annotations

from services.actions.approvals import (
    REQUEST_KINDS,
    ApprovalActions,
    ApprovalRefused,
    ApprovalRequest,
    ApprovalRequired,
    Approved,
    ExecutionContext,
    RequestKind,
    SelfApproval,
    UnknownRequest,
    register_kind,
)
from services.actions.break_glass import BreakGlassActions
from services.actions.cases import CaseClosing, CaseExport, CaseExporting
from services.actions.exporting import ExportingActions
from services.actions.governing import GoverningActions, HoldRelease
from services.actions.held_sends import HeldDraft, HeldSendActions
from services.actions.maintenance import MaintenanceActions
from services.actions.operators import REQUIRED_ROLE, ROLE_RANK, SCHEDULER, ActionName, Operator, authorize
from services.actions.reading import MediaFile, SubjectExport, search_audit_details
from services.core.keyring import RewrapRefused
from services.core.refusals import Forbidden, NotFound, PersonRequired, ReasonRequired
from services.governance.erasure import ErasureError
from services.governance.holds import HoldError
from services.review.conversation import GroupRequired

__all__ = [
    "REQUEST_KINDS",
    "REQUIRED_ROLE",
    "ROLE_RANK",
    "SCHEDULER",
    "ActionName",
    "Actions",
    "ApprovalRefused",
    "ApprovalRequest",
    "ApprovalRequired",
    "Approved",
    "CaseClosing",
    "CaseExport",
    "ErasureError",
    "ExecutionContext",
    "Forbidden",
    "GroupRequired",
    "HeldDraft",
    "HoldError",
    "HoldRelease",
    "MediaFile",
    "NotFound",
    "Operator",
    "PersonRequired",
    "ReasonRequired",
    "RequestKind",
    "RewrapRefused",
    "SelfApproval",
    "SubjectExport",
    "UnknownRequest",
    "authorize",
    "register_kind",
    "search_audit_details",
]


class Actions(
    CaseExporting,
    ExportingActions,
    BreakGlassActions,
    HeldSendActions,
    GoverningActions,
    ApprovalActions,
    MaintenanceActions,
):
    """The operator actions over one :class:`ArchiveAccess`, counting into ``metrics``: reading
    (services/actions/reading.py), export jobs (exporting.py), governance (governing.py), cases and their export
    (cases.py, over reading and governance), four-eyes requests and their approvals (approvals.py: what cannot be
    undone is carried out only on another person's approval; held_sends.py: messages held before sending),
    break-glass reads outside a reader's cases (break_glass.py, approved the same way) and maintenance
    (maintenance.py), one object."""
