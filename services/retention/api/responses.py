"""The admin API's answers, typed, so that ``/openapi.json`` documents each one, its errors included.

Each model's fields are the keys of the domain object's ``to_json()`` (or ``proof()``, ``document()``), in the same
order and with the same types and nulls: a route validates the domain's JSON into its model and FastAPI writes the
model, so the bytes an answer had before the models existed are unchanged (``tests/unit/test_admin_api.py``). The
models forbid unknown keys and coercion: a key the domain adds without its model, or a type that drifts, is an
error in the tests (and a 500), never a field silently dropped or rewritten.

Times are the domain's ISO 8601 strings, written as they are (``Moment``); the conversation and group timeline
answers are written by :class:`RecordsJSON` (see there) and their models document them only.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Final

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from services.core.plaintext import json_bytes
from services.core.vocabulary import Direction, EventKind, HoldScope
from services.governance.erasure import ErasureStatus
from services.governance.grounds import RefusalGround

# A moment as the domain writes it (datetime.isoformat()): documented as a date-time, passed through as text.
Moment = Annotated[str, Field(json_schema_extra={"format": "date-time"})]


class Answer(BaseModel):
    """An answer's shape: exactly the domain's keys, their types as they are (no coercion)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ErrorBody(Answer):
    """Every refusal and error but a malformed request (422): what was wrong, naming no person."""

    detail: str


