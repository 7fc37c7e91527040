"""Who a conversation is with, drawn from decrypted envelopes (services/review/correspondent.py): Meta's sample
payloads, the latest name winning, hostile names made harmless to show, numbers made readable."""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.core.events import parse_webhook
from services.core.reader import RecordLocation
from services.review.assembly import assemble
from services.review.conversation import naming_records
from services.review.correspondent import (
    NAME_MAX,
    BusinessNumber,
    Correspondent,
    correspondent,
    group_subject,
    readable_number,
    shown_text,
    sighting,
    sightings,
)
from services.review.queries import IndexedRecord

pytestmark = pytest.mark.unit

PAYLOADS = Path(__file__).resolve().parents[1] / "data" / "whatsapp"


def envelopes_of(name: str, received_at: str = "2026-01-01T00:00:00Z") -> list[dict[str, Any]]:
    raw = (PAYLOADS / name).read_bytes()
    return [e.as_dict() for e in parse_webhook(raw, raw_sha256="-", signature=None, received_at=received_at)]


def envelope(
    name: Any, at: int, *, wa_id: str | None = "33612345678", kind: str = "message", **contact: Any
) -> dict[str, Any]:
    return {
        "kind": kind,
        "timestamp": at,
        "received_at": f"2026-01-01T00:00:{at % 60:02d}Z",
        "phone_number_id": "106540352242922",
        "subject": {"wa_id": wa_id, "user_id": None},
        "contact": {"profile": {"name": name, **contact}, "wa_id": wa_id},
        "payload": {"from": wa_id},
    }


# ---------------------------------------------------------------------------------------------------- Meta's samples
def test_a_message_names_the_person_by_profile_name_and_number() -> None:
    who = correspondent(sightings(envelopes_of("inbound_text.json")))
    assert who == Correspondent(
        name="Sheena Nelson",
        number="+1 650-555-1234",
        business_numbers=(BusinessNumber(phone_number_id="106540352242922", display_number=None),),
    )
    assert who.label == "Sheena Nelson"


def test_a_person_without_a_phone_number_is_named_by_username_and_user_id() -> None:
    who = correspondent(sightings(envelopes_of("inbound_text_bsuid_username_no_phone.json")))
    assert (who.name, who.number, who.username, who.user_id) == (
        "Sheena Nelson",
        None,
        "@realsheenanelson",
        "user.93737...",
    )
    # A status webhook carries the contact too (usernames): its name counts.
    status = correspondent(sightings(envelopes_of("status_delivered_bsuid_username_no_phone.json")))
    assert (status.name, status.username, status.number) == ("Pablo M.", "@pablomorales", None)


def test_the_business_number_is_read_from_what_the_business_sent() -> None:
    echo = envelopes_of("smb_message_echoes_text.json")
    message = envelopes_of("inbound_text.json")
    who = correspondent(sightings([*message, *echo]))
    assert who.business_numbers == (
        BusinessNumber(phone_number_id="106540352242922", display_number="+1 555-078-3881"),
    )
    assert who.number == "+1 650-555-1234"  # the echo's recipient is the person: the same number


def test_without_a_name_the_number_labels_the_person_and_without_anything_nothing_does() -> None:
    assert correspondent([sighting(envelope(None, 10))]).label == "+33 6 12 34 56 78"
    assert correspondent([sighting(envelope(None, 10, wa_id=None, username="@abc"))]).label == "@abc"
    nobody = correspondent([])
    assert (nobody.label, nobody.known) == (None, False)
    # Envelopes of any shape name nobody and raise nothing.
    odd: list[dict[str, Any]] = [{"contact": "x", "subject": 5, "timestamp": "1"}, {"contact": {"profile": ["a"]}}, {}]
    assert correspondent(sightings(odd)).label is None


# ---------------------------------------------------------------------------------------------------- latest wins
def test_the_latest_name_wins_and_earlier_names_are_listed_newest_first() -> None:
    seen = sightings(
        [
            envelope("Marie", 100),
            envelope("Marie D.", 300),
            envelope("Marie Dupont", 200),
            envelope("Marie", 150),  # the same name again: listed once
            envelope(None, 400),  # a later record without a profile does not erase the name
        ]
    )
    who = correspondent(reversed(seen))  # whatever the order of the reads
    assert who.name == "Marie D."
    assert who.earlier_names == ("Marie Dupont", "Marie")


