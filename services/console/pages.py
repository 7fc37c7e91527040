"""How the console renders a page: the Jinja2 environment (autoescape on, so a message's ``<script>`` is text), the
viewer's language and time zone, the context every template gets, and the console's cookies.

The environment and the translator are built here and nowhere else, so that how text is translated changes in one
place.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Final

from fastapi import Request, Response
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from services.console.i18n import LOCALES, Formatter, install_translations, known_locale, negotiate, translator
from services.console.sessions import Session
from services.review.drafts import whatsapp_html

SESSION_COOKIE: Final = "wa_console_session"
SIGNIN_COOKIE: Final = "wa_console_signin"
LANGUAGE_COOKIE: Final = "wa_console_lang"


def package_dir(name: str) -> Path:
    return Path(str(resources.files("services.console") / name))


def console_templates() -> Environment:
    """The console's templates: autoescaped (also templates given as strings), undefined names an error, texts in
    the language of the render's translator ``t`` (Jinja2's i18n extension: services/console/i18n.py)."""
    templates = Environment(
        loader=FileSystemLoader(package_dir("templates")),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    install_translations(templates)
    # A held message's text as the customer would see it: WhatsApp's formatting, everything else escaped.
    templates.filters["whatsapp"] = whatsapp_html
    return templates


def locale_of(request: Request, session: Session | None) -> str:
    """The session's language; without a session, the language cookie's, else the browser's (Accept-Language)."""
    if session is not None:
        return session.locale
    return known_locale(request.cookies.get(LANGUAGE_COOKIE)) or negotiate(request.headers.get("accept-language"))


def set_cookie(response: Response, name: str, value: str, *, secure: bool, max_age: int | None = None) -> None:
    """A console cookie: HTTP only, same site strict, the whole console; ``secure`` behind TLS."""
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", secure=secure, path="/")


class Pages:
    """Renders the console's templates for a request, in the viewer's language and time zone."""

    def __init__(self, templates: Environment, default_timezone: str) -> None:
        self.templates = templates
        self.default_timezone = default_timezone

    def render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        *,
        status: int = 200,
        locale: str | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """``template`` as an HTML response; a name the template uses and ``context`` lacks is an error
        (StrictUndefined), never an empty string."""
        locale = locale or locale_of(request, session)
        fmt = Formatter(locale, session.timezone if session else self.default_timezone)
        page = self.templates.get_template(template).render(
            t=translator(locale),
            fmt=fmt,
            locale=locale,
            locales=LOCALES,
            session=session,
            is_dpo=session is not None and session.operator.role == "dpo",
            csrf=session.csrf_token if session else "",
            path=request.url.path,
            # The four-eyes requests waiting for this person (services/console/deps.py current_session).
            waiting=getattr(request.state, "waiting", 0),
            **context,
        )
        return HTMLResponse(page, status_code=status)
