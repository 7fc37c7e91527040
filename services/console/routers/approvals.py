"""Four eyes in the console (services/actions/approvals.py): ``GET /approvals`` lists the requests waiting for the
signed-in person's decision (what, who asked, why, until when) and their own requests; ``POST
/approvals/{id}/approve`` carries the request out as them, ``POST /approvals/{id}/reject`` refuses it, each with a
reason and the session's CSRF token. Never one's own request: the action refuses it (403)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from services.actions.approvals import REQUEST_KINDS
from services.actions.layer import Actions
from services.console.deps import ActionsDep, CurrentSession, PagesDep, Posted, PostedBy
from services.console.forms import field
from services.console.i18n import translator
from services.console.pages import Pages
from services.console.sessions import Session

router = APIRouter()


async def approvals_page(
    request: Request, session: Session, actions: Actions, pages: Pages, *, notice: str | None = None
) -> Response:
    waiting = await actions.approvals(session.operator, waiting_for_me=True)
    mine = []
    if session.operator.role == "dpo":  # every kind built in is a DPO's to request
        everything = await actions.approvals(session.operator, waiting_for_me=False, limit=200)
        mine = [r for r in everything if r.requested_by == session.operator.name][:20]
    return pages.render(
        request,
        "approvals.html",
        session,
        waiting_requests=waiting,
        mine=mine,
        kinds={name: kind.describe for name, kind in REQUEST_KINDS.items()},
        now=datetime.now(UTC),
        notice=notice,
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
