"""The data protection officer's legal holds: ``GET /dpo/holds``, ``POST /dpo/holds`` (place one),
``POST /dpo/holds/release``. Releasing a hold lets the erasure requests it blocked go ahead; the notice says how
each ended."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from services.actions.layer import Actions
from services.console.choices import HOLD_SCOPES
from services.console.deps import ActionsDep, CurrentSession, PagesDep, Posted, PostedBy
from services.console.forms import BadForm, field
from services.console.i18n import translator
from services.console.pages import Pages
from services.console.sessions import Session

router = APIRouter()


async def holds_page(
    request: Request, session: Session, actions: Actions, pages: Pages, *, notice: str | None = None
) -> Response:
    """The active and the released holds, with ``notice`` (what was just done), if any."""
    holds = await actions.holds(session.operator, include_released=True)
    return pages.render(
        request,
        "holds.html",
        session,
        active=[h for h in holds if h.released_at is None],
        released=[h for h in holds if h.released_at is not None],
        scopes=HOLD_SCOPES,
        notice=notice,
    )


@router.get("/dpo/holds", response_class=HTMLResponse)
async def holds(request: Request, session: CurrentSession, actions: ActionsDep, pages: PagesDep) -> Response:
    return await holds_page(request, session, actions, pages)


@router.post("/dpo/holds", response_class=HTMLResponse)
async def hold_create(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("hold.create"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session, form = posted.session, posted.form
    scope = field(form, "scope")
    if scope not in HOLD_SCOPES:
        raise BadForm(f"unknown scope {scope!r}")
    hold = await actions.create_hold(
        session.operator,
        scope=scope,
        case_ref=field(form, "case_ref") or "",
        waba_id=field(form, "waba_id"),
        phone_number_id=field(form, "phone_number_id"),
        contact=field(form, "contact"),
        group_id=field(form, "group_id"),
    )
    notice = translator(session.locale).gettext("Hold placed: %(case)s.", case=hold.case_ref)
    return await holds_page(request, session, actions, pages, notice=notice)


@router.post("/dpo/holds/release", response_class=HTMLResponse)
async def hold_release(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("hold.release"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session, form = posted.session, posted.form
    asked = await actions.request_hold_release(
        session.operator, field(form, "hold_id") or "", reason=field(form, "reason")
    )
    t = translator(session.locale)
    notice = t(
        "Release requested: the hold stays until a second DPO approves it (request %(id)s).", id=asked.request_id
    )
    return await holds_page(request, session, actions, pages, notice=notice)
