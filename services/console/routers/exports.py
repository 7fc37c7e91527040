"""Export jobs in the console: ``POST /exports`` (from a conversation whose reason was given), ``POST
/exports/search`` (the results of a search, with a reason), ``GET /exports``
(the operator's recent jobs), ``GET /exports/{job_id}`` (its progress bar, then its files),
``GET /exports/{job_id}/status`` (the JSON that console.js polls) and ``GET /exports/{job_id}/files/{name}``.

A file is downloaded through a link signed for a few minutes (services/evidence/links.py) *and* under a live
session of the job's requester or a DPO (``Actions.export_file``); it is streamed from the work bucket, never held
whole, and every download is audited. URLs carry the job's id and the file's name only.
"""

from __future__ import annotations

import time
from typing import Annotated, Final
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel

from services.actions.layer import Actions, ApprovalRequest
from services.console.deps import ActionsDep, CurrentSession, PagesDep, Posted, PostedBy
from services.console.forms import field
from services.console.routers.search import search_filter
from services.core.downloads import file_download
from services.core.refusals import InvalidRequest, NotFound, ReasonRequired
from services.evidence.jobs import FORMATS, ExportJob
from services.evidence.links import link_key, link_valid, sign_link

router = APIRouter()

LINK_TTL_S: Final = 300  # a download link works for five minutes; the job page signs fresh ones when reloaded


class JobStatus(BaseModel):
    """What the job page's progress bar needs (no personal data: the person is not even named)."""

    status: str
    step: str
    done: int
    total: int
    finished: bool


def links(actions: Actions, job: ExportJob, *, now: float) -> dict[str, str]:
    """The signed download link of each file of a finished job."""
    if job.status != "done":
        return {}
    key = link_key(actions.access.pepper)
    signed = {f.name: sign_link(key, job_id=job.job_id, name=f.name, now=now, ttl_s=LINK_TTL_S) for f in job.files}
    return {
        name: f"/exports/{job.job_id}/files/{name}?expires={link.expires}&sig={link.signature}"
        for name, link in signed.items()
    }


@router.post("/exports")
async def queue_export(posted: Annotated[Posted, Depends(PostedBy("export"))], actions: ActionsDep) -> Response:
    session, form = posted.session, posted.form
    subject_ref = field(form, "subject_ref") or ""
    opened = session.opened_for(subject_ref)
    if opened is None:  # the export states the reason given for the conversation; none was given in this session
        raise ReasonRequired("open the conversation and give a reason first")
    formats = [name for name in FORMATS if field(form, f"format_{name}")] or ["json", "html"]
    queued = await actions.queue_export_or_request(
        session.operator,
        subject_ref=subject_ref,
        reason=opened.audit_reason(),
        formats=formats,
        language="fr" if session.locale.startswith("fr") else "en",
        request_ref=opened.case_ref,
    )
    if isinstance(queued, ApprovalRequest):  # above the four-eyes threshold: queued once a second DPO approves it
        return RedirectResponse(f"/approvals?requested={queued.request_id}", status_code=303)
    return RedirectResponse(f"/exports/{queued.job_id}", status_code=303)


@router.post("/exports/search")
async def queue_search_export(
    posted: Annotated[Posted, Depends(PostedBy("export.search"))], actions: ActionsDep
) -> Response:
    """Export what the posted search shows to this session's operator (their cases' scope for a reader): the search
    runs again as the results page ran it, and its hits are frozen into the job."""
    session, form = posted.session, posted.form
    try:
        query = search_filter(form, ZoneInfo(session.timezone))
    except ValueError:
        raise InvalidRequest("give the dates as YYYY-MM-DD") from None
    queued = await actions.queue_search_export(
        session.operator,
        query=query,
        reason=field(form, "reason"),
        formats=[field(form, "export_format") or "all"],
        language="fr" if session.locale.startswith("fr") else "en",
    )
    if isinstance(queued, ApprovalRequest):  # above the four-eyes threshold: queued once a DPO approves it
        return RedirectResponse(f"/approvals?requested={queued.request_id}", status_code=303)
    return RedirectResponse(f"/exports/{queued.job_id}", status_code=303)


@router.get("/exports", response_class=HTMLResponse)
async def export_list(request: Request, session: CurrentSession, actions: ActionsDep, pages: PagesDep) -> Response:
    jobs = await actions.export_jobs(session.operator)
    return pages.render(request, "exports.html", session, jobs=jobs)


@router.get("/exports/{job_id}", response_class=HTMLResponse)
async def export_page(
    request: Request, job_id: str, session: CurrentSession, actions: ActionsDep, pages: PagesDep
) -> Response:
    job = await actions.export_job(session.operator, job_id)
    return pages.render(request, "export.html", session, job=job, links=links(actions, job, now=time.time()))


@router.get("/exports/{job_id}/status")
async def export_status(job_id: str, session: CurrentSession, actions: ActionsDep) -> JobStatus:
    job = await actions.export_job(session.operator, job_id)
    return JobStatus(
        status=job.status,
        step=job.step,
        done=job.done,
        total=job.total,
        finished=job.status in ("done", "failed", "expired"),
    )


@router.get("/exports/{job_id}/files/{name}")
async def export_file(
    job_id: str,
    name: str,
    session: CurrentSession,
    actions: ActionsDep,
    expires: str | None = None,
    sig: str | None = None,
) -> Response:
    # The same refusal for an expired, tampered or foreign link: nothing tells which.
    if not link_valid(
        link_key(actions.access.pepper), job_id=job_id, name=name, expires=expires, signature=sig, now=time.time()
    ):
        raise NotFound("this download link has expired or is not valid: open the export's page again")
    file, pieces = await actions.export_file(session.operator, job_id, name)
    return file_download(file.name, file.size, pieces)
