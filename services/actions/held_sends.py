"""Messages held before sending (issue 27 item 2), the action side: the request kind ``send``, its decisions as
records for the send gateway, the expiry sweep, and the held message as the approver reads it.

- The archiver opens a request of kind ``send`` for each ``send_held`` event it archives (services/archiver/held.py:
  once per send, in the transaction that indexes the event; the requester is the message's author). Its target holds
  references only (services/governance/held_sends.py); its expiry is the hold's ``held_until``.
- Who approves: a data protection officer who is not the author (:class:`SelfApproval`, 403, in the console, the
  CLI and ``/v1/approvals`` alike). The seed asks for "un responsable"; a role of its own (``approver``, between
  reader and dpo) would need the console sessions' role CHECK widened, which the add-only migrations of a shared
  database do not allow yet: the kind names its ``approver_role`` once, so adding it later is that one line.
- Approving publishes the decision record ``approved`` with the send body, read from the archived event (decrypted
  under the person's key, audited as a retrieval by the approver, never logged); rejecting publishes ``rejected``
  with the reason given. Both inside the transaction that records the decision (``settle``): Kafka down, the
  decision is rolled back and refused (:class:`DecisionNotPublished`, 409), the request stays pending and can be
  decided again. The audit rows ``approval.approved`` / ``approval.rejected`` name the request, the send and the
  event; ``held_send.published`` names the record's decision.
- A request whose ``held_until`` came gets the record ``expired`` from :meth:`HeldSendActions.publish_expired`
  (the retention service's scheduler, every ``WA_RETENTION_HELD_SWEEP_INTERVAL_S``; ``wa-archive approvals
  sweep``): each under a row lock, marked ``published_at`` in the transaction that waited for Kafka's
  acknowledgement, so a restart publishes none twice and misses none. A crash between the acknowledgement and the
  commit publishes that one record again: the gateway acts on the first record of a send id only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, cast

from services.actions.approvals import (
    ApprovalActions,
    ApprovalRequest,
    Executed,
    ExecutionContext,
    RequestKind,
    UnknownRequest,
    may_approve,
    register_kind,
)
from services.actions.decisions import DecisionPublisher
from services.actions.operators import Operator, authorize
from services.core.audit import Disclosure, audited_decrypt, write_audit
from services.core.db import Connection
from services.core.index import binary_keys
from services.core.plaintext import UndecodableRecord, read_envelope
from services.core.reader import RecordLocation
from services.core.refusals import ActionRefused, InvalidRequest
from services.core.vocabulary import is_event_id
from services.governance import approvals as store
from services.governance.held_sends import SEND_KIND, Decision, decision_record
from services.review.correspondent import Correspondent
from services.review.drafts import Draft, draft_of, draft_text

if TYPE_CHECKING:
    from services.actions.layer import Actions

log = logging.getLogger("wa_archive.held_sends")

# The reason of the audit rows of a held message read to decide it (no personal data: a fixed text and ids).
READ_TO_DECIDE = "four eyes: reading a held message to decide whether it is sent"
READ_TO_SEND = "four eyes: the approved message handed to the send gateway"
SWEEPER = "held-send-expiry"


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldDraft:
    """A held message as its approver reads it: the request, the send body as the company wrote it (``body``: any
    JSON value), the template's text when the gateway archived it, who receives it (``recipient``: as the
    conversation's header names the person; None when the records do not say, or the reader may not see them),
    and whether the one reading may decide it."""

    request: ApprovalRequest
    body: Any
    template_text: str | None
    recipient: Correspondent | None
    may_decide: bool

    @property
    def draft(self) -> Draft:
        return draft_of(self.body, self.template_text)

    @property
    def recipient_number(self) -> str | None:
        """The number it goes to: as the person's records show it, else as the send body addresses it (``to``)."""
        if self.recipient is not None and self.recipient.number:
            return self.recipient.number
        to = self.body.get("to") if isinstance(self.body, dict) else None
        if not isinstance(to, str) or not to.strip() or self.body.get("recipient_type") == "group":
            return None
        return to if to.startswith("+") else f"+{to}"

    @property
    def business_number(self) -> str:
        """The sending number, readable when the records showed it, else its phone_number_id."""
        phone_number_id = str(self.request.target.get("phone_number_id"))
        known = self.recipient.business_numbers if self.recipient is not None else ()
        shown = next((n.display_number for n in known if n.phone_number_id == phone_number_id), None)
        return shown or phone_number_id

    def to_json(self) -> dict[str, Any]:
        """The draft for the CLI and the admin API: the body as posted, the same as plain text, who receives it."""
        recipient = self.recipient
        return {
            "request_id": self.request.request_id,
            "body": self.body,
            "template_text": self.template_text,
            "text": draft_text(self.draft),
            "recipient": recipient.label if recipient is not None else None,
            "recipient_number": self.recipient_number,
            "business_number": self.business_number,
            "rules": list(self.request.target.get("rules") or []),
            "author": self.request.requested_by,
            "expires_at": self.request.expires_at.isoformat(),
            "may_decide": self.may_decide,
        }


