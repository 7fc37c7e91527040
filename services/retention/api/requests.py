"""The admin API's request bodies: their fields are the actions' keyword arguments.

The closed sets they accept (event kinds, hold scopes, refusal grounds) are the domain's own ``Literal`` types,
imported, never restated: pydantic validates them and OpenAPI lists their members, so a scope added to the domain
is accepted here at once.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from services.core.vocabulary import PSEUDONYM_PATTERN, EventKind, HoldScope
from services.governance.erasure import EXTENSION_REASON_MAX
from services.governance.grounds import RefusalGround


class ErasureRequestBody(BaseModel):
    """A data subject's erasure request (GDPR Art. 17), as the DPO files it."""

    contact: str = Field(min_length=1, description="wa_id or business-scoped user id of the person")
    phone_number_id: str | None = Field(default=None, description="limit to one business number (default: all)")
    request_ref: str = Field(min_length=1, description="your reference of the data subject's request")
    reason: str = Field(min_length=3, max_length=500, description="why: kept sealed with the four-eyes request")


class MessagesRequest(BaseModel):
    contact: str | None = Field(default=None, min_length=1, description="wa_id or business-scoped user id")
    subject_ref: str | None = Field(
        default=None, pattern=PSEUDONYM_PATTERN, description="or the person's pseudonym, as a search hit gives it"
    )
    reason: str | None = Field(default=None, description="why the conversation is read (written to the audit log)")
    phone_number_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class GroupMessagesRequest(BaseModel):
    group_id: str = Field(min_length=1, description="the group's id (Cloud API Groups)")
    phone_number_id: str = Field(min_length=1, description="the business number the group belongs to")
    reason: str | None = Field(default=None, description="why the group is read (written to the audit log)")


class BreakGlassRequest(BaseModel):
    subject_ref: str | None = Field(
        default=None, pattern=PSEUDONYM_PATTERN, description="the person's pseudonym, as a search hit gives it"
    )
    group_id: str | None = Field(default=None, min_length=1, description="or the group's id (Cloud API Groups)")
    reason: str | None = Field(default=None, description="why you need it (kept with the request, sealed)")


class SearchRequest(BaseModel):
    phone_number_id: str | None = None
    contact: str | None = Field(default=None, description="wa_id or business-scoped user id of the person")
    since: datetime | None = None
    until: datetime | None = None
    kind: EventKind | None = None
    type: str | None = None
    deleted_only: bool = False
    edited_only: bool = False
    limit: int = Field(default=1000, ge=1, le=10_000)
    keywords: str | None = Field(
        default=None, min_length=1, max_length=500, description="words of the messages (case and accents ignored)"
    )


class RefusalRequest(BaseModel):
    ground: RefusalGround = Field(description="the legal ground: GDPR Art. 17(3) (a)-(e) or Art. 12(5)")


class ExtensionRequest(BaseModel):
    reason: str = Field(
        min_length=1, max_length=EXTENSION_REASON_MAX, description="why, as told to the person (no personal data)"
    )


class HoldRequest(BaseModel):
    scope: HoldScope
    case_ref: str = Field(min_length=1)
    waba_id: str | None = None
    phone_number_id: str | None = None
    contact: str | None = None
    group_id: str | None = Field(default=None, description="the Cloud API group id, for a group hold")


# The formats an export job writes (services/evidence/jobs.py FORMATS): the subject-access JSON document and HTML
# page, the PDF transcript, the JSON Lines of the records as archived with their media, RSMF 2.0, and ``all``:
# the signed BagIt bag of every format (needs the export signing key where the jobs run).
JobFormat = Literal["json", "html", "pdf", "jsonl", "rsmf", "all"]


class ExportRequest(BaseModel):
    """A person's export (GDPR Art. 15/20) as export jobs: one per pseudonym holding their records."""

    contact: str | None = Field(default=None, min_length=1, description="wa_id or business-scoped user id")
    subject_ref: str | None = Field(
        default=None, pattern=PSEUDONYM_PATTERN, description="or the person's pseudonym, as a search hit gives it"
    )
    phone_number_id: str | None = Field(default=None, description="limit to one business number (default: all)")
    reason: str = Field(min_length=3, description="why (written to the audit log, and into the export)")
    request_ref: str | None = Field(default=None, description="your reference of the person's request")
    formats: list[JobFormat] = Field(default=["all"], min_length=1, description="what the job writes")
    language: Literal["en", "fr"] = Field(default="en", description="of the PDF transcript")
    since: datetime | None = None
    until: datetime | None = None


class SearchExportRequest(SearchRequest):
    """The export of what this search shows to the caller (a reader's case scope applies), as an export job."""

    reason: str = Field(min_length=3, description="why (written to the audit log, and into the export)")
    formats: list[JobFormat] = Field(default=["all"], min_length=1, description="what the job writes")
    language: Literal["en", "fr"] = Field(default="en", description="of the PDF transcript")


class RetentionRunRequest(BaseModel):
    dry_run: bool = True


class ReasonRequest(BaseModel):
    """Why: a four-eyes request's reason, or an approval's or a rejection's (kept sealed with the request)."""

    reason: str = Field(min_length=3, max_length=500)
