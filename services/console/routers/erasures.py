"""The data protection officer's erasure requests (GDPR article 17): ``GET /dpo/erasures``, ``POST /dpo/erasures``
(request a person's erasure: four eyes, carried out once a second DPO approves it on ``/approvals``), ``POST
/dpo/erasures/refuse`` (on a ground of article 17(3)), ``POST /dpo/erasures/extend`` (the answer's deadline,
article 12(3)). Each decision is shown as a notice above the list."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from services.actions.layer import Actions
from services.console.deps import ActionsDep, PagesDep, Posted, PostedBy, SteppedUp
from services.console.forms import field
from services.console.i18n import translator
from services.console.pages import Pages
from services.console.sessions import Session
from services.governance.grounds import REFUSAL_GROUNDS

router = APIRouter()


async def erasures_page(
    request: Request,
    session: Session,
    actions: Actions,
    pages: Pages,
    *,
    decided: tuple[str, str] | None = None,
    notice: str | None = None,
) -> Response:
    """The erasure requests, newest first, with a notice of the one just ``decided`` (its reference and status)."""
    requests = await actions.erasures(session.operator)
    t = translator(session.locale)
    if decided is not None:
        notice = t("Erasure %(ref)s: %(status)s.", ref=decided[0], status=t(decided[1]))
    return pages.render(
        request,
        "erasures.html",
        session,
        requests=list(reversed(requests)),
        grounds=REFUSAL_GROUNDS,
        now=datetime.now(ZoneInfo(session.timezone)),
        notice=notice,
    )


@router.get("/dpo/erasures", response_class=HTMLResponse)
async def erasures(
    request: Request, session: Annotated[Session, Depends(SteppedUp("erasures"))], actions: ActionsDep, pages: PagesDep
) -> Response:
    return await erasures_page(request, session, actions, pages)


@router.post("/dpo/erasures", response_class=HTMLResponse)
async def erasure_create(
    request: Request, posted: Annotated[Posted, Depends(PostedBy("erase"))], actions: ActionsDep, pages: PagesDep
) -> Response:
    """Request the erasure (four eyes): it is carried out when a second DPO approves it on /approvals."""
    session, form = posted.session, posted.form
    asked = await actions.request_erasure(
        session.operator,
        contact=field(form, "contact") or "",
        phone_number_id=field(form, "phone_number_id"),
        request_ref=field(form, "request_ref") or "",
        reason=field(form, "reason"),
    )
    notice = translator(session.locale).gettext(
        "Erasure %(ref)s requested: nothing is erased until a second DPO approves it.",
        ref=asked.target["request_ref"],
    )
    return await erasures_page(request, session, actions, pages, notice=notice)


@router.post("/dpo/erasures/refuse", response_class=HTMLResponse)
async def erasure_refuse(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("erasure.refuse"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session, form = posted.session, posted.form
    decided = await actions.refuse_erasure(
        session.operator, field(form, "request_ref") or "", ground=field(form, "ground") or ""
    )
    return await erasures_page(request, session, actions, pages, decided=(decided.request_ref, decided.status))


@router.post("/dpo/erasures/extend", response_class=HTMLResponse)
async def erasure_extend(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("erasure.extend"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    session, form = posted.session, posted.form
    decided = await actions.extend_erasure(
        session.operator, field(form, "request_ref") or "", reason=field(form, "reason") or ""
    )
    return await erasures_page(request, session, actions, pages, decided=(decided.request_ref, decided.status))