class HeldSendActions(ApprovalActions):
    """The held messages' part of the action layer (the kind is registered below)."""

    def _publisher(self) -> DecisionPublisher:
        if self.access.decisions is None:
            raise InvalidRequest("this process has no Kafka producer for the decisions on held messages")
        return self.access.decisions

    async def _held_envelope(self, operator: Operator, request: ApprovalRequest, reason: str) -> dict[str, Any]:
        """The archived ``send_held`` event of ``request``, decrypted once the audit row (a retrieval by
        ``operator`` with ``reason``, naming the request and the event) is committed. :class:`InvalidRequest` when
        it is no longer readable (the person was erased, or the record is not an envelope)."""
        event_id = str(request.target.get("event_id"))
        row = await self.access.pool.fetchrow(
            "SELECT encode(subject_ref, 'hex') AS subject_ref, object_key, record_index FROM archived_events"
            " WHERE event_id = ANY($1::bytea[])",
            binary_keys([event_id]) if is_event_id(event_id) else [],
        )
        if row is None:
            raise InvalidRequest("the held message is no longer in the archive (erased with the person)")
        disclosure = Disclosure(
            actor=operator.name,
            action="retrieval",
            reason=reason,
            records={row["subject_ref"]: 1},
            details={"request_id": request.request_id, "event_id": event_id, "kind": SEND_KIND},
        )
        location = RecordLocation(event_id, row["object_key"], row["record_index"])
        async with self.access.pool.acquire() as conn:
            opened = await audited_decrypt(conn, disclosure, lambda: self.access.reader.open([location]))
        plaintext = opened.get(event_id)
        if plaintext is None:
            raise InvalidRequest("the held message was erased with the person: it cannot be sent")
        decoded = read_envelope(plaintext)
        if isinstance(decoded, UndecodableRecord) or not isinstance(decoded.value.get("payload"), dict):
            raise InvalidRequest("the archived held message cannot be read")
        envelope: dict[str, Any] = decoded.value
        return envelope

    async def held_draft(self, operator: Operator, request_id: str) -> HeldDraft:
        """A held message for the one deciding it (or its author, or a DPO): its body decrypted and who receives
        it, both audited as retrievals with :data:`READ_TO_DECIDE`. :class:`UnknownRequest` for another kind or
        another person (as :meth:`approval`)."""
        request = await self.approval(operator, request_id)
        if request.kind != SEND_KIND:
            raise UnknownRequest("no held message with this id")
        payload = (await self._held_envelope(operator, request, READ_TO_DECIDE))["payload"]
        gateway = payload.get("gateway") if isinstance(payload.get("gateway"), dict) else {}
        text = gateway.get("text")
        # The approver must know who receives it (the same message is fine for one person and a leak to another);
        # the records that name the person are read for that, audited with the same reason.
        recipient: Correspondent | None = None
        subject_ref = request.target.get("subject_ref")
        if isinstance(subject_ref, str):
            try:
                recipient = await cast("Actions", self).correspondent(
                    operator, subject_ref=subject_ref, reason=READ_TO_DECIDE
                )
            except ActionRefused:
                recipient = None
        return HeldDraft(
            request=request,
            body=payload.get("request"),
            template_text=text if isinstance(text, str) else None,
            recipient=recipient,
            may_decide=may_approve(operator, request),
        )

    async def _publish(self, conn: Connection, request: ApprovalRequest, record: Mapping[str, Any], actor: str) -> None:
        await self._publisher().publish(record)
        await store.mark_published(conn, request.request_id)
        await write_audit(
            conn,
            actor=actor,
            action="held_send.published",
            reason=None,
            subject_ref=request.subject_ref,
            details={
                "request_id": request.request_id,
                "kind": SEND_KIND,
                "decision": record["decision"],
                "send_id": request.target.get("send_id"),
                "event_id": request.target.get("event_id"),
            },
        )

    async def publish_expired(self, operator: Operator, *, now: datetime | None = None, limit: int = 50) -> int:
        """Publish the ``expired`` record of every held message whose hold ran out undecided (at most ``limit``
        per call; the scheduler calls again), each marked in the transaction that waited for its acknowledgement.
        Returns how many were published; :class:`DecisionNotPublished` when Kafka fails (those not published yet
        are taken at the next call)."""
        authorize(operator, "approval.list")
        now = now or datetime.now(UTC)
        published = 0
        async with self.access.pool.acquire() as conn:
            while published < limit:
                async with conn.transaction():
                    due = await store.lock_expired_unpublished(
                        conn, self.access.keyring, kind=SEND_KIND, now=now, limit=1
                    )
                    if not due:
                        break
                    request = due[0]
                    record = decision_record(
                        request.target, decision="expired", request_id=request.request_id, decided_at=request.expires_at
                    )
                    await self._publish(conn, request, record, operator.name)
                published += 1
        if published:
            log.info("published %d expired held message(s)", published)
        return published


async def _settle(actions: Actions, operator: Operator, request: ApprovalRequest, conn: Connection) -> dict[str, Any]:
    """The decision record of a held message (approved: with its body; rejected: with the reason), published and
    marked inside the decision's transaction."""
    decision: Decision = "approved" if request.status == "approved" else "rejected"
    body = None
    if decision == "approved":
        envelope = await actions._held_envelope(operator, request, READ_TO_SEND)
        body = envelope["payload"].get("request")
        if body is None:
            raise InvalidRequest("the archived held message has no send body: reject it")
    record = decision_record(
        request.target,
        decision=decision,
        request_id=request.request_id,
        decided_at=request.decided_at or datetime.now(UTC),
        reason=request.decision if decision == "rejected" else None,
        request=body,
    )
    await actions._publish(conn, request, record, operator.name)
    return {"decision": decision, "send_id": request.target.get("send_id")}


async def _execute(actions: Actions, approver: Operator, request: ApprovalRequest, _: ExecutionContext) -> Executed:
    # Settled already, in the decision's transaction: the record is on its way to the gateway.
    outcome = dict(request.outcome or {})
    return outcome, outcome


register_kind(
    RequestKind(
        name=SEND_KIND,
        action="send.release",
        approver_role="dpo",
        describe="sending a held message",
        execute=_execute,
        settle=_settle,
    )
)
