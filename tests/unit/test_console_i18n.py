"""The console speaks English and French from gettext catalogs: every text of its templates and code is in the
catalogs and has its French, counts take the plural form of the language, the language is negotiated from the
browser, dates and numbers follow the locale and the viewer's time zone."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from babel.messages.catalog import Catalog, Message
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po
from hypothesis import given
from hypothesis import strategies as st
from jinja2 import DictLoader, Environment, StrictUndefined

from services.console.audit_view import DETAIL_LABELS, DETAIL_VALUES
from services.console.i18n import (
    LOCALES,
    TERMS,
    Formatter,
    duration,
    install_translations,
    negotiate,
    preferred_languages,
    translations,
    translator,
    zone,
)
from services.console.pages import console_templates
from services.console.sessions import OpenedConversation
from services.console.timeline import Bubble, Page
from services.core.vocabulary import HoldScope, Role
from services.governance.erasure import ErasureStatus
from services.review.assembly import STATUS_ORDER
from services.review.correspondent import BusinessNumber, Correspondent
from services.review.display import Content, Revision
from services.review.search import IndexHit

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
CONSOLE = ROOT / "services" / "console"
LOCALE_DIR = CONSOLE / "locale"
TRANSLATED = [locale for locale in LOCALES if locale != "en"]

MessageId = str | tuple[str, ...]


def read_catalog(path: Path) -> Catalog:
    with path.open("rb") as source:
        return read_po(source, abort_invalid=True)


def ids_of(catalog: Catalog) -> set[MessageId]:
    return {message.id if isinstance(message.id, str) else tuple(message.id) for message in catalog if message.id}


def extracted_ids() -> set[MessageId]:
    """What ``make messages`` extracts: Babel over the repository with babel.cfg (the Makefile's command)."""
    with (ROOT / "babel.cfg").open(encoding="utf-8") as config:
        method_map, options_map = parse_mapping_cfg(config, "babel.cfg")  # type: ignore[no-untyped-call]
    found: set[MessageId] = set()
    for _filename, _lineno, message, _comments, _context in extract_from_dir(str(ROOT), method_map, options_map):
        found.add(message if isinstance(message, str) else tuple(message))
    return found


def translated_messages(locale: str) -> list[Message]:
    return [message for message in read_catalog(LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po") if message.id]


# ---------------------------------------------------------------------------------------------------- the catalogs
def test_the_catalogs_hold_exactly_the_texts_extracted_from_code_and_templates() -> None:
    extracted = extracted_ids()
    assert len(extracted) > 150  # the extraction does find the calls, in Python and in the templates
    assert "Sign in" in extracted  # a template's _("…")
    assert "The name or the token is wrong." in extracted  # routers/signin.py's t("…")
    assert "Keys destroyed at" in extracted  # audit_view.py's N_("…")
    assert ("Edited %(num)s time", "Edited %(num)s times") in extracted  # a template's ngettext
    template = ids_of(read_catalog(LOCALE_DIR / "messages.pot"))
    assert sorted(map(str, extracted - template)) == [], "run `make messages`: texts missing from messages.pot"
    assert sorted(map(str, template - extracted)) == [], "run `make messages`: messages.pot has texts no longer used"
    for locale in TRANSLATED:
        catalog = ids_of(read_catalog(LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"))
        assert sorted(map(str, template - catalog)) == [], f"run `make messages`: {locale} lacks texts"
        assert sorted(map(str, catalog - template)) == [], f"run `make messages`: {locale} has texts no longer used"


@pytest.mark.parametrize("locale", TRANSLATED)
def test_every_text_is_translated_and_reviewed(locale: str) -> None:
    messages = translated_messages(locale)
    assert [str(m.id) for m in messages if m.fuzzy] == []  # a guess of `make messages`, not yet reviewed
    untranslated = [
        str(m.id) for m in messages if not m.string or (not isinstance(m.string, str) and not all(m.string))
    ]
    assert untranslated == []


def placeholders(text: str) -> set[str]:
    return set(re.findall(r"%\((\w+)\)s", text))


@pytest.mark.parametrize("locale", TRANSLATED)
def test_translations_keep_every_placeholder(locale: str) -> None:
    for message in translated_messages(locale):
        if isinstance(message.id, str):
            assert isinstance(message.string, str)
            assert placeholders(message.string) == placeholders(message.id), message.id
        else:
            singular, plural = message.id
            assert isinstance(message.string, tuple | list)
            first, *others = message.string
            assert placeholders(first) == placeholders(singular), singular
            for form in others:
                assert placeholders(form) == placeholders(plural), plural
    catalog = read_catalog(LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po")
    assert [(str(m.id), errors) for m, errors in catalog.check()] == []  # Babel's own checks (formats, plural count)


def test_the_french_catalog_has_the_plural_rule_of_french() -> None:
    catalog = read_catalog(LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po")
    assert catalog.num_plurals == 2
    assert catalog.plural_expr == "(n > 1)"  # CLDR fr: one is i = 0,1


def test_the_catalogs_ship_in_the_wheel() -> None:
    """Every catalog file is package data of services.console (pyproject.toml), so an installed console has it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = config["tool"]["setuptools"]["package-data"]["services.console"]
    files = [path.relative_to(CONSOLE).as_posix() for path in LOCALE_DIR.rglob("*") if path.is_file()]
    assert len(files) == 1 + len(TRANSLATED)
    assert [f for f in files if not any(fnmatch.fnmatchcase(f, pattern) for pattern in patterns)] == []


def test_an_unknown_locale_has_no_catalog() -> None:
    with pytest.raises(ValueError, match="no catalog"):
        translations("de")


# Words that name what a count counts: after a placeholder in a text that is not a plural entry, the count has a
# fixed plural ("%(num)s minutes" reads "1 minutes"). A duration is never counted by hand: fmt.duration names it.
_COUNTED = (
    r"(?:second|minute|hour|day|week|month|year|time|record|message|conversation|result|candidate|key|event|hold"
    r"|pseudonym|object|file|attempt|request|erasure|webhook|migration)s?"
)
FIXED_PLURAL = re.compile(r"%\(\w+\)s\s+" + _COUNTED + r"\b", re.IGNORECASE)
# In a template's own text: a value written straight before such a word ({{ n }} minutes).
TEMPLATE_FIXED_PLURAL = re.compile(r"\}\}\s*" + _COUNTED + r"\b", re.IGNORECASE)


def test_the_fixed_plural_checks_catch_what_they_are_for() -> None:
    assert FIXED_PLURAL.search("Deleted (%(num)s minutes after it was sent)")
    assert FIXED_PLURAL.search("%(n)s record of this person")
    assert not FIXED_PLURAL.search("Deleted (%(duration)s after it was sent)")
    assert not FIXED_PLURAL.search("Message %(first)s of %(total)s")
    assert TEMPLATE_FIXED_PLURAL.search("<p>{{ b.minutes }} minutes</p>")
    assert not TEMPLATE_FIXED_PLURAL.search("<p>{{ fmt.duration(s) }}</p>")


def test_no_text_shows_a_count_with_a_fixed_plural() -> None:
    """Every count is a plural entry (ngettext: its forms chosen per language, French 0 and 1 singular) that shows
    it; every duration is a placeholder filled by fmt.duration; no template writes a count before a noun."""
    fixed = []
    for message in extracted_ids():
        if isinstance(message, str):
            if FIXED_PLURAL.search(message) or re.search(r"\w\(s\)", message):  # "%(num)s record(s)" too
                fixed.append(message)
        else:
            plural = message[1]
            assert placeholders(plural), f"a plural entry that shows no count: {message}"
    assert fixed == []
    for template in (CONSOLE / "templates").glob("*.html"):
        text = template.read_text(encoding="utf-8")
        assert TEMPLATE_FIXED_PLURAL.findall(text) == [], template.name


# ---------------------------------------------------------------------------------------------------- durations
@pytest.mark.parametrize(
    ("seconds", "english", "french"),
    [
        pytest.param(0, "0 seconds", "0 seconde", id="0 s"),
        pytest.param(1, "1 second", "1 seconde", id="1 s"),
        pytest.param(2, "2 seconds", "2 secondes", id="2 s"),
        pytest.param(59, "59 seconds", "59 secondes", id="59 s"),
        pytest.param(60, "1 minute", "1 minute", id="60 s"),
        pytest.param(61, "1 minute, 1 second", "1 minute et 1 seconde", id="61 s"),
        pytest.param(120, "2 minutes", "2 minutes", id="120 s"),
        pytest.param(3599, "59 minutes, 59 seconds", "59 minutes et 59 secondes", id="3599 s: never rounded up"),
        pytest.param(3600, "1 hour", "1 heure", id="3600 s"),
        pytest.param(3661, "1 hour, 1 minute", "1 heure et 1 minute", id="3661 s: two units at most"),
        pytest.param(7200, "2 hours", "2 heures", id="7200 s"),
        pytest.param(86_400, "1 day", "1 jour", id="1 day"),
        pytest.param(86_400 + 59, "1 day", "1 jour", id="1 day and seconds: the next unit only"),
        pytest.param(2 * 86_400 + 3 * 3600, "2 days, 3 hours", "2 jours et 3 heures", id="2 days 3 hours"),
        pytest.param(1000 * 86_400, "1,000 days", "1 000 jours", id="numbers formatted"),
        pytest.param(59.9, "59 seconds", "59 secondes", id="fractions truncated"),
        pytest.param(-30, "0 seconds", "0 seconde", id="negative: 0"),
    ],
)
def test_durations_are_humanised_in_both_languages(seconds: float, english: str, french: str) -> None:
    # Babel puts no-break spaces where French typography wants them: compared as plain spaces.
    assert duration(seconds, "en") == english
    assert duration(seconds, "fr").replace("\u00a0", " ").replace("\u202f", " ") == french
    assert Formatter("fr", "UTC").duration(seconds) == duration(seconds, "fr")


_UNIT_SECONDS = {"day": 86_400, "hour": 3_600, "minute": 60, "second": 1}
_ENGLISH_PART = re.compile(r"([\d,]+) (day|hour|minute|second)(s?)")


@given(st.integers(min_value=0, max_value=10**9))
def test_a_duration_says_its_largest_units_exactly_and_agrees_in_number(seconds: int) -> None:
    shown = duration(seconds, "en")
    parts = shown.split(", ")
    assert 1 <= len(parts) <= 2
    total, units = 0, []
    for part in parts:
        found = _ENGLISH_PART.fullmatch(part)
        assert found, shown
        value = int(found.group(1).replace(",", ""))
        assert (found.group(3) == "") == (value == 1), shown  # "1 minute", "2 minutes", "0 seconds"
        total += value * _UNIT_SECONDS[found.group(2)]
        units.append(_UNIT_SECONDS[found.group(2)])
    # The largest unit, then the next one (when not zero): exact to that next unit, never rounded up.
    following = {86_400: 3600, 3600: 60, 60: 1, 1: 1}[units[0]]
    assert units[1:] in ([], [following])
    assert total <= seconds < total + following or seconds == total


# ---------------------------------------------------------------------------------------------------- names shown
def test_every_name_shown_by_its_translation_is_a_term() -> None:
    from services.console.choices import HOLD_SCOPES, KINDS, TYPES
    from services.console.routers.search import direction_of

    shown = {
        *KINDS,
        *TYPES,
        *HOLD_SCOPES,
        *get_args(HoldScope),
        *STATUS_ORDER,
        *get_args(ErasureStatus),
        *get_args(Role),
        *(direction_of(kind) for kind in KINDS),
        *DETAIL_VALUES,
    }
    assert sorted(shown - set(TERMS)) == []
    # Marked with N_ for extraction, so in every catalog (and translated: the tests above).
    for locale in TRANSLATED:
        catalog = ids_of(read_catalog(LOCALE_DIR / locale / "LC_MESSAGES" / "messages.po"))
        assert sorted({*TERMS, *DETAIL_LABELS.values()} - catalog) == []
    french = translator("fr")
    assert french.term("in_progress") == "en cours"
    assert french(DETAIL_LABELS["key_destroyed_at"]) == "Clés détruites le"


# ---------------------------------------------------------------------------------------------------- the translator
def test_translator_translates_and_fills_placeholders() -> None:
    french, english = translator("fr"), translator("en")
    assert french("Sign in") == "Connexion"
    assert french.gettext("Sign in") == "Connexion"
    assert english("Sign in") == "Sign in"
    assert french("Conversation %(ref)s", ref="ab12") == "Conversation ab12"
    assert french("a text nobody translated") == "a text nobody translated"
    # A value is inserted as it is, never read as a format.
    assert french("Hold placed: %(case)s.", case="%(ref)s 100%") == "Conservation placée : %(ref)s 100%."
    # A name is looked up, never formatted: data may hold a %.
    assert french.term("100% %(x)s") == "100% %(x)s"
    assert french.term("completed") == "terminée"


ERASED = (
    "%(num)s record of this person was erased and cannot be shown.",
    "%(num)s records of this person were erased and cannot be shown.",
)


@pytest.mark.parametrize(
    ("locale", "n", "expected"),
    [
        pytest.param("en", 0, "0 records of this person were", id="en 0: other"),
        pytest.param("en", 1, "1 record of this person was", id="en 1: one"),
        pytest.param("en", 2, "2 records of this person were", id="en 2: other"),
        pytest.param("en", 1000, "1,000 records of this person were", id="en 1000: other, formatted"),
        pytest.param("fr", 0, "0 enregistrement de cette personne a été", id="fr 0: one"),
        pytest.param("fr", 1, "1 enregistrement de cette personne a été", id="fr 1: one"),
        pytest.param("fr", 2, "2 enregistrements de cette personne ont été", id="fr 2: other"),
        pytest.param(
            "fr", 1000, "1\u202f000 enregistrements de cette personne ont été", id="fr 1000: other, formatted"
        ),
    ],
)
def test_plural_forms_follow_the_language(locale: str, n: int, expected: str) -> None:
    assert translator(locale).ngettext(*ERASED, n).startswith(expected)


# ---------------------------------------------------------------------------------------------------- templates
def templates_of(sources: dict[str, str]) -> Environment:
    """Templates given as strings, in an environment set up as the console's (services/console/pages.py)."""
    environment = Environment(loader=DictLoader(sources), autoescape=True, undefined=StrictUndefined)
    install_translations(environment)
    return environment


def page_context(locale: str) -> dict[str, Any]:
    return {
        "t": translator(locale),
        "fmt": Formatter(locale, "Europe/Paris"),
        "locale": locale,
        "locales": LOCALES,
        "session": None,
        "is_dpo": False,
        "csrf": "",
        "path": "/conversation",
    }


SENT = 1_780_000_000  # a Tuesday of 2026


def render_conversation(
    locale: str, bubbles: list[Bubble], *, shredded: int = 0, who: Correspondent | None = None
) -> str:
    who = who or Correspondent()
    return (
        console_templates()
        .get_template("conversation.html")
        .render(
            page_context(locale),
            subject_ref="f" * 64,
            opened=OpenedConversation("a reason", None, ("f" * 64,)),
            page=Page(bubbles=bubbles, number=0, count=1, first=1, total=len(bubbles), anchor=None),
            shredded=shredded,
            who=who,
            keywords="",
            matched_count=0,
            review_cases=[],
        )
    )


def conversation(locale: str, n: int) -> str:
    """The conversation page of one message deleted ``n`` minutes after it was sent, edited ``n`` times, in a
    conversation ``n`` records of which were erased."""
    history = [Revision(SENT + i, Content("text", text=f"version {i}")) for i in range(n + 1)]
    bubble = Bubble(
        event_id="e" * 32,
        direction="inbound",
        kind="message",
        sent_at=SENT,
        content=history[-1].content,
        history=history,
        deleted_by="customer",
        deleted_at=SENT + 60 * n,
    )
    return render_conversation(locale, [bubble], shredded=n)


@pytest.mark.parametrize(
    ("locale", "n", "expected"),
    [
        pytest.param("en", 0, ["(0 seconds after it was sent)"], id="en 0"),
        pytest.param(
            "en", 1, ["(1 minute after it was sent)", "Edited 1 time<", "1 record of this person was"], id="en 1"
        ),
        pytest.param(
            "en", 2, ["(2 minutes after it was sent)", "Edited 2 times", "2 records of this person were"], id="en 2"
        ),
        pytest.param(
            "en", 5, ["(5 minutes after it was sent)", "Edited 5 times", "5 records of this person were"], id="en 5"
        ),
        pytest.param("fr", 0, ["(0\u00a0seconde après l&#39;envoi)"], id="fr 0"),
        pytest.param(
            "fr",
            1,
            ["(1 minute après l&#39;envoi)", "Modifié 1 fois", "1 enregistrement de cette personne a été"],
            id="fr 1",
        ),
        pytest.param(
            "fr",
            2,
            ["(2 minutes après l&#39;envoi)", "Modifié 2 fois", "2 enregistrements de cette personne ont été"],
            id="fr 2",
        ),
        pytest.param(
            "fr",
            5,
            ["(5 minutes après l&#39;envoi)", "Modifié 5 fois", "5 enregistrements de cette personne ont été"],
            id="fr 5",
        ),
    ],
)
def test_the_conversation_page_counts_in_the_viewers_language(locale: str, n: int, expected: list[str]) -> None:
    page = conversation(locale, n)
    for text in expected:
        assert text in page
    assert "1 minutes" not in page
    assert ("Message 1 of 1" if locale == "en" else "Message 1 sur 1") in page  # the pager of a one-message page


@pytest.mark.parametrize(
    ("locale", "expected"),
    [
        ("en", ["Location</span> Gare de Lyon", "This record could not be read (key destroyed).", "Messages 1–2 of 2"]),
        (
            "fr",
            [
                "Position</span> Gare de Lyon",
                "Cet enregistrement n&#39;a pas pu être lu (key destroyed).",
                "Messages 1 à 2 sur 2",
            ],
        ),
    ],
)
def test_the_content_of_a_message_is_labelled_in_the_viewers_language(locale: str, expected: list[str]) -> None:
    """The content macro (_content.html, imported with the page's context) translates too."""
    bubbles = [
        Bubble(
            event_id="a" * 32,
            direction="inbound",
            kind="message",
            sent_at=SENT,
            content=Content("location", label="Gare de Lyon", lines=("48.84, 2.37",)),
        ),
        Bubble(
            event_id="b" * 32,
            direction="inbound",
            kind="message",
            sent_at=SENT + 60,
            content=Content("unreadable", label="key destroyed"),
        ),
    ]
    page = render_conversation(locale, bubbles)
    for text in expected:
        assert text in page


def hits(count: int, conversations: int) -> list[tuple[str, list[IndexHit]]]:
    moment = datetime(2026, 3, 5, 13, 7, tzinfo=UTC)
    every = [
        IndexHit(
            event_id=f"{i:032x}",
            kind="message",
            type="text",
            phone_number_id="100",
            subject_ref=f"{i % conversations:064x}",
            event_time=moment,
            received_at=moment,
            retention_class="standard",
            expires_at=None,
            deleted=False,
            edited=False,
        )
        for i in range(count)
    ]
    groups: dict[str, list[IndexHit]] = {}
    for hit in every:
        groups.setdefault(hit.subject_ref or "", []).append(hit)
    return list(groups.items())


@pytest.mark.parametrize(
    ("locale", "count", "conversations", "keywords", "expected"),
    [
        ("en", 1, 1, "", "1 message in 1 conversation."),
        ("en", 2, 1, "", "2 messages in 1 conversation."),
        ("en", 5, 2, "", "5 messages in 2 conversations."),
        ("en", 1, 1, "colis", "1 candidate message in 1 conversation."),
        ("fr", 1, 1, "", "1 message dans 1 conversation."),
        ("fr", 5, 2, "", "5 messages dans 2 conversations."),
        ("fr", 2, 2, "colis", "2 messages candidats dans 2 conversations."),
    ],
)
def test_the_search_counts_in_the_viewers_language(
    locale: str, count: int, conversations: int, keywords: str, expected: str
) -> None:
    from services.console.choices import KINDS, TYPES
    from services.console.routers.search import direction_of

    context = page_context(locale) | {"path": "/search"}
    page = (
        console_templates()
        .get_template("search.html")
        .render(
            context,
            query={"keywords": keywords},
            groups=hits(count, conversations),
            names={},
            hit_count=count,
            truncated=count == 5,
            limit=5,
            direction_of=direction_of,
            kinds=KINDS,
            types=TYPES,
            scope=None,
            error=None,
        )
    )
    assert expected in page
    if count == 5:
        assert ("Only the first 5 results are shown" if locale == "en" else "Seuls les 5 premiers résultats") in page


def test_templates_escape_values_and_translations() -> None:
    template = templates_of(
        {
            "page.html": (
                "{{ _('Conversation %(ref)s', ref=ref) }}|{{ _('Reason') }}|{{ term(name) }}|"
                "{{ ngettext('%(num)s conversation', '%(num)s conversations', n, num=ref) }}|"
                "{{ _('Deleted for everyone by the customer') }}|{{ _('Back to the search') }}"
            )
        }
    ).get_template("page.html")
    page = template.render(t=translator("fr"), ref="<b>x</b>", name="<i>", n=2)
    assert page.split("|") == [
        "Conversation &lt;b&gt;x&lt;/b&gt;",
        "Motif",
        "&lt;i&gt;",
        "&lt;b&gt;x&lt;/b&gt; conversations",
        "Supprimé pour tous par le client",
        "Retour à la recherche",
    ]
    # A translation is text, not markup: its apostrophe is escaped like any text.
    assert (
        templates_of({"p": "{{ _('Erasure requests') }}"}).get_template("p").render(t=translator("fr"))
        == "Demandes d&#39;effacement"
    )


def test_a_template_rendered_without_a_translator_fails_loudly() -> None:
    template = templates_of({"p": "{{ _('Reason') }}"}).get_template("p")
    with pytest.raises(TypeError, match=r"t=translator\(locale\)"):
        template.render()


# ---------------------------------------------------------------------------------------------------- negotiation
@pytest.mark.parametrize(
    ("header", "expected"),
    [
        pytest.param("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "fr", id="a French browser"),
        pytest.param("en-GB,en;q=0.9,fr;q=0.8", "en", id="a British browser"),
        pytest.param("de-DE,de;q=0.9,fr;q=0.5,en;q=0.4", "fr", id="German first, then French"),
        pytest.param("fr-CA", "fr", id="fr-CA is French"),
        pytest.param("FR-ca, en;q=0.5", "fr", id="tags are case-insensitive"),
        pytest.param("de-DE", "en", id="no language of ours: English"),
        pytest.param("", "en", id="empty"),
        pytest.param(None, "en", id="no header"),
        pytest.param("fr;q=0, en;q=0.1", "en", id="q=0 refuses"),
        pytest.param("en;q=0.2, fr;q=0.9", "fr", id="the weight, not the order"),
        pytest.param("en;q=0.5, fr;q=0.500", "en", id="equal weights: the order"),
        pytest.param("fr;q=abc", "en", id="a malformed weight"),
        pytest.param("fr;q=1.5, en;q=0.3", "en", id="a weight above 1 is malformed"),
        pytest.param("fr;q=-1", "en", id="a negative weight is malformed"),
        pytest.param("*", "en", id="any language: English"),
        pytest.param("*;q=0.9, fr;q=0.1", "fr", id="a star is no language"),
        pytest.param(";;;,,,=q;,q=1", "en", id="garbage"),
        pytest.param("\x00fr\ufffd, zz-ZZ-x-y", "en", id="garbage characters"),
    ],
)
def test_language_from_the_browser(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


def test_preferred_languages_in_order_of_weight() -> None:
    assert preferred_languages("de;q=0.3, fr-CA, en;q=0.7, it;q=0") == ["fr-ca", "en", "de"]


@given(st.text(max_size=200))
def test_any_header_gives_a_language_of_the_console(header: str) -> None:
    assert negotiate(header) in LOCALES


@given(st.lists(st.sampled_from(["fr", "fr-CA", "en", "en-US", "de", "es-ES", "*"]), max_size=6), st.data())
def test_the_most_wanted_language_of_ours_wins(tags: list[str], data: st.DataObject) -> None:
    weights = [data.draw(st.sampled_from(["1", "0.9", "0.5", "0.001", "0"])) for _ in tags]
    header = ", ".join(f"{tag};q={weight}" for tag, weight in zip(tags, weights, strict=True))
    ours = [
        (-float(weight), position, tag[:2])
        for position, (tag, weight) in enumerate(zip(tags, weights, strict=True))
        if tag[:2] in LOCALES and float(weight) > 0
    ]
    assert negotiate(header) == (min(ours)[2] if ours else "en")


# ---------------------------------------------------------------------------------------------------- dates, numbers
def test_dates_and_numbers_follow_locale_and_zone() -> None:
    moment = datetime(2026, 3, 5, 13, 7, tzinfo=UTC)
    french = Formatter("fr", "Europe/Paris")
    english = Formatter("en", "America/New_York")
    assert french.time(moment) == "14:07"  # UTC+1 in March
    assert english.time(moment) in ("8:07\u202fAM", "8:07 AM")
    assert "mars" in french.date(moment)
    assert "March" in english.date(moment)
    assert french.number(12000) == "12\u202f000"
    assert english.number(12000) == "12,000"
    assert french.iso(int(moment.timestamp())).endswith("+01:00")
    assert french.datetime(None) == ""


def test_unknown_time_zones_fall_back() -> None:
    assert zone("Europe/Paris", "UTC") == "Europe/Paris"
    assert zone("Mars/Olympus_Mons", "Europe/Paris") == "Europe/Paris"
    assert zone("../../etc/passwd", "UTC") == "UTC"
    assert zone(None, "UTC") == "UTC"


# ---------------------------------------------------------------------------------------------------- who
HOSTILE = '<img src=x onerror=alert(1)>"Eve'


@pytest.mark.parametrize(
    ("locale", "labels"),
    [
        ("en", ["Number</dt>", "Username</dt>", "Also seen as</dt>", "Business number</dt>", "(phone number ID 1065"]),
        ("fr", ["Numéro</dt>", "Nom d&#39;utilisateur</dt>", "Également vu sous le nom</dt>", "(identifiant du"]),
    ],
)
def test_the_conversation_header_names_the_person_and_the_business_number(locale: str, labels: list[str]) -> None:
    who = Correspondent(
        name=HOSTILE,
        earlier_names=("Marie <b>D.</b>",),
        number="+33 6 12 34 56 78",
        username="@marie",
        business_numbers=(BusinessNumber(phone_number_id="106540352242922", display_number="+1 555-078-3881"),),
    )
    page = render_conversation(locale, [], who=who)
    heading = page[page.index("<h1>") : page.index("</h1>")]
    assert heading == '<h1><bdi class="person">&lt;img src=x onerror=alert(1)&gt;&#34;Eve</bdi>'
    assert "<img src=x" not in page
    assert "<b>D.</b>" not in page
    assert "Marie &lt;b&gt;D.&lt;/b&gt;" in page
    assert '<bdi dir="ltr">+33 6 12 34 56 78</bdi>' in page
    assert "+1 555-078-3881" in page
    for label in labels:
        assert label in page
    # The name is never in the title (a title lands in the browser's history); the pseudonym is.
    title = page[page.index("<title>") : page.index("</title>")]
    assert "Eve" not in title
    assert "ffffffffffff" in title


def test_a_conversation_whose_records_name_nobody_is_headed_by_its_pseudonym() -> None:
    page = render_conversation("en", [])
    assert "<h1>Conversation ffffffffffff</h1>" in page
    assert "Number</dt>" not in page
    assert "Business number</dt>" not in page


def test_a_person_named_by_number_is_not_named_twice() -> None:
    page = render_conversation("en", [], who=Correspondent(number="+1 650-555-1234", user_id="user.937"))
    assert '<h1><bdi class="person">+1 650-555-1234</bdi></h1>' in page
    assert "Number</dt>" not in page  # the heading is the number
    assert "user.937" not in page  # a number is there: the opaque id adds nothing
    only_id = render_conversation("en", [], who=Correspondent(username="@sheena", user_id="user.937"))
    assert '<bdi class="person">@sheena</bdi>' in only_id
    assert "Business-scoped user ID</dt>" in only_id


def test_a_search_result_already_opened_is_labelled_with_who_it_is_with() -> None:
    from services.console.choices import KINDS, TYPES
    from services.console.routers.search import direction_of

    groups = hits(2, 2)
    opened = groups[0][0]
    page = (
        console_templates()
        .get_template("search.html")
        .render(
            page_context("en") | {"path": "/search"},
            query={},
            groups=groups,
            names={opened: Correspondent(name=HOSTILE)},
            hit_count=2,
            truncated=False,
            limit=5,
            direction_of=direction_of,
            kinds=KINDS,
            types=TYPES,
            error=None,
            scope=None,
        )
    )
    assert '<bdi class="person">&lt;img src=x onerror=alert(1)&gt;&#34;Eve</bdi>' in page
    assert f'<span class="ref">Conversation {opened[:12]}</span>' in page
    assert f'<h3 id="conv-2">Conversation {groups[1][0][:12]}</h3>' in page  # not opened: its pseudonym only


@pytest.mark.parametrize(
    ("locale", "n", "expected"),
    [
        ("en", 0, "0 conversations"),
        ("en", 1, "1 conversation"),
        ("en", 1000, "1,000 conversations"),
        ("fr", 0, "0 conversation"),
        ("fr", 1, "1 conversation"),
        ("fr", 1000, "1\u202f000 conversations"),
    ],
)
def test_a_template_count_is_formatted_for_the_locale_without_being_told(locale: str, n: int, expected: str) -> None:
    """``ngettext(singular, plural, n)`` alone: the form of ``n`` and ``n`` formatted (a template cannot forget it)."""
    template = templates_of({"p": "{{ ngettext('%(num)s conversation', '%(num)s conversations', n) }}"})
    assert template.get_template("p").render(t=translator(locale), n=n) == expected


@pytest.mark.parametrize(
    ("locale", "scope", "expected"),
    [
        pytest.param("fr", ["CASE-1", "CASE-2"], "Vos dossiers : CASE-1, CASE-2.", id="a reader's cases, in French"),
        pytest.param("en", [], "No open case is assigned to you", id="a reader without a case"),
        pytest.param("en", None, None, id="the DPO: no scope line"),
    ],
)
def test_the_search_page_says_the_readers_scope(locale: str, scope: list[str] | None, expected: str | None) -> None:
    from services.console.choices import KINDS, TYPES

    page = (
        console_templates()
        .get_template("search.html")
        .render(
            page_context(locale) | {"path": "/search"},
            query={},
            groups=None,
            kinds=KINDS,
            types=TYPES,
            error=None,
            scope=scope,
        )
    )
    assert ('id="scope"' in page) is (expected is not None)
    assert expected is None or expected in page
