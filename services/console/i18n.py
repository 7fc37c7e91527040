"""English and French for the console: the language from the browser (``Accept-Language``, negotiated by Babel)
unless the viewer switched, the texts from gettext catalogs, dates and numbers by Babel in the viewer's locale and
time zone.

English is the source language: a text is written in English where it is shown (``_("…")`` and ``ngettext(…)`` in
the templates, ``t("…")``, ``t.gettext(…)`` and ``t.ngettext(…)`` in Python, ``N_("…")`` for a text looked up
later), ``make messages`` extracts them with Babel (babel.cfg) into ``locale/messages.pot`` and merges that into
each ``locale/<lang>/LC_MESSAGES/messages.po``. The ``.po`` files are the sources: they are compiled in memory, once
per process, when the console starts (:func:`translations`), so there is no compiled file to forget.

Placeholders are ``%(name)s``. Every count shown goes through a plural text: ``ngettext(singular, plural, n)``
picks the form of ``n`` by the catalog's rule (French: 0 and 1 singular) and shows it as ``%(num)s``, formatted
for the locale unless given. Every duration goes through :func:`duration` (``fmt.duration(seconds)``), which
names its units in the locale's plural forms (CLDR, by Babel): a text shows it as a placeholder, never as
"%(num)s minutes". tests/unit/test_console_i18n.py fails when a text shown has no French, when
the catalogs are not what extraction finds, or when a translation is fuzzy, empty or loses a placeholder.
"""

from __future__ import annotations

import datetime as dt
import gettext
import re
from dataclasses import dataclass
from functools import cache
from importlib import resources
from io import BytesIO
from typing import Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from babel.core import negotiate_locale
from babel.dates import format_date, format_datetime, format_time
from babel.lists import format_list
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal
from babel.units import format_unit
from jinja2 import Environment, pass_context
from jinja2.runtime import Context
from markupsafe import escape

LOCALES: Final = ("en", "fr")
DEFAULT_LOCALE: Final = "en"  # also the language of the source texts (the msgids)
DOMAIN: Final = "messages"


def N_(text: str) -> str:  # the name gettext tools look for
    """Marks ``text`` for extraction where it is defined; it is translated where it is shown."""
    return text


# The archive's names the console shows in the viewer's language (``term(…)`` in the templates, ``t.term(…)``):
# kinds, message types, directions, delivery statuses, hold scopes, erasure states, roles. They are values, not
# literals of a call, so they are marked here for extraction; the unit tests check every name of those sets is here.
TERMS: Final = (
    # kinds and directions (services/console/choices.py KINDS, routers/search.py direction_of)
    N_("message"),
    N_("echo"),
    N_("history"),
    N_("outbound"),
    N_("status"),
    N_("call"),
    N_("received"),
    N_("sent"),
    # message types
    N_("text"),
    N_("image"),
    N_("audio"),
    N_("video"),
    N_("document"),
    N_("sticker"),
    N_("location"),
    N_("contacts"),
    N_("interactive"),
    N_("button"),
    N_("order"),
    N_("reaction"),
    N_("template"),
    N_("edit"),
    N_("revoke"),
    # delivery statuses (services/review/assembly.py STATUS_ORDER)
    N_("delivered"),
    N_("read"),
    N_("played"),
    N_("failed"),
    N_("deleted"),
    # hold scopes
    N_("contact"),
    N_("conversation"),
    N_("group"),
    N_("phone_number"),
    N_("waba"),
    # erasure states
    N_("blocked"),
    N_("in_progress"),
    N_("completed"),
    N_("refused"),
    N_("extended"),
    # case statuses and custodians (services/core/vocabulary.py CASE_STATUSES, CUSTODIAN_KINDS)
    N_("open"),
    N_("closed"),
    N_("person"),
    # roles
    N_("reader"),
    N_("dpo"),
    # four-eyes request kinds (services/actions/approvals.py RequestKind.describe) and states
    N_("erasing a person"),
    N_("releasing a legal hold"),
    N_("closing a case"),
    N_("exporting a case"),
    N_("exporting more messages than the four-eyes threshold"),
    N_("sending a held message"),
    N_("pending"),
    N_("expired"),
    N_("approved"),
    N_("rejected"),
    # export job states (services/evidence/jobs.py JobStatus; failed and expired above)
    N_("queued"),
    N_("running"),
    N_("done"),
)

# RFC 9110 §12.4.2: a weight is 0 to 1 with at most three decimals. Anything else is not a weight: the language it
# qualifies is left out, as a language refused (q=0) is.
_WEIGHT: Final = re.compile(r"(?:0(?:\.[0-9]{0,3})?|1(?:\.0{0,3})?)")


