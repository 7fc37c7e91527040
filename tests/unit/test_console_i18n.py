"""The console speaks English and French: every text of its templates and code has its French, the language is
negotiated from the browser, dates and numbers follow the locale and the viewer's time zone."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.console.i18n import FRENCH, Formatter, negotiate, translator, zone

pytestmark = pytest.mark.unit

CONSOLE = Path(__file__).resolve().parents[2] / "services" / "console"
# t("…") / t('…') calls, in templates and in the console's code (adjacent string literals are not used there).
CALL = re.compile(r"""\bt\(\s*(["'])((?:(?!\1).)+)\1""")


def used_texts() -> set[str]:
    found: set[str] = set()
    for path in [*CONSOLE.glob("templates/*.html"), *CONSOLE.glob("routers/*.py"), CONSOLE / "errors.py"]:
        found.update(match.group(2) for match in CALL.finditer(path.read_text(encoding="utf-8")))
    return found


def test_every_text_has_its_french() -> None:
    texts = used_texts()
    assert len(texts) > 100  # the scan does find the calls
    missing = sorted(text for text in texts if text not in FRENCH)
    assert missing == []


def test_placeholders_are_kept_in_french() -> None:
    for english, french in FRENCH.items():
        assert set(re.findall(r"{(\w+)}", english)) == set(re.findall(r"{(\w+)}", french)), english


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("fr-FR,fr;q=0.9,en-US;q=0.8,en;q=0.7", "fr"),
        ("en-GB,en;q=0.9,fr;q=0.8", "en"),
        ("de-DE,de;q=0.9,fr;q=0.5,en;q=0.4", "fr"),
        ("de-DE", "en"),
        ("", "en"),
        (None, "en"),
        ("fr;q=0, en;q=0.1", "en"),
        ("en;q=0.2, fr;q=0.9", "fr"),
        ("fr;q=abc", "en"),
    ],
)
def test_language_from_the_browser(header: str | None, expected: str) -> None:
    assert negotiate(header) == expected


def test_translator_fills_placeholders() -> None:
    assert translator("fr")("Conversation {ref}", ref="ab12") == "Conversation ab12"
    assert translator("fr")("Sign in") == "Connexion"
    assert translator("en")("Sign in") == "Sign in"
    assert translator("fr")("a text nobody translated") == "a text nobody translated"


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


def test_every_choice_shown_by_name_has_its_french() -> None:
    from services.console.choices import HOLD_SCOPES, KINDS, TYPES
    from services.review.assembly import STATUS_ORDER

    erasure_states = ("received", "blocked", "in_progress", "completed", "refused", "extended")
    shown = {*KINDS, *TYPES, *HOLD_SCOPES, *STATUS_ORDER, *erasure_states, "reader", "dpo"}
    assert sorted(name for name in shown if name not in FRENCH) == []