# When each error status is answered; the text is the OpenAPI description of the status.
ERROR_WHEN: Final[dict[int, str]] = {
    400: "Refused: the request is incomplete or contradicts the state of what it is about; nothing was done",
    401: "No bearer token, or an unknown one (answered before the body is read)",
    403: "The token's role does not allow this action (answered before the body is read)",
    404: "What the request is about does not exist; nothing was done",
    409: "The approval request was decided already, or expired; nothing was done",
    413: "The body is over the service's limit (max_body_bytes)",
    503: "Not ready (the archive is not open yet), or a person's key is wrapped by a KEK this service was not given",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """The OpenAPI ``responses`` of a route or router for these error statuses, each with the :class:`ErrorBody`
    schema."""
    return {status: {"model": ErrorBody, "description": ERROR_WHEN[status]} for status in statuses}


# Every /v1/ route: the gate's refusals, and not ready.
GATED: Final = errors(401, 403, 503)
# A route with a body: the same, and a body over the limit.
GATED_WITH_BODY: Final = errors(401, 403, 413, 503)


# ---------------------------------------------------------------- records, decrypted


class RecordsJSON(JSONResponse):
    """The JSON of decrypted records, written by :func:`services.core.plaintext.json_bytes` and returned as it is.

    FastAPI's own serialisation of a returned dict refuses nesting beyond a limit (HTTP 500, "Maximum serialization
    depth exceeded") that a message the archive accepted can pass (up to about 1,020 levels): one such message
    would hide the person's whole conversation. The strings are valid Unicode already (lone surrogates are U+FFFD
    once decoded), and orjson writes the usual answer faster than the generic encoder. The route's
    ``response_model`` documents the answer; it is not validated against it."""

    def render(self, content: Any) -> bytes:
        return json_bytes(content)


class StatusView(Answer):
    status: str = Field(description="sent, delivered, read, played, failed or deleted, as Meta reported it")
    timestamp: int | None


class EditView(Answer):
    event_id: str
    by: str = Field(description="customer or business")
    timestamp: int | None
    payload: Any = Field(description="the edit as archived")


class DeletionView(Answer):
    event_id: str
    by: str = Field(description="customer or business")
    timestamp: int | None
    how: str = Field(description="revoke, edit or deleted-status: the record that deleted the message")


class MessageView(Answer):
    """One item of a timeline: a message with its statuses, edits and deletion, a change whose message is not
    archived, or a record that could not be read (``unreadable`` says why; its ``payload`` is null)."""

    event_id: str
    message_id: str | None
    kind: EventKind
    type: str | None
    direction: Direction = Field(description="inbound (the person's) or outbound (the business's)")
    timestamp: int | None = Field(description="Meta's timestamp, seconds since the epoch")
    received_at: str
    latest_status: str | None
    statuses: list[StatusView]
    edits: list[EditView]
    deleted: DeletionView | None
    media: dict[str, Any] | None = Field(description="the archived medium's metadata, when the message has one")
    payload: Any = Field(description="the record as archived (Meta's JSON), decrypted")
    unreadable: str | None
    send_outcome: str | None = Field(
        description="a send through the gateway: sent, refused, unknown (the answer was lost, or the gateway"
        " journaled no outcome: it may have reached the customer), not_sent, or pending (its outcome is not archived"
        " yet); null for any other message"
    )


class ConversationAnswer(Answer):
    messages: list[MessageView]
    shredded_records: int = Field(description="records whose key was destroyed (erased): not readable")


class GroupTimelineAnswer(Answer):
    group_ref: str = Field(description="the group's pseudonym")
    messages: list[MessageView]
    shredded_records: int = Field(description="records whose key was destroyed (erased): not readable")


class ExportFileView(Answer):
    """One file of a finished export job, and a link that downloads it for a few minutes (with the caller's bearer
    token: the job's requester or a DPO)."""

    name: str
    size: int
    sha256: str = Field(description="hex; the file's SHA-256 as written to the work bucket")
    url: str = Field(description="GET it with your bearer token before it expires")
    url_expires_at: Moment


class ExportJobView(Answer):
    """An export job (services/evidence/jobs.py): its scope (``subject_access``, ``conversation`` or ``search``),
    the person's pseudonym (none for a search result), its progress (``step``, ``done`` of ``total``) and status
    (``queued``, ``running``, ``done``, ``failed`` with fixed words, ``expired``); once done, its files, each with
    a short-lived download link. A search result's ``selection`` describes the search (never its words), and
    ``event_count`` says how many records it selected."""

    model_config = ConfigDict(extra="forbid", strict=False)

    job_id: str
    scope: str
    subject_ref: str | None
    formats: list[str]
    requested_by: str
    status: str
    step: str
    done: int
    total: int
    error: str | None
    created_at: Moment
    finished_at: Moment | None
    expires_at: Moment | None
    files: list[ExportFileView]
    selection: dict[str, Any] | None
    event_count: int


# ---------------------------------------------------------------- metadata, governance


class IndexHitView(Answer):
    """One index row: pseudonymous metadata of an archived event, nothing decrypted."""

    event_id: str
    kind: EventKind
    type: str | None
    phone_number_id: str | None
    subject_ref: str | None = Field(description="the person's pseudonym (POST /v1/messages takes it)")
    event_time: Moment | None
    received_at: Moment
    retention_class: str
    expires_at: Moment | None
    deleted: bool
    edited: bool


class ErasureProof(Answer):
    """What an erasure did: the keys destroyed and when, the objects and events deleted, or why it waits."""

    request_ref: str
    status: ErasureStatus
    subject_refs: list[str]
    keys_destroyed: list[str]
    key_destroyed_at: Moment | None
    objects_deleted: int
    objects_locked: int = Field(description="objects under Object Lock: unreadable now, deleted when it expires")
    events_deleted: int
    blocked_by_cases: list[str] = Field(description="the case references of the holds the erasure waits for")
    refusal_ground: RefusalGround | None


class ErasureRequestView(Answer):
    """An erasure request as tracked against its deadline (``holds``: how many holds block it)."""

    request_ref: str
    status: ErasureStatus
    received_at: Moment
    deadline_at: Moment
    completed_at: Moment | None
    holds: int
    extended_at: Moment | None
    extension_reason: str | None
    refusal_ground: RefusalGround | None
    refused_at: Moment | None


class HoldView(Answer):
    hold_id: str
    case_ref: str
    scope: HoldScope
    waba_id: str | None
    phone_number_id: str | None
    subject_count: int = Field(description="how many pseudonyms the hold lists (a person's scopes)")
    created_by: str
    created_at: Moment
    released_at: Moment | None


class ReleasedErasure(Answer):
    request_ref: str
    status: ErasureStatus


class HoldReleaseView(HoldView):
    """The released hold, and the erasure requests it had blocked as they stand after the release."""

    erasures: list[ReleasedErasure]


class RetentionReportView(Answer):
    run_id: str
    dry_run: bool
    started_at: Moment
    objects: int = Field(description="objects past their retention (deleted unless a dry run)")
    objects_deleted: int
    objects_locked: int
    objects_held: int
    objects_deferred: int
    events_deleted: int
    events_by_class: dict[str, int]
    erasures: dict[str, int] = Field(description="open erasure requests the run processed, by the status reached")


class AuditEntryView(Answer):
    audit_id: int
    at: Moment
    actor: str
    action: str
    reason: str | None
    subject_ref: str | None
    record_count: int | None
    details: str = Field(description="the entry's JSON object, as text, as stored")


# ---------------------------------------------------------------- four eyes


class ApprovalRequestView(Answer):
    """A four-eyes request (services/actions/approvals.py): what is asked (``kind``, ``target``: references only),
    by whom and why, until when, and its state (``pending``, ``expired``, ``approved``, ``rejected``, ``failed``);
    once decided, by whom and why, and what carrying it out returned (``outcome``). ``reason`` and ``decision`` are
    null once the person they were sealed under is erased."""

    model_config = ConfigDict(extra="forbid", strict=False)

    request_id: str
    kind: str
    target: dict[str, Any]
    subject_ref: str | None
    reason: str | None
    requested_by: str
    requested_at: str
    expires_at: str
    state: str
    decided_by: str | None
    decided_at: str | None
    decision: str | None
    outcome: dict[str, Any] | None
    # A held message (kind ``send``): when its decision record reached the send gateway's topic.
    published_at: str | None = None


class HeldDraftView(Answer):
    """A held message (request kind ``send``): the send body as the company posted it (``body``), the same as plain
    text (``text``: what the customer would read), who receives it (``recipient``: as the conversation names the
    person; null when the records do not say), the sending number, the rules that held it, its author, until when
    it may be sent, and whether the caller may decide it (never its author)."""

    model_config = ConfigDict(extra="forbid", strict=False)

    request_id: str
    body: Any
    template_text: str | None
    text: str
    recipient: str | None
    recipient_number: str | None
    business_number: str
    rules: list[str]
    author: str
    expires_at: str
    may_decide: bool


class ExportAccepted(Answer):
    """An export accepted: the jobs queued (follow each at ``GET /v1/exports/{job_id}``; the ``Location`` header
    names the first), or, above ``WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES`` records, the four-eyes request waiting
    for another person's approval (``Location``: ``/v1/approvals/{request_id}``), whose jobs are queued then."""

    jobs: list[ExportJobView]
    approval_request: ApprovalRequestView | None


# A route whose action is requested (four eyes): 202 and the request, carried out once another person approves.
REQUESTED: Final[dict[int | str, dict[str, Any]]] = {
    202: {"model": ApprovalRequestView, "description": "Requested: carried out once another person approves it"}
}


class BreakGlassAnswer(Answer):
    """A break-glass request as stored: it waits for a DPO other than the requester (four eyes)."""

    request_id: str
    state: str
    expires_at: datetime
