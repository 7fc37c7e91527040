"""The governance actions: erasure requests and their decisions, legal holds, retention runs."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from services.actions.approvals import require_approval
from services.actions.base import ActionsBase
from services.actions.operators import (
    Operator,
    ProgressCallback,
    authorize,
)
from services.core.refusals import NotFound
from services.core.vocabulary import HoldScope
from services.governance.erasure import (
    OPEN_STATUSES,
    ErasureOutcome,
    ErasureStatus,
    UnknownErasure,
    erase_subject,
    process_open_requests,
)
from services.governance.erasure_requests import ErasureRequest, erasure_requests, extend_erasure, refuse_erasure
from services.governance.holds import Hold, create_hold, list_holds, release_hold
from services.governance.retention_run import RetentionReport, retention_run

log = logging.getLogger("wa_archive.retention")


# The erasures counter's outcome label for a request's status after an action (the others are their own label).
ERASURE_OUTCOME_LABELS: Final[Mapping[str, str]] = {"blocked": "blocked_by_hold"}


@dataclass(frozen=True, slots=True)
class HoldRelease:
    """A released hold and the erasure requests it had blocked, as processed just after the release."""

    hold: Hold
    erasures: list[ErasureOutcome]

    def to_json(self) -> dict[str, object]:
        return {
            **self.hold.to_json(),
            "erasures": [{"request_ref": e.request_ref, "status": e.status} for e in self.erasures],
        }


class GoverningActions(ActionsBase):
    """Erasures, holds and retention runs (``dpo``; the scheduler runs retention and finishes erasures)."""

    async def erase(
        self,
        operator: Operator,
        *,
        contact: str | None,
        phone_number_id: str | None = None,
        request_ref: str,
        subject_refs: Sequence[str] | None = None,
    ) -> ErasureOutcome:
        """Erasure by crypto-shredding (erasure.py) of the person ``contact`` or ``subject_refs`` names;
        ``status`` is ``blocked`` when a legal hold covers the person. Only on an approved request
        (:meth:`ApprovalActions.request_erasure`; :class:`ApprovalRequired` otherwise)."""
        authorize(operator, "erase")
        require_approval(operator, "erase")
        outcome = await erase_subject(
            self.access.pool,
            self.access.keyring,
            self.access.bucket,
            self.access.pepper,
            contact=contact,
            phone_number_id=phone_number_id,
            request_ref=request_ref,
            actor=operator.name,
            subject_refs=subject_refs,
        )
        self._count_erasures([outcome])
        return outcome

    def _count_erasures(self, outcomes: Sequence[ErasureOutcome]) -> None:
        for outcome in outcomes:
            # A request another process is carrying out (it holds the request's lock) is in progress, not blocked.
            label = ERASURE_OUTCOME_LABELS.get(outcome.status, outcome.status)
            self.metrics.erasures.labels(label).inc()
            self.metrics.keys_shredded.inc(len(outcome.keys_destroyed))

    async def _process_erasures(
        self,
        operator: Operator,
        blocked_by: Sequence[str] | None = None,
        statuses: Sequence[ErasureStatus] = OPEN_STATUSES,
    ) -> list[ErasureOutcome]:
        outcomes = await process_open_requests(
            self.access.pool,
            self.access.keyring,
            self.access.bucket,
            actor=operator.name,
            blocked_by=blocked_by,
            statuses=statuses,
        )
        self._count_erasures(outcomes)
        return outcomes

    async def erasures(self, operator: Operator) -> list[ErasureRequest]:
        authorize(operator, "erasures")
        return await erasure_requests(self.access.pool)

    async def refuse_erasure(self, operator: Operator, request_ref: str, *, ground: str) -> ErasureRequest:
        """Refuse an open request on a legal ground (audited; final). :class:`NotFound` for an unknown request,
        :class:`ErasureError` when it is no longer open, in progress, or the ground is not one of the law's."""
        authorize(operator, "erasure.refuse")
        return await self._decide_erasure(
            "refused", lambda conn: refuse_erasure(conn, request_ref, ground=ground, actor=operator.name)
        )

    async def extend_erasure(self, operator: Operator, request_ref: str, *, reason: str) -> ErasureRequest:
        """Extend an open request's deadline by two months, once, within the first month (audited)."""
        authorize(operator, "erasure.extend")
        return await self._decide_erasure(
            "extended", lambda conn: extend_erasure(conn, request_ref, reason=reason, actor=operator.name)
        )

    async def _decide_erasure(self, outcome: str, decide: Callable[[Any], Awaitable[ErasureRequest]]) -> ErasureRequest:
        """A DPO's decision on a request, on one connection; an unknown request is :class:`NotFound`."""
        try:
            async with self.access.pool.acquire() as conn:
                request = await decide(conn)
        except UnknownErasure as exc:
            raise NotFound(str(exc)) from None
        self.metrics.erasures.labels(outcome).inc()
        return request

    async def create_hold(
        self,
        operator: Operator,
        *,
        scope: HoldScope,
        case_ref: str,
        waba_id: str | None = None,
        phone_number_id: str | None = None,
        contact: str | None = None,
        group_id: str | None = None,
    ) -> Hold:
        """Create a legal hold (audited); :class:`HoldError` when the scope's identifiers are missing."""
        authorize(operator, "hold.create")
        async with self.access.pool.acquire() as conn:
            return await create_hold(
                conn,
                self.access.pepper,
                scope=scope,
                case_ref=case_ref,
                actor=operator.name,
                waba_id=waba_id,
                phone_number_id=phone_number_id,
                contact=contact,
                group_id=group_id,
            )

    async def holds(self, operator: Operator, *, include_released: bool = False) -> list[Hold]:
        authorize(operator, "hold.list")
        async with self.access.pool.acquire() as conn:
            return await list_holds(conn, include_released=include_released)

    async def release_hold(self, operator: Operator, hold_id: str) -> HoldRelease:
        """Release an active hold (audited); :class:`NotFound` when there is no active hold with this id. The
        erasure requests it blocked resume at once: those no other hold covers are carried out. Only on an approved
        request (:meth:`ApprovalActions.request_hold_release`; :class:`ApprovalRequired` otherwise)."""
        authorize(operator, "hold.release")
        require_approval(operator, "hold.release")
        try:
            uuid.UUID(hold_id)
        except ValueError:
            raise NotFound("no active hold with this id") from None
        async with self.access.pool.acquire() as conn:
            hold = await release_hold(conn, hold_id, actor=operator.name)
        if hold is None:
            raise NotFound("no active hold with this id")
        return HoldRelease(hold, await self._process_erasures(operator, blocked_by=[hold.hold_id]))

    async def finish_erasures(self, operator: Operator) -> list[ErasureOutcome]:
        """Finish the erasures left in progress: keys destroyed, but the erasure log or the key copies not written
        or deleted yet (the store was down, or the console's identity, which may not write the bucket, carried
        them out). The retention service calls it every few seconds."""
        authorize(operator, "erase")
        return await self._process_erasures(operator, statuses=("in_progress",))

    async def run_retention(
        self, operator: Operator, *, dry_run: bool, progress: ProgressCallback | None = None
    ) -> RetentionReport:
        """A retention run (run.py), counted by outcome and audited with its report, or with its failure."""
        authorize(operator, "retention.run")
        action = "retention.dry_run" if dry_run else "retention.run"
        try:
            # A real run first carries out the open erasure requests (a crash may have interrupted one; a hold
            # that blocked one may have expired meanwhile): the deadline is the law's, not the next request's.
            erasures = [] if dry_run else await self._process_erasures(operator)
            report = await retention_run(self.access.pool, self.access.bucket, dry_run=dry_run, progress=progress)
            for outcome in erasures:
                report.erasures[outcome.status] = report.erasures.get(outcome.status, 0) + 1
        except Exception as exc:
            self.metrics.runs.labels("failure").inc()
            await self._audit_failure(operator, action, exc, {"dry_run": dry_run})
            raise
        if dry_run:
            self.metrics.runs.labels("dry_run").inc()
        else:
            self.metrics.runs.labels("success").inc()
            self.metrics.objects_deleted.inc(report.objects_deleted)
            self.metrics.objects_locked.inc(report.objects_locked)
            for name, count in report.events_by_class.items():
                self.metrics.events_expired.labels(name).inc(count)
            self.metrics.last_run_success.set(datetime.now(UTC).timestamp())
        await self._audit(operator, action, report.to_json())
        return report
