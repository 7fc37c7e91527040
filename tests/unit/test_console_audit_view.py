"""The audit page's details column (services/console/audit_view.py): readable fields, never raw JSON."""

from __future__ import annotations

import orjson
import pytest
from babel.messages.pofile import read_po

from services.console.audit_view import DETAIL_LABELS, DETAIL_VALUES, audit_details
from services.console.i18n import Formatter, catalog_path, translator

REF = "5f0c1e0b9a" + "0" * 54


def details(locale: str, value: object, raw: str | None = None) -> list[tuple[str, str]]:
    text = raw if raw is not None else orjson.dumps(value).decode()
    return audit_details(text, translator(locale), Formatter(locale, "Europe/Paris"))


def test_an_erasure_proof_reads_in_french() -> None:
    proof = {
        "request_ref": "GDPR-4471",
        "status": "completed",
        "subject_refs": [REF, REF[::-1]],
        "key_destroyed_at": "2026-03-05T13:07:00+00:00",
        "objects_deleted": 1200,
        "blocked_by_cases": [],
        "refusal_ground": None,
        "group": True,
    }
    assert details("fr", proof) == [
        ("Demande", "GDPR-4471"),
        ("État", "terminée"),
        ("Pseudonymes", f"{REF[:12]}…, {REF[::-1][:12]}…"),
        ("Clés détruites le", "5 mars 2026, 14:07:00"),
        ("Objets supprimés", "1\u202f200"),
        ("Bloquée par les dossiers", "—"),
        ("Motif du refus", "—"),
        ("Dans un groupe", "oui"),
    ]


def test_in_english_the_same_fields_keep_their_english_names() -> None:
    assert details("en", {"keywords": 2, "deleted_only": True, "since": "2026-03-05T00:00:00+01:00"}) == [
        ("Words searched", "2"),
        ("Deleted for everyone", "yes"),
        ("From", "Mar 5, 2026, 12:00:00\u202fAM"),
    ]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("{}", []),
        ("null", []),
        ('{"written_by_a_later_version": "x"}', [("written_by_a_later_version", "x")]),
        ('{"nested": {"a": 1}}', [("nested", '{"a":1}')]),
        ('"a bare string"', [("Details", "a bare string")]),
        ("not json", [("Details", "not json")]),
        ('{"prefix": "2026-03"}', [("Prefix", "2026-03")]),  # not a moment: no zone, too short
    ],
)
def test_odd_details_are_shown_not_hidden(raw: str, expected: list[tuple[str, str]]) -> None:
    assert details("en", None, raw) == expected


def test_every_label_and_value_has_its_french() -> None:
    with catalog_path("fr").open("rb") as source:
        french = {message.id: message.string for message in read_po(source) if message.id and not message.fuzzy}
    shown = {*DETAIL_LABELS.values(), *DETAIL_VALUES, "yes", "no", "Details"}
    assert sorted(text for text in shown if not french.get(text)) == []