def preferred_languages(accept_language: str | None) -> list[str]:
    """The language tags of an ``Accept-Language`` header, lower-cased, most wanted first (by weight, then in the
    header's order). A tag refused (``q=0``) or with a malformed weight is left out; so is ``*``, which names no
    language. Never raises: any header is read as far as it makes sense."""
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, *params = (piece.strip() for piece in part.split(";"))
        weight = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                value = value.strip()
                weight = float(value) if _WEIGHT.fullmatch(value) else 0.0
        if tag and tag != "*" and weight > 0:
            ranked.append((-weight, position, tag.lower()))
    return [tag for _weight, _position, tag in sorted(ranked)]


def negotiate(accept_language: str | None) -> str:
    """The first of :data:`LOCALES` the browser accepts (``fr-CA`` is French), by Babel's negotiation over the
    header's languages in order of preference; :data:`DEFAULT_LOCALE` when it accepts none of them."""
    # No aliases: Babel's (fr -> fr_FR, …) name locales the console does not have.
    found = negotiate_locale(preferred_languages(accept_language), LOCALES, sep="-", aliases={})
    return found if found in LOCALES else DEFAULT_LOCALE


def known_locale(value: str | None) -> str | None:
    return value if value in LOCALES else None


def zone(name: str | None, default: str) -> str:
    """``name`` if it is a time zone this machine knows, else ``default``."""
    if name:
        try:
            ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            return default
        return name
    return default


# A duration's units, largest first (CLDR unit names; Babel formats them with the locale's plural forms).
_DURATION_UNITS: Final = (
    ("duration-day", 86_400),
    ("duration-hour", 3_600),
    ("duration-minute", 60),
    ("duration-second", 1),
)


def duration(seconds: float, locale: str) -> str:
    """``seconds`` as people say it in ``locale``: its largest unit, and the next one when it is not zero
    ("1 minute", "1 hour, 29 minutes", "2 jours et 3 heures"). Whole seconds, truncated, never rounded up (3,599 s
    is 59 minutes, 59 seconds, not an hour); a negative duration is 0 seconds. Each unit takes the locale's
    plural form of its number (``0 seconde`` in French, ``0 seconds`` in English)."""
    remaining = max(0, int(seconds))
    values = []
    for unit, size in _DURATION_UNITS:
        value, remaining = divmod(remaining, size)
        values.append((unit, value))
    first = next((i for i, (_unit, value) in enumerate(values) if value), len(values) - 1)
    shown = [(unit, value) for unit, value in values[first : first + 2] if value or unit == values[first][0]]
    parts = [format_unit(value, unit, length="long", locale=locale) for unit, value in shown]
    return parts[0] if len(parts) == 1 else format_list(parts, style="unit", locale=locale)


class Formatter:
    """Dates, times, numbers and durations for one viewer."""

    def __init__(self, locale: str, timezone: str) -> None:
        self.locale = locale
        self.tz = ZoneInfo(timezone)
        self.timezone = timezone

    def local(self, moment: dt.datetime | int | float | None) -> dt.datetime | None:
        if moment is None:
            return None
        if isinstance(moment, int | float):
            moment = dt.datetime.fromtimestamp(moment, dt.UTC)
        return moment.astimezone(self.tz)

    def datetime(self, moment: dt.datetime | int | float | None) -> str:
        local = self.local(moment)
        return "" if local is None else format_datetime(local, "medium", tzinfo=self.tz, locale=self.locale)

    def time(self, moment: dt.datetime | int | float | None) -> str:
        local = self.local(moment)
        return "" if local is None else format_time(local, "short", tzinfo=self.tz, locale=self.locale)

    def date(self, moment: dt.datetime | int | float | None) -> str:
        local = self.local(moment)
        return "" if local is None else format_date(local, "full", locale=self.locale)

    def iso(self, moment: dt.datetime | int | float | None) -> str:
        local = self.local(moment)
        return "" if local is None else local.isoformat()

    def number(self, value: float) -> str:
        return format_decimal(value, locale=self.locale)

    def duration(self, seconds: float) -> str:
        """See :func:`duration`."""
        return duration(seconds, self.locale)


def catalog_path(locale: str) -> resources.abc.Traversable:
    """The ``.po`` source of ``locale``'s texts (package data: it ships in the wheel)."""
    return resources.files("services.console") / "locale" / locale / "LC_MESSAGES" / f"{DOMAIN}.po"