def test_a_record_without_meta_time_is_ordered_by_its_receipt() -> None:
    older = {**envelope("Old", 0), "timestamp": None, "received_at": "2026-01-01T00:00:01Z"}
    newer = {**envelope("New", 0), "timestamp": None, "received_at": "2026-01-02T00:00:01Z"}
    assert correspondent(sightings([newer, older])).name == "New"


# ---------------------------------------------------------------------------------------------------- hostile names
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("Sheena Nelson", "Sheena Nelson", id="a plain name"),
        pytest.param('<script>alert("x")</script>', '<script>alert("x")</script>', id="markup: text, escaped later"),
        pytest.param("moc.\u202eevil\u202c.com", "moc.evil.com", id="an RTL override is dropped"),
        pytest.param("\u2067Ahmed\u2069 \u200fadmin", "Ahmed admin", id="isolates and marks are dropped"),
        pytest.param("محمد علي", "محمد علي", id="a right-to-left name stays"),
        pytest.param("Ana\n\tMaria  \r\n", "Ana Maria", id="line breaks and tabs are one space"),
        pytest.param("a\x1b[31mred\x07\x85", "a[31mred", id="terminal escapes and C1 controls are dropped"),
        pytest.param("👩‍👩‍👧 Famille 🇫🇷", "👩‍👩‍👧 Famille 🇫🇷", id="emoji sequences stay whole"),
        pytest.param("x" * 500, "x" * (NAME_MAX - 1) + "…", id="a very long name is cut"),
        pytest.param("\u202e\n \t", None, id="nothing left"),
        pytest.param("", None, id="empty"),
        pytest.param(42, None, id="not a string"),
        pytest.param({"name": "x"}, None, id="an object"),
    ],
)
def test_hostile_names_are_shown_harmless(raw: Any, shown: str | None) -> None:
    assert shown_text(raw) == shown


@given(st.text(max_size=300))
def test_any_name_shows_without_controls_and_within_bounds(raw: str) -> None:
    shown = shown_text(raw)
    if shown is None:
        return
    assert 0 < len(shown) <= NAME_MAX
    assert shown == shown.strip()
    assert "  " not in shown
    assert all(unicodedata.category(c) != "Cc" for c in shown)
    assert not set(shown) & set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c")


# ---------------------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        pytest.param("16505551234", "+1 650-555-1234", id="US"),
        pytest.param("33612345678", "+33 6 12 34 56 78", id="France"),
        pytest.param("+44 20 7946 0958", "+44 20 7946 0958", id="already formatted"),
        pytest.param("999", "+999", id="no numbering plan: digits after a plus"),
        pytest.param("12", "+12", id="too short to be possible"),
        pytest.param("user.937", "user.937", id="not a number: as text"),
        pytest.param("", None, id="empty"),
        pytest.param(None, None, id="none"),
    ],
)
def test_numbers_are_shown_readably(raw: str | None, shown: str | None) -> None:
    assert readable_number(raw) == shown


# ---------------------------------------------------------------------------------------------------- what a page reads
def record(event_id: str, kind: str, kind_type: str | None = "text") -> IndexedRecord:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    return IndexedRecord(
        location=RecordLocation(event_id, "k", 0),
        subject_ref="f" * 64,
        kind=kind,  # type: ignore[arg-type]
        type=kind_type,
        event_time=moment,
        received_at=moment,
    )


def test_a_page_also_reads_the_newest_message_and_echo_unless_it_holds_them() -> None:
    records = [
        record("m1", "message"),
        record("e1", "echo"),
        record("m2", "message"),
        record("e2", "echo"),
        record("r1", "message", "revoke"),  # a deletion names no one new
        record("s1", "status", "read"),
    ]
    assert [r.event_id for r in naming_records(records, {"m1"})] == ["m2", "e2"]
    assert [r.event_id for r in naming_records(records, {"m2", "e2"})] == []
    assert naming_records([], set()) == []


def test_a_group_is_named_by_its_latest_subject() -> None:
    created = envelopes_of("group_lifecycle_update_create.json")
    renamed = envelopes_of("group_settings_update.json")
    assert group_subject(assemble(created)) == "test invite link"
    assert group_subject(assemble([*renamed, *created])) == "Test Subject"  # renamed later
    failed = [
        {**e, "payload": {**e["payload"], "group_subject": {"text": "No", "update_successful": False}}} for e in renamed
    ]
    assert group_subject(assemble([*created, *failed])) == "test invite link"  # a failed rename names nothing
    assert group_subject(assemble(envelopes_of("inbound_text.json"))) is None
