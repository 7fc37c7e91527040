"""Exports as jobs (services/evidence/jobs.py): a person's (GDPR Art. 15/20) or a search result's.

``POST /v1/exports`` (a person, ``dpo``) and ``POST /v1/exports/search`` (what a search shows to the caller, a
reader's case scope applied) answer 202 at once with the queued jobs and a ``Location`` (or, above the four-eyes
threshold, the request waiting for a DPO's approval); the retention service's worker runs them. ``GET
/v1/exports/{job_id}`` gives the job's progress and, once done, each file with a link signed for a few minutes
(services/evidence/links.py), which ``GET /v1/exports/{job_id}/files/{name}`` honours with the bearer token of the
job's requester or a DPO: the file is streamed from the work bucket and the download audited. URLs carry the job's
id and the file's name only, never a person or a search's words.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Final

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response, StreamingResponse

from services.actions.layer import Actions, ApprovalRequest
from services.core.downloads import file_download
from services.core.refusals import NotFound
from services.evidence.jobs import ExportJob
from services.evidence.links import link_key, link_valid, sign_link
from services.retention.api.dependencies import Caller, ReadyActions
from services.retention.api.gate import requires
from services.retention.api.requests import ExportRequest, SearchExportRequest
from services.retention.api.responses import (
    GATED,
    GATED_WITH_BODY,
    ApprovalRequestView,
    ExportAccepted,
    ExportFileView,
    ExportJobView,
    errors,
)
from services.review.search import SearchFilter

exports_router = APIRouter(prefix="/v1/exports", tags=["exports"])

LINK_TTL_S: Final = 300  # a download link works for five minutes; GET the job again for fresh ones
ACCEPTED: Final[dict[int | str, dict[str, object]]] = {
    202: {
        "model": ExportAccepted,
        "description": "Accepted: the jobs queued (Location: the first), or the four-eyes request (Location: it)",
    }
}


def job_view(actions: Actions, job: ExportJob, *, now: float) -> ExportJobView:
    """The job as the API shows it: its JSON, each file of a finished job with a link signed for
    :data:`LINK_TTL_S`."""
    shown = job.to_json()
    key = link_key(actions.access.pepper)
    files = []
    for file in job.files if job.status == "done" else ():
        link = sign_link(key, job_id=job.job_id, name=file.name, now=now, ttl_s=LINK_TTL_S)
        files.append(
            ExportFileView(
                **file.to_json(),
                url=f"/v1/exports/{job.job_id}/files/{file.name}?expires={link.expires}&sig={link.signature}",
                url_expires_at=datetime.fromtimestamp(link.expires, UTC).isoformat(),
            )
        )
    return ExportJobView.model_validate({**shown, "files": files})


def accepted(actions: Actions, queued: list[ExportJob] | ApprovalRequest) -> JSONResponse:
    """202 with the jobs and the first one's ``Location``, or with the four-eyes request and its own."""
    now = time.time()
    if isinstance(queued, ApprovalRequest):
        request = ApprovalRequestView.model_validate(queued.to_json(datetime.now(UTC)))
        body = ExportAccepted(jobs=[], approval_request=request)
        location = f"/v1/approvals/{queued.request_id}"
    else:
        body = ExportAccepted(jobs=[job_view(actions, job, now=now) for job in queued], approval_request=None)
        location = f"/v1/exports/{queued[0].job_id}"
    return JSONResponse(body.model_dump(mode="json"), status_code=202, headers={"location": location})


@exports_router.post(
    "",
    summary="A person's export (GDPR Art. 15/20) as export jobs: PDF, RSMF, JSON Lines, the signed bag",
    status_code=202,
    response_model=ExportAccepted,
    responses={**GATED_WITH_BODY, **ACCEPTED, **errors(400, 404)},
    **requires("export"),
)
async def export(operator: Caller, actions: ReadyActions, body: ExportRequest) -> JSONResponse:
    """One job per pseudonym holding the person's records (one per business number they wrote to), named by
    contact (resolved now; the jobs keep pseudonyms only) or by pseudonym; above
    ``WA_RETENTION_FOUR_EYES__EXPORT_MESSAGES`` records, a four-eyes request instead. 404 when the archive holds
    nothing of them. (Until this version the answer was the JSON document itself: format ``json`` writes that
    document as the job's file.)"""
    queued = await actions.queue_person_export(operator, **body.model_dump())
    return accepted(actions, queued)


@exports_router.post(
    "/search",
    summary="Export what a search shows to you (your cases' scope for a reader), as an export job",
    status_code=202,
    response_model=ExportAccepted,
    responses={**GATED_WITH_BODY, **ACCEPTED, **errors(400)},
    **requires("export.search"),
)
async def export_search(operator: Caller, actions: ReadyActions, body: SearchExportRequest) -> JSONResponse:
    """The search runs now (audited as a search) and its hits are frozen into the job: the export holds exactly
    them, with the records that change them. The job, the audit log and the export describe the search without its
    words or contact. 400 when it finds nothing."""
    fields = body.model_dump(exclude={"reason", "formats", "language"})
    queued = await actions.queue_search_export(
        operator, query=SearchFilter(**fields), reason=body.reason, formats=body.formats, language=body.language
    )
    return accepted(actions, [queued] if isinstance(queued, ExportJob) else queued)


@exports_router.get(
    "",
    summary="Your recent export jobs, newest first (all=true: everyone's; DPO)",
    responses=GATED,
    **requires("export.search"),
)
async def export_jobs(operator: Caller, actions: ReadyActions, all: bool = False) -> list[ExportJobView]:
    now = time.time()
    return [job_view(actions, job, now=now) for job in await actions.export_jobs(operator, everyone=all)]


@exports_router.get(
    "/{job_id}",
    summary="An export job: its progress, then its files with short-lived download links",
    responses={**GATED, **errors(404)},
    **requires("export.search"),
)
async def export_job(operator: Caller, actions: ReadyActions, job_id: str) -> ExportJobView:
    """The job's requester or a DPO; 404 for anyone else, as for an unknown job."""
    return job_view(actions, await actions.export_job(operator, job_id), now=time.time())


@exports_router.get(
    "/{job_id}/files/{name}",
    summary="Download a file of a finished export job through its signed link (streamed; audited)",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"application/octet-stream": {}}, "description": "The file, as the job listed it"},
        **GATED,
        **errors(404),
    },
    **requires("export.search"),
)
async def export_file(
    operator: Caller,
    actions: ReadyActions,
    job_id: str,
    name: str,
    expires: str | None = None,
    sig: str | None = None,
) -> Response:
    """404, the same for all of them, for an expired, tampered or foreign link, a job not the caller's, or a file
    the job does not list."""
    if not link_valid(
        link_key(actions.access.pepper), job_id=job_id, name=name, expires=expires, signature=sig, now=time.time()
    ):
        raise NotFound("this download link has expired or is not valid: GET the job again for a fresh one")
    file, pieces = await actions.export_file(operator, job_id, name)
    return file_download(file.name, file.size, pieces)
