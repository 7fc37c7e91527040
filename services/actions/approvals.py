"""Four eyes in the action layer: what cannot be undone is *requested* by one operator and carried out only when
another *approves* it (services/governance/approvals.py stores the requests).

The kinds of request are an open registry, :data:`REQUEST_KINDS`: a :class:`RequestKind` names the action it asks
for (the role needed to request it is that action's, services/actions/operators.py), the role that may approve it,
how long it waits (None: ``WA_RETENTION_FOUR_EYES__EXPIRY_H``), and how it is carried out once approved
(``execute``). A new kind (a break-glass read, a message to approve before it is sent) is one
:func:`register_kind` call and one ``request_…`` method that checks its arguments and calls
:meth:`ApprovalActions.request_approval` with references only; no migration, no adapter change: the console's
"waiting for your approval" page, ``wa-archive approvals`` and ``/v1/approvals`` list, approve and reject any kind.

The rules, for every kind:
- the requester needs the role of the kind's action; the target holds references only (pseudonyms, ids, case
  references, counts); the reason is sealed (under the person's key when the request names one);
- the approver needs the kind's ``approver_role`` and is never the requester (:class:`SelfApproval`, 403); a
  request decided already or expired does nothing (:class:`ApprovalRefused`, 409);
- approving carries the action out *as the approver*: the rows the action writes name the approver as actor and
  carry ``approval`` (request id, requester, approver) in their details (services/core/audit.py on_behalf_of);
- each step is audited: ``approval.requested``, ``approval.approved`` (then the action's own rows), or
  ``approval.rejected``, and ``approval.failed`` when carrying it out met a refusal (the request is ``failed``).

The actions that carry out an approved request (``erase``, ``release_hold``, ``close_case``, ``export_case``,
and ``queue_export`` and ``queue_selected`` above the export threshold) refuse to run outside an approval
(:class:`ApprovalRequired`), so no adapter can skip the second person.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from services.actions.base import ActionsBase
from services.actions.operators import ROLE_RANK, ActionName, Operator, authorize
from services.core.audit import current_approval, on_behalf_of, write_audit
from services.core.db import Connection
from services.core.identity import expand_subject_refs, resolve_subject_refs
from services.core.index import binary_keys
from services.core.refusals import ActionRefused, Forbidden, InvalidRequest, NotFound
from services.core.vocabulary import Role, is_pseudonym
from services.governance import approvals as store
from services.governance.approvals import (
    ApprovalRefused,
    ApprovalRequest,
    RequestState,
    SelfApproval,
    UnknownRequest,
    check_reason,
)
from services.governance.cases import CaseRefused, case_row
from services.governance.holds import list_holds

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from services.actions.layer import Actions

__all__ = [
    "REQUEST_KINDS",
    "ApprovalActions",
    "ApprovalRefused",
    "ApprovalRequest",
    "ApprovalRequired",
    "Approved",
    "ExecutionContext",
    "RequestKind",
    "RequestState",
    "SelfApproval",
    "UnknownRequest",
    "is_approved",
    "register_kind",
    "require_approval",
]

log = logging.getLogger("wa_archive.approvals")


class ApprovalRequired(Forbidden):
    """The action is carried out only on an approved request (four eyes): request it instead."""

    kind = "four_eyes"


@dataclass(frozen=True, slots=True, kw_only=True)
class ExecutionContext:
    """What the process approving a request can offer its execution beyond the archive: the key that signs
    exported evidence (the CLI's; the console and the API have none, so a case export into a folder is approved in
    the CLI; one for the work bucket becomes a job the export worker signs, approved anywhere)."""

    export_signing_key: Ed25519PrivateKey | None = None


@dataclass(frozen=True, slots=True)
class Approved:
    """An approved request, as stored after it was carried out, and what the action returned (typed: an
    ``ErasureOutcome``, a ``HoldRelease``, a ``CaseClosing``, a ``CaseExport``, a list of ``ExportJob``)."""

    request: ApprovalRequest
    result: object


# Carries an approved request out, as the approver: the typed result, and its JSON (references and counts only).
Executed = tuple[object, Mapping[str, Any]]
Execute = Callable[["Actions", Operator, ApprovalRequest, ExecutionContext], Awaitable[Executed]]
# Settles a decision inside its transaction (the request's row locked): returns the outcome JSON stored with it.
Settle = Callable[["Actions", Operator, ApprovalRequest, Connection], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestKind:
    """One kind of request: ``name`` (stored with each request; a metric label), the ``action`` it asks for (its
    role is the requester's), who may approve it, how long it waits (None: the setting), a sentence saying what it
    does (for the lists), ``execute`` (returns the typed result and its JSON, references only), and ``ready``:
    None when the approving process can carry this request out, else why not (checked before anything is
    decided).

    ``settle``, for a kind whose decision itself is what another service waits for (a held message: the gateway
    sends it or not, services/actions/held_sends.py): run for an approval and a rejection alike inside the
    transaction that records the decision, the request's row locked, before the commit; what it raises rolls the
    decision back (the request stays pending, and may be decided again). Its JSON is stored as the outcome."""

    name: str
    action: ActionName
    approver_role: Role
    describe: str
    execute: Execute
    ttl: timedelta | None = None
    ready: Callable[[ApprovalRequest, ExecutionContext], str | None] = field(default=lambda request, context: None)
    settle: Settle | None = None


REQUEST_KINDS: Final[dict[str, RequestKind]] = {}


def register_kind(kind: RequestKind) -> RequestKind:
    """Add a kind to the registry (once per name: a second registration is a programming error)."""
    if kind.name in REQUEST_KINDS:
        raise ValueError(f"request kind {kind.name!r} is registered already")
    REQUEST_KINDS[kind.name] = kind
    return kind


def audited_target(target: Mapping[str, Any]) -> dict[str, Any]:
    """The target as the audit rows show it: a list of pseudonyms or of event ids as its count (a person resolved
    under every business number has one per number, a search result thousands of records; the request's row keeps
    them all)."""
    return {
        name: len(value) if isinstance(value, list) and name in ("subject_refs", "event_ids") else value
        for name, value in target.items()
    }


def empty_or_new(folder: Path) -> bool:
    """Whether a case may be exported into ``folder`` (it is written there, and nothing is overwritten)."""
    return not folder.exists() or not any(folder.iterdir())


def require_approval(operator: Operator, kind: str) -> None:
    """Refuse (:class:`ApprovalRequired`) unless this runs for an approved request of ``kind``, carried out by its
    approver (:meth:`ApprovalActions.approve`): the one way to the actions that cannot be undone."""
    if not is_approved(operator, kind):
        raise ApprovalRequired(f"{REQUEST_KINDS[kind].describe} needs a second person's approval: request it")


def is_approved(operator: Operator, kind: str) -> bool:
    approval = current_approval()
    return approval is not None and approval["approver"] == operator.name and approval["kind"] == kind


def may_approve(operator: Operator, request: ApprovalRequest) -> bool:
    """Whether ``operator`` has the role to decide this request and is not its requester (expiry aside)."""
    kind = REQUEST_KINDS.get(request.kind)
    return (
        kind is not None
        and ROLE_RANK[operator.role] >= ROLE_RANK[kind.approver_role]
        and operator.name != request.requested_by
    )


class ApprovalActions(ActionsBase):
    """Requests and their decisions, over the same archive as every other action."""

    def _ttl(self, kind: RequestKind) -> timedelta:
        return kind.ttl or timedelta(hours=self.access.four_eyes.expiry_h)

    async def request_approval(
        self,
        operator: Operator,
        kind_name: str,
        *,
        target: Mapping[str, Any],
        reason: str | None,
        subject_refs: Sequence[str] = (),
    ) -> ApprovalRequest:
        """Store a pending request of a registered kind (audited ``approval.requested``: kind, target, expiry; the
        reason sealed, not in the audit row). :class:`Forbidden` without the role of the kind's action;
        :class:`InvalidRequest` without a reason. ``target`` must hold references only (the ``request_…`` methods
        check theirs)."""
        kind = REQUEST_KINDS[kind_name]
        authorize(operator, kind.action)
        why = check_reason(reason)
        async with self.access.pool.acquire() as conn, conn.transaction():
            request = await store.create_request(
                conn,
                self.access.keyring,
                kind=kind.name,
                target=target,
                subject_refs=subject_refs,
                reason=why,
                requested_by=operator.name,
                ttl=self._ttl(kind),
            )
            await write_audit(
                conn,
                actor=operator.name,
                action="approval.requested",
                reason=None,
                subject_ref=request.subject_ref,
                details={
                    "request_id": request.request_id,
                    "kind": kind.name,
                    "target": audited_target(target),
                    "expires_at": request.expires_at.isoformat(),
                },
            )
        return request

    async def approvals(
        self, operator: Operator, *, waiting_for_me: bool = True, limit: int = 200
    ) -> list[ApprovalRequest]:
        """With ``waiting_for_me``: the pending, unexpired requests this operator may decide (their role, not
        theirs), soonest to expire first. Else every request, newest first (``dpo``: the record of who asked what).
        Not audited: references and reasons of the system's own records, as the hold listing."""
        if waiting_for_me:
            found = await store.list_requests(self.access.pool, self.access.keyring, pending_only=True, limit=limit)
            return [r for r in found if may_approve(operator, r)]
        authorize(operator, "approval.list")
        return await store.list_requests(self.access.pool, self.access.keyring, pending_only=False, limit=limit)

    async def approval(self, operator: Operator, request_id: str) -> ApprovalRequest:
        """One request: its requester, a DPO, or whoever may approve it; :class:`UnknownRequest` for anyone else."""
        request = await store.get_request(self.access.pool, self.access.keyring, request_id)
        if operator.name != request.requested_by and operator.role != "dpo" and not may_approve(operator, request):
            raise UnknownRequest("no approval request with this id")
        return request

    async def waiting_count(self, operator: Operator) -> int:
        """How many requests wait for this operator's decision (the console's header; no reason is opened)."""
        heads = await store.pending_heads(self.access.pool)
        return sum(
            1
            for kind_name, requester in heads
            if (kind := REQUEST_KINDS.get(kind_name)) is not None
            and requester != operator.name
            and ROLE_RANK[operator.role] >= ROLE_RANK[kind.approver_role]
        )

    async def approve(
        self, operator: Operator, request_id: str, *, reason: str | None, context: ExecutionContext | None = None
    ) -> Approved:
        """Approve a pending request and carry it out as ``operator`` on its behalf. Refused, nothing done:
        :class:`UnknownRequest`; :class:`Forbidden` without the kind's approver role; :class:`SelfApproval` for the
        requester; :class:`ApprovalRefused` when decided already or expired; :class:`InvalidRequest` without a
        reason, or when this process cannot carry the kind out (``ready``). A refusal met while carrying it out
        (the hold was released meanwhile, the case closed…) is audited ``approval.failed``, stored (``failed``)
        and raised; any other failure propagates, the request staying ``approved`` without an outcome."""
        context = context or ExecutionContext()
        why = check_reason(reason)
        request = await store.get_request(self.access.pool, self.access.keyring, request_id)
        kind = self._kind(request)
        self._may_decide(operator, kind)
        not_ready = kind.ready(request, context)
        if not_ready is not None:
            store.check_decision(request, operator.name, datetime.now(UTC))
            raise InvalidRequest(not_ready)
        request = await self._decide(operator, kind, request_id, "approved", why)
        approval = {"request_id": request.request_id, "kind": kind.name, "requester": request.requested_by}
        try:
            with on_behalf_of(**approval, approver=operator.name):
                result, outcome = await kind.execute(cast("Actions", self), operator, request, context)
        except ActionRefused as exc:
            failure = {"error": exc.kind, "message": str(exc)}
            await store.record_outcome(self.access.pool, request.request_id, failed=True, outcome=failure)
            await self._audit(operator, "approval.failed", {**approval, **failure})
            raise
        await store.record_outcome(self.access.pool, request.request_id, failed=False, outcome=outcome)
        return Approved(await store.get_request(self.access.pool, self.access.keyring, request.request_id), result)

    async def reject(self, operator: Operator, request_id: str, *, reason: str | None) -> ApprovalRequest:
        """Reject a pending request with a reason: nothing is carried out (audited ``approval.rejected``). The
        same refusals as :meth:`approve`."""
        why = check_reason(reason)
        request = await store.get_request(self.access.pool, self.access.keyring, request_id)
        kind = self._kind(request)
        self._may_decide(operator, kind)
        return await self._decide(operator, kind, request_id, "rejected", why)

    def _kind(self, request: ApprovalRequest) -> RequestKind:
        kind = REQUEST_KINDS.get(request.kind)
        if kind is None:  # a kind a newer build registered: this one cannot carry it out
            raise InvalidRequest(f"this build does not know requests of kind {request.kind!r}")
        return kind

    def _may_decide(self, operator: Operator, kind: RequestKind) -> None:
        if ROLE_RANK[operator.role] < ROLE_RANK[kind.approver_role]:
            raise Forbidden(f"the {kind.approver_role!r} role is required to decide this request")

    async def _decide(
        self, operator: Operator, kind: RequestKind, request_id: str, status: str, reason: str
    ) -> ApprovalRequest:
        async with self.access.pool.acquire() as conn, conn.transaction():
            decided = await store.decide(
                conn,
                self.access.keyring,
                request_id,
                decider=operator.name,
                status="approved" if status == "approved" else "rejected",
                reason=reason,
            )
            await write_audit(
                conn,
                actor=operator.name,
                action=f"approval.{status}",
                reason=None,
                subject_ref=decided.subject_ref,
                details={
                    "request_id": decided.request_id,
                    "kind": decided.kind,
                    "target": audited_target(decided.target),
                    "requester": decided.requested_by,
                    "approver" if status == "approved" else "rejecter": operator.name,
                },
            )
            if kind.settle is not None:
                outcome = await kind.settle(cast("Actions", self), operator, decided, conn)
                await store.record_outcome(conn, decided.request_id, failed=False, outcome=outcome)
                decided = await store.get_request(conn, self.access.keyring, decided.request_id)
        return decided

    # --- the requests of the built-in kinds ---------------------------------------------------------------------

    async def request_erasure(
        self,
        operator: Operator,
        *,
        contact: str,
        phone_number_id: str | None = None,
        request_ref: str,
        reason: str | None,
    ) -> ApprovalRequest:
        """Request a person's erasure: the contact is resolved to their pseudonyms now (the request keeps no phone
        number); once approved they are erased as :meth:`GoverningActions.erase` does, the pseudonyms linked to
        them by then included. The erasure's legal deadline starts when it is approved and recorded: a request
        expires long before a month."""
        authorize(operator, "erase")
        if not request_ref.strip():
            raise InvalidRequest("an erasure needs the reference of the person's request (--request-ref)")
        refs = await resolve_subject_refs(self.access.pool, self.access.pepper, contact, phone_number_id)
        target = {"subject_refs": refs, "request_ref": request_ref.strip(), "phone_number_id": phone_number_id}
        return await self.request_approval(operator, "erase", target=target, reason=reason, subject_refs=refs)

    async def request_hold_release(self, operator: Operator, hold_id: str, *, reason: str | None) -> ApprovalRequest:
        """Request an active hold's release (:class:`NotFound` when there is no active hold with this id)."""
        authorize(operator, "hold.release")
        async with self.access.pool.acquire() as conn:
            active = {h.hold_id for h in await list_holds(conn, include_released=False)}
        if hold_id not in active:
            raise NotFound("no active hold with this id")
        return await self.request_approval(operator, "hold.release", target={"hold_id": hold_id}, reason=reason)

    async def request_case_close(self, operator: Operator, case_ref: str, *, reason: str | None) -> ApprovalRequest:
        """Request a case's closing (releasing its holds); the request's reason becomes the closing's."""
        authorize(operator, "case.close")
        case = await case_row(self.access.pool, case_ref)
        if case["status"] != "open":
            raise CaseRefused("the case is closed already")
        return await self.request_approval(operator, "case.close", target={"case_ref": case["case_ref"]}, reason=reason)

    async def request_case_export(
        self,
        operator: Operator,
        case_ref: str,
        out: Path | None,
        *,
        reason: str | None,
        language: str = "en",
        time_zone: str = "UTC",
        formats: Sequence[str] | None = None,
    ) -> ApprovalRequest:
        """Request a case's export, its size announced in the request (``records`` and ``bags``, counted from the
        index: what the approver weighs). Into the folder ``out``: written, once approved, by the approver's
        ``wa-archive approvals approve``, which holds the export signing key. Without ``out`` (the console): once
        approved, an export job of the case (scope ``case``, the request's id as its id) that the retention
        service's export worker writes, signs with its export signing key and hands over from the work bucket.
        ``formats``: what each bag holds, among services/evidence/package.py BAG_FORMATS (all of them when None).
        Always four eyes, whatever its size: a case export discloses every custodian at once."""
        from services.evidence.package import BAG_FORMATS  # noqa: PLC0415 — the renderers load only for exports

        authorize(operator, "export")
        case = await case_row(self.access.pool, case_ref)
        chosen = list(dict.fromkeys(formats)) if formats is not None else list(BAG_FORMATS)
        if not chosen or set(chosen) - set(BAG_FORMATS):
            raise InvalidRequest(f"a case export's formats are among {', '.join(BAG_FORMATS)}")
        if out is not None and not await asyncio.to_thread(empty_or_new, out):  # said now, checked again later
            raise CaseRefused(f"{out} is not empty: a case is exported into an empty folder")
        size = await cast("Actions", self).case_export_size(operator, case["case_ref"])
        target: dict[str, Any] = {
            "case_ref": case["case_ref"],
            "language": language,
            "time_zone": time_zone,
            "formats": chosen,
            **size.to_json(),
        }
        if out is not None:
            target["out"] = str(out)
        else:
            target["destination"] = "work"
        return await self.request_approval(operator, "case.export", target=target, reason=reason)

    async def count_messages(
        self, subject_refs: Sequence[str], *, since: datetime | None = None, until: datetime | None = None
    ) -> int:
        """How many archived records of these pseudonyms (and those linked to them) fall between ``since`` and
        ``until``: what an export of them would hold."""
        async with self.access.pool.acquire() as conn:
            refs = await expand_subject_refs(conn, subject_refs)
            count = await conn.fetchval(
                "SELECT count(*) FROM archived_events WHERE subject_ref = ANY($1::bytea[])"
                " AND ($2::timestamptz IS NULL OR coalesce(event_time, received_at) >= $2)"
                " AND ($3::timestamptz IS NULL OR coalesce(event_time, received_at) <= $3)",
                binary_keys(refs),
                since,
                until,
            )
        return int(count or 0)

    def export_threshold(self) -> int:
        return self.access.four_eyes.export_messages

    async def request_export(
        self,
        operator: Operator,
        *,
        subject_refs: Sequence[str],
        reason: str | None,
        formats: Sequence[str],
        scope: str = "conversation",
        since: datetime | None = None,
        until: datetime | None = None,
        language: str = "en",
        request_ref: str | None = None,
        messages: int,
    ) -> ApprovalRequest:
        """Request an export of more messages than ``WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES``: once approved, one
        export job per pseudonym is queued (services/evidence/jobs.py), its files downloaded by the requester or
        a DPO as any job's."""
        authorize(operator, "export")
        if not subject_refs or not all(is_pseudonym(ref) for ref in subject_refs):
            raise InvalidRequest("name the person by pseudonym (64 lowercase hex digits)")
        target = {
            "subject_refs": list(subject_refs),
            "formats": list(formats),
            "scope": scope,
            "since": since.isoformat() if since else None,
            "until": until.isoformat() if until else None,
            "language": language,
            "request_ref": request_ref,
            "messages": messages,
        }
        return await self.request_approval(operator, "export", target=target, reason=reason, subject_refs=subject_refs)


# --- the built-in kinds -------------------------------------------------------------------------------------------


async def _erase(actions: Actions, approver: Operator, request: ApprovalRequest, _: ExecutionContext) -> Executed:
    target = request.target
    outcome = await actions.erase(
        approver,
        contact=None,
        subject_refs=list(target["subject_refs"]),
        phone_number_id=target.get("phone_number_id"),
        request_ref=str(target["request_ref"]),
    )
    return outcome, outcome.proof()


async def _release_hold(
    actions: Actions, approver: Operator, request: ApprovalRequest, _: ExecutionContext
) -> Executed:
    release = await actions.release_hold(approver, str(request.target["hold_id"]))
    return release, release.to_json()


async def _close_case(actions: Actions, approver: Operator, request: ApprovalRequest, _: ExecutionContext) -> Executed:
    closing = await actions.close_case(approver, str(request.target["case_ref"]), reason=request.reason or "")
    return closing, closing.to_json()


async def _export_case(
    actions: Actions, approver: Operator, request: ApprovalRequest, context: ExecutionContext
) -> Executed:
    target = request.target
    language: Literal["en", "fr"] = "fr" if target.get("language") == "fr" else "en"
    formats = list(target["formats"]) if target.get("formats") else None
    if "out" not in target:  # the console's: a job for the export worker, which holds the signing key
        job = await actions.queue_case_export(
            approver,
            request_id=request.request_id,
            case_ref=str(target["case_ref"]),
            requested_by=request.requested_by,
            reason=request.reason,
            formats=formats,
            language=language,
        )
        return job, {"job_id": job.job_id}
    assert context.export_signing_key is not None  # ready() said so before anything was decided
    exported = await actions.export_case(
        approver,
        str(target["case_ref"]),
        Path(target["out"]),
        reason=request.reason,
        signing_key=context.export_signing_key,
        language=language,
        time_zone=str(target.get("time_zone") or "UTC"),
        formats=formats,
    )
    return exported, exported.to_json()


async def _queue_exports(
    actions: Actions, approver: Operator, request: ApprovalRequest, _: ExecutionContext
) -> Executed:
    target = request.target
    jobs = [
        await actions.queue_export(
            approver,
            subject_ref=ref,
            reason=request.reason,
            formats=list(target["formats"]),
            scope="subject_access" if target.get("scope") == "subject_access" else "conversation",
            since=datetime.fromisoformat(target["since"]) if target.get("since") else None,
            until=datetime.fromisoformat(target["until"]) if target.get("until") else None,
            language=str(target.get("language") or "en"),
            request_ref=target.get("request_ref"),
        )
        for ref in target["subject_refs"]
    ]
    return jobs, {"jobs": [job.job_id for job in jobs]}


async def _queue_search_export(
    actions: Actions, approver: Operator, request: ApprovalRequest, _: ExecutionContext
) -> Executed:
    target = request.target
    job = await actions.queue_selected(
        approver,
        event_ids=[str(e) for e in target["event_ids"]],
        description=dict(target["search"]),
        reason=request.reason,
        formats=[str(f) for f in target["formats"]],
        language=str(target.get("language") or "en"),
        # The hits were frozen within the requester's scope; the job runs in the approver's name.
        requester_role=approver.role,
    )
    return job, {"jobs": [job.job_id]}


def _needs_signing_key(request: ApprovalRequest, context: ExecutionContext) -> str | None:
    """A case export into a folder is written and signed where it is approved; one for the work bucket is a job
    that the export worker signs with its own key (a worker without one fails the job in words that say so)."""
    if "out" in request.target and context.export_signing_key is None:
        return (
            "a case export is written where it is approved, signed with the export signing key: approve it with "
            "`wa-archive approvals approve ID --reason …` on the machine that holds the key"
        )
    return None


register_kind(
    RequestKind(name="erase", action="erase", approver_role="dpo", describe="erasing a person", execute=_erase)
)
register_kind(
    RequestKind(
        name="hold.release",
        action="hold.release",
        approver_role="dpo",
        describe="releasing a legal hold",
        execute=_release_hold,
    )
)
register_kind(
    RequestKind(
        name="case.close", action="case.close", approver_role="dpo", describe="closing a case", execute=_close_case
    )
)
register_kind(
    RequestKind(
        name="case.export",
        action="export",
        approver_role="dpo",
        describe="exporting a case",
        execute=_export_case,
        ready=_needs_signing_key,
    )
)
register_kind(
    RequestKind(
        name="export",
        action="export",
        approver_role="dpo",
        describe="exporting more messages than the four-eyes threshold",
        execute=_queue_exports,
    )
)
register_kind(
    RequestKind(
        name="export.search",
        action="export.search",
        approver_role="dpo",
        describe="exporting a search result of more records than the four-eyes threshold",
        execute=_queue_search_export,
    )
)
