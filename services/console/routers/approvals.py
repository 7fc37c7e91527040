"""Four eyes in the console (services/actions/approvals.py): ``GET /approvals`` lists the requests waiting for the
signed-in person's decision (what, about what in words a person reads, who asked, why, until when) and their own
requests; ``POST /approvals/{id}/approve`` carries the request out as them, ``POST /approvals/{id}/reject`` refuses
it, each with a reason and the session's CSRF token. Never one's own request: the action refuses it (403).

A held message (kind ``send``, services/actions/held_sends.py) opens on ``GET /approvals/{id}``: the draft rendered
as the customer would see it, the recipient (named as the conversation's header names the person: whoever approves
must know to whom it goes; the reading is audited as a retrieval with the four-eyes reason), the sending number,
the rules that held it, its author and expiry, and Approve / Reject with a reason when the viewer may decide it
(never its author, who sees it without the buttons)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from services.actions.approvals import REQUEST_KINDS, ApprovalRequest
from services.actions.layer import Actions
from services.console.deps import ActionsDep, CurrentSession, PagesDep, Posted, PostedBy
from services.console.forms import field
from services.console.i18n import Translator, translator
from services.console.pages import Pages
from services.console.sessions import Session
from services.governance.held_sends import SEND_KIND
from services.governance.holds import Hold

router = APIRouter()


def about(t: Translator, request: ApprovalRequest, holds: dict[str, Hold]) -> str:
    """What a request is about, in words a person reads (not its raw references): the person and the request
    reference of an erasure, the case of a hold, the size of an export, the rules that held a message…"""
    target = request.target
    people = len(target.get("subject_refs") or [])
    if request.kind == "erase":
        return t.ngettext(
            "One person (%(num)s pseudonym), their request %(ref)s",
            "One person (%(num)s pseudonyms), their request %(ref)s",
            people,
            ref=target.get("request_ref") or "?",
        )
    if request.kind == "hold.release":
        hold = holds.get(str(target.get("hold_id")))
        if hold is None:
            return t("A legal hold that is no longer active")
        return t("The legal hold of case %(case)s on a %(scope)s", case=hold.case_ref, scope=t.term(hold.scope))
    if request.kind == "case.close":
        return t("Case %(case)s", case=target.get("case_ref") or "?")
    if request.kind == "case.export":
        return t(
            "Case %(case)s, into the folder %(folder)s", case=target.get("case_ref") or "?", folder=target.get("out")
        )
    if request.kind == "export":
        return t.ngettext(
            "%(num)s message of %(people)s person(s), as %(formats)s",
            "%(num)s messages of %(people)s person(s), as %(formats)s",
            int(target.get("messages") or 0),
            people=people,
            formats=", ".join(target.get("formats") or []),
        )
    if request.kind == "break_glass":
        return t("A conversation outside the reader's cases")
    if request.kind == SEND_KIND:
        return t("A message to a customer, held by the rules: %(rules)s", rules=", ".join(target.get("rules") or []))
    return ", ".join(f"{name}: {value}" for name, value in target.items() if value is not None)


async def approvals_page(
    request: Request, session: Session, actions: Actions, pages: Pages, *, notice: str | None = None
) -> Response:
    waiting = await actions.approvals(session.operator, waiting_for_me=True)
    mine = []
    holds: dict[str, Hold] = {}
    if session.operator.role == "dpo":  # every kind built in is a DPO's to request
        everything = await actions.approvals(session.operator, waiting_for_me=False, limit=200)
        mine = [r for r in everything if r.requested_by == session.operator.name][:20]
        if any(r.kind == "hold.release" for r in waiting):
            holds = {h.hold_id: h for h in await actions.holds(session.operator)}
    t = translator(session.locale)
    return pages.render(
        request,
        "approvals.html",
        session,
        waiting_requests=waiting,
        mine=mine,
        about={r.request_id: about(t, r, holds) for r in [*waiting, *mine]},
        kinds={name: kind.describe for name, kind in REQUEST_KINDS.items()},
        now=datetime.now(UTC),
        notice=notice,
    )


@router.get("/approvals/{request_id}", response_class=HTMLResponse)
async def held_message(
    request: Request, request_id: str, session: CurrentSession, actions: ActionsDep, pages: PagesDep
) -> Response:
    """A held message as the customer would see it (module docstring); another kind has no page of its own."""
    held = await actions.held_draft(session.operator, request_id)
    return pages.render(
        request,
        "held_message.html",
        session,
        held=held,
        draft=held.draft,
        request_state=held.request.state(datetime.now(UTC)),
    )


@router.get("/approvals", response_class=HTMLResponse)
async def approvals(
    request: Request, session: CurrentSession, actions: ActionsDep, pages: PagesDep, requested: str | None = None
) -> Response:
    notice = None
    if requested is not None:
        notice = translator(session.locale).gettext(
            "Requested: nothing is done until a second DPO approves it (request %(id)s).", id=requested[:36]
        )
    return await approvals_page(request, session, actions, pages, notice=notice)


@router.post("/approvals/{request_id}/approve", response_class=HTMLResponse)
async def approve(
    request: Request,
    request_id: str,
    posted: Annotated[Posted, Depends(PostedBy("approval.decide"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session = posted.session
    done = await actions.approve(session.operator, request_id, reason=field(posted.form, "reason"))
    t = translator(session.locale)
    notice = t(
        "Approved and carried out: %(what)s (requested by %(who)s).",
        what=t(REQUEST_KINDS[done.request.kind].describe),
        who=done.request.requested_by,
    )
    request.state.waiting = await actions.waiting_count(session.operator)
    return await approvals_page(request, session, actions, pages, notice=notice)


@router.post("/approvals/{request_id}/reject", response_class=HTMLResponse)
async def reject(
    request: Request,
    request_id: str,
    posted: Annotated[Posted, Depends(PostedBy("approval.decide"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session = posted.session
    rejected = await actions.reject(session.operator, request_id, reason=field(posted.form, "reason"))
    t = translator(session.locale)
    notice = t(
        "Rejected: %(what)s (requested by %(who)s). Nothing was done.",
        what=t(REQUEST_KINDS[rejected.kind].describe),
        who=rejected.requested_by,
    )
    request.state.waiting = await actions.waiting_count(session.operator)
    return await approvals_page(request, session, actions, pages, notice=notice)
