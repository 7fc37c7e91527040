"""Reading the console's forms: within limits, field by field, and refused when they do not come from the console.

Search terms, a person's number and reasons travel in POST bodies, never in URLs.
"""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import Request
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException

from services.core.refusals import InvalidRequest


class RefusedForm(Exception):
    """A POST without the session's CSRF token or from another origin: nothing is done (403)."""


class BadForm(InvalidRequest):
    """A form field the console cannot read (a date that is not YYYY-MM-DD, an unknown choice): 400."""


class FormTooLarge(Exception):
    """A form with more fields, or a longer field, than the console's forms have: 413, nothing done."""


async def read_form(request: Request, *, max_fields: int, max_field_bytes: int) -> FormData:
    """The request's form within the console's limits (fields, field size; the body is capped by BodyLimit), else
    FormTooLarge. No files: the console's forms have none."""
    try:
        return await request.form(max_files=0, max_fields=max_fields, max_part_size=max_field_bytes)
    except HTTPException as exc:
        # Starlette's form parser refuses a form past a limit with 400 and says which limit.
        raise FormTooLarge(str(exc.detail)) from None


def field(form: FormData, name: str) -> str | None:
    """A text field without its surrounding blanks; None when absent, empty or not text."""
    value = form.get(name)
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value or None


def parse_day(value: str | None, tz: ZoneInfo, *, end: bool) -> datetime | None:
    """A form's YYYY-MM-DD as the start (or the end) of that day in the viewer's time zone; ValueError for any
    other text."""
    if not value:
        return None
    day = date.fromisoformat(value)
    moment = datetime.combine(day, time.min, tz)
    return moment + timedelta(days=1, microseconds=-1) if end else moment


def same_origin(request: Request) -> bool:
    """False when the browser says the form comes from another site (``Origin``); a client that sends no ``Origin``
    still needs the token."""
    origin = request.headers.get("origin")
    if origin is None:
        return True
    return origin != "null" and urlsplit(origin).netloc == request.headers.get("host")