@cache
def translations(locale: str) -> gettext.NullTranslations:
    """``locale``'s texts: its ``.po`` compiled by Babel in memory, once per process. English, the source
    language, has no catalog (its plural rule is gettext's default: one for 1, other otherwise).

    Raises ValueError for a locale not in :data:`LOCALES`, and Babel's PoFileError for a ``.po`` that does not parse
    (at start-up: :func:`install_translations` loads every catalog). A fuzzy entry is left out, as ``msgfmt`` does.
    """
    if locale not in LOCALES:
        raise ValueError(f"no catalog for locale {locale!r}: the console speaks {', '.join(LOCALES)}")
    if locale == DEFAULT_LOCALE:
        return gettext.NullTranslations()
    with catalog_path(locale).open("rb") as source:
        catalog = read_po(source, locale=locale, domain=DOMAIN, abort_invalid=True)
    compiled = BytesIO()
    write_mo(compiled, catalog)
    compiled.seek(0)
    return gettext.GNUTranslations(compiled)


@dataclass(frozen=True, slots=True)
class Translator:
    """One viewer's texts, for Python code (``t``) and, through :func:`install_translations`, for the templates.

    ``t("…", name=value)`` and ``t.gettext(…)`` translate and fill ``%(name)s`` placeholders (formatting only when
    values are given); ``t.ngettext(singular, plural, n, …)`` picks the plural form of ``n`` for the locale and
    always formats (``%(num)s`` is ``n`` formatted for the locale unless given); ``t.term(name)`` shows a name of
    :data:`TERMS`, never formatted (an unknown name is shown as it is). A text without a translation is shown in
    English.
    """

    locale: str
    catalog: gettext.NullTranslations

    def gettext(self, text: str, /, **values: object) -> str:
        translated = self.catalog.gettext(text)
        return translated % values if values else translated

    __call__ = gettext

    def ngettext(self, singular: str, plural: str, n: int, /, **values: object) -> str:
        values.setdefault("num", format_decimal(n, locale=self.locale))
        return self.catalog.ngettext(singular, plural, n) % values

    def term(self, name: str) -> str:
        return self.catalog.gettext(name)


def translator(locale: str) -> Translator:
    """The translator of ``locale`` (one of :data:`LOCALES`)."""
    return Translator(locale, translations(locale))


def _viewer(context: Context) -> Translator:
    found = context.get("t")
    if not isinstance(found, Translator):
        raise TypeError("a console template is rendered with t=translator(locale)")
    return found


def _safe(context: Context, translated: str) -> str:
    # Jinja's newstyle gettext marks what we return as safe markup, then %-formats the values into it (escaping
    # them): the translation itself is escaped first, so a catalog is text, never markup.
    return escape(translated) if context.eval_ctx.autoescape else translated


@pass_context
def _gettext(context: Context, text: str) -> str:
    return _safe(context, _viewer(context).catalog.gettext(text))


@pass_context
def _ngettext(context: Context, singular: str, plural: str, n: int, /, **values: object) -> str:
    # Jinja's newstyle ngettext, with ``num`` formatted for the viewer's locale unless given (1,000 / 1 000): a
    # template shows a count by ``ngettext(…, n)`` alone, and cannot show it unformatted by forgetting ``num=``.
    viewer = _viewer(context)
    values.setdefault("num", format_decimal(n, locale=viewer.locale))
    translated = _safe(context, viewer.catalog.ngettext(singular, plural, n))
    return translated % values


@pass_context
def _term(context: Context, name: str) -> str:
    return _viewer(context).term(name)


def install_translations(environment: Environment) -> None:
    """Jinja2's i18n extension in ``environment``, newstyle: ``_("Hello %(name)s", name=…)``, ``gettext`` and
    ``ngettext(singular, plural, n, …)`` format their values (escaped under autoescape; ``num`` is ``n`` formatted
    for the locale unless given) and ``term(name)`` shows a
    name of :data:`TERMS`, all in the language of the translator each render passes as ``t``. One environment
    serves every locale, since the language is read from the render's context. Loads every catalog, so a broken
    ``.po`` stops the start-up rather than a page."""
    for locale in LOCALES:
        translations(locale)
    environment.add_extension("jinja2.ext.i18n")
    # The extension adds install_gettext_callables to the environment at run time; mypy cannot see it.
    environment.install_gettext_callables(  # type: ignore[attr-defined]
        gettext=_gettext, ngettext=_ngettext, newstyle=True
    )
    # The extension's _ looks gettext up in each render's context, in case a render passes its own; none does, and
    # the look-up was a third of the cost of a text (a conversation page shows some 300).
    environment.globals["_"] = environment.globals["gettext"]
    environment.globals["ngettext"] = _ngettext
    environment.globals["term"] = _term
