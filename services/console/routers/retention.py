"""The data protection officer's retention dry run: ``GET /dpo/retention``, ``POST /dpo/retention`` (what a run
would delete now, deleting nothing)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse

from services.actions.layer import authorize
from services.console.deps import ActionsDep, CurrentSession, PagesDep, Posted, PostedBy

router = APIRouter()


@router.get("/dpo/retention", response_class=HTMLResponse)
async def retention_page(request: Request, session: CurrentSession, pages: PagesDep) -> Response:
    authorize(session.operator, "retention.run")
    return pages.render(request, "retention.html", session, report=None)


@router.post("/dpo/retention", response_class=HTMLResponse)
async def retention_dry_run(
    request: Request,
    posted: Annotated[Posted, Depends(PostedBy("retention.run"))],
    actions: ActionsDep,
    pages: PagesDep,
) -> Response:
    report = await actions.run_retention(posted.session.operator, dry_run=True)
    return pages.render(request, "retention.html", posted.session, report=report)
