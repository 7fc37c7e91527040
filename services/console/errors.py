"""How the console answers what it refuses: every refusal is counted (services/console/metrics.py) and logged with
the account name when there is one — never a token, a form's content or the client's address — and answered with
a page in the viewer's language.

One handler for the action layer's refusals (:class:`~services.core.refusals.ActionRefused`, which carries its HTTP
status), and one for each of the console's own: no session (to the sign-in page), a step-up needed (to the
provider, through ``/oidc/step-up``), a form too large (413), a form without its token or from another site (403).
"""

from __future__ import annotations

import logging
from urllib.parse import urlencode

from fastapi import FastAPI, Request, Response
from fastapi.responses import RedirectResponse

from services.console.deps import SignedOut, StepUpNeeded, console_of, session_of
from services.console.forms import FormTooLarge, RefusedForm
from services.console.i18n import translator
from services.console.metrics import ConsoleMetrics, RefusalReason
from services.console.pages import locale_of
from services.core.refusals import ActionRefused, Forbidden, NotFound
from services.governance.scope import OutsideScope

log = logging.getLogger("wa_archive.console")


def count_refusal(
    metrics: ConsoleMetrics, status: int, reason: RefusalReason, what: str, actor: str | None = None
) -> None:
    """Count and log a refusal: what was refused and why, the account name when there is one; never a token, a
    form's content or the client's address."""
    metrics.refused(status, reason)
    log.warning("console request refused: %d (%s): %s", status, reason, what, extra={"actor": actor})


async def signed_out(_request: Request, _exc: Exception) -> Response:
    return RedirectResponse("/signin?ended=1", status_code=303)


async def step_up_needed(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StepUpNeeded)  # registered for it only
    return RedirectResponse("/oidc/step-up?" + urlencode({"back": exc.back}), status_code=303)


async def form_too_large(request: Request, exc: Exception) -> Response:
    count_refusal(console_of(request).metrics, 413, "body", f"form too large: {exc}")
    return Response(f"413: the form is too large: {exc}\n", status_code=413, media_type="text/plain")


async def refused_form(request: Request, _exc: Exception) -> Response:
    console = console_of(request)
    session = await session_of(request)
    actor = session.operator.name if session else None
    count_refusal(console.metrics, 403, "form", "form without its token or from another origin", actor)
    message = translator(locale_of(request, session)).gettext(
        "The form has expired. Go back, reload the page and try again."
    )
    return console.pages.render(request, "error.html", session, status=403, message=message)


async def action_refused(request: Request, exc: Exception) -> Response:
    """Every refusal of the action layer (and a form the console cannot read), with its own status."""
    assert isinstance(exc, ActionRefused)  # registered for this base only
    console = console_of(request)
    session = await session_of(request)
    t = translator(locale_of(request, session))
    if isinstance(exc, OutsideScope):
        actor = session.operator.name if session else None
        count_refusal(console.metrics, 403, "scope", f"{request.url.path} is outside the reader's cases", actor)
        return console.pages.render(request, "outside.html", session, status=403, subject_ref=None, break_glass=False)
    if isinstance(exc, Forbidden):
        actor = session.operator.name if session else None
        count_refusal(console.metrics, 403, "role", f"{request.url.path} needs another role", actor)
        message = t("This page is for the data protection officer.")
    elif isinstance(exc, NotFound):
        message = t("Not found.")
    else:
        message = t("The request was refused: %(why)s", why=str(exc))
    return console.pages.render(request, "error.html", session, status=exc.http_status, message=message)


def answer_refusals(app: FastAPI) -> None:
    """Register the console's handlers on ``app``."""
    app.add_exception_handler(SignedOut, signed_out)
    app.add_exception_handler(StepUpNeeded, step_up_needed)
    app.add_exception_handler(FormTooLarge, form_too_large)
    app.add_exception_handler(RefusedForm, refused_form)
    app.add_exception_handler(ActionRefused, action_refused)
