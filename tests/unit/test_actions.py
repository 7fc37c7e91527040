"""The pure parts of the action layer and of the CLI's rendering: roles, audit details, tables."""

from __future__ import annotations

import re
from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from rich.console import Console

from services.actions.layer import REQUIRED_ROLE, Forbidden, MediaFile, Operator, authorize, search_audit_details
from services.cli.render import correspondent_line, counted, holds_table, messages_table, rows_table
from services.governance.holds import Hold
from services.review.assembly import Change, ConversationMessage
from services.review.correspondent import BusinessNumber, Correspondent
from services.review.search import IndexHit, SearchFilter

pytestmark = pytest.mark.unit

# media: a file of a conversation retrieved; the case actions: of the cases a reader is assigned to (checked then)
# approval.decide: the gate lets a reader through; each request kind's approver role is checked by the action.
READER_ACTIONS = {
    "messages",
    "group.messages",
    "media",
    "search",
    "export.search",
    "case.list",
    "case.review",
    "approval.decide",
}


@pytest.mark.parametrize("action", sorted(REQUIRED_ROLE))
def test_a_dpo_may_do_everything_and_a_reader_only_search_and_retrieval(action: str) -> None:
    authorize(Operator("dpo", "dpo"), action)  # type: ignore[arg-type]
    if action in READER_ACTIONS:
        authorize(Operator("reader", "reader"), action)  # type: ignore[arg-type]
    else:
        with pytest.raises(Forbidden, match="the 'dpo' role is required"):
            authorize(Operator("reader", "reader"), action)  # type: ignore[arg-type]


def hit(subject_ref: str | None) -> IndexHit:
    at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    return IndexHit(
        event_id="e1",
        kind="message",
        type="text",
        phone_number_id="p1",
        subject_ref=subject_ref,
        event_time=at,
        received_at=at,
        retention_class="default",
        expires_at=None,
        deleted=False,
        edited=False,
    )


@pytest.mark.parametrize(
    ("query", "hits", "expected"),
    [
        pytest.param(SearchFilter(), [], {"limit": 1000}, id="no filter: only the limit"),
        pytest.param(
            SearchFilter(phone_number_id="p1", since=datetime(2026, 1, 1, tzinfo=UTC), deleted_only=True, limit=5),
            [hit("s1")],
            {"phone_number_id": "p1", "since": "2026-01-01T00:00:00+00:00", "deleted_only": True, "limit": 5},
            id="filters, timestamps as ISO 8601",
        ),
        pytest.param(
            SearchFilter(contact="+15551234567"),
            [hit("s2"), hit("s1"), hit("s2"), hit(None)],
            {"limit": 1000, "subject_refs": ["s1", "s2"]},
            id="a contact is recorded by the pseudonyms found, never by its number",
        ),
    ],
)
def test_search_audit_details(query: SearchFilter, hits: list[IndexHit], expected: dict[str, object]) -> None:
    assert search_audit_details(query, hits) == expected


def test_index_hit_json_has_iso_timestamps() -> None:
    assert hit("s1").to_json()["event_time"] == "2026-01-02T03:04:05+00:00"


async def empty() -> AsyncGenerator[bytes, None]:
    pieces: tuple[bytes, ...] = ()
    for piece in pieces:
        yield piece


@pytest.mark.parametrize(
    ("mime_type", "filename"),
    [("image/jpeg", "e1.jpeg"), ("audio/ogg; codecs=opus", "e1.ogg"), ("application/octet-stream", "e1.octet-stream")],
)
def test_media_file_names(mime_type: str, filename: str) -> None:
    assert MediaFile("e1", mime_type, 0, empty()).filename == filename


def rendered(table: object) -> str:
    console = Console(width=200, markup=False, highlight=False, emoji=False)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


def test_the_messages_table_shows_content_status_edits_and_deletion() -> None:
    message = ConversationMessage(
        event_id="e1",
        message_id="wamid.1",
        kind="message",
        type="text",
        direction="inbound",
        timestamp=1_767_225_600,  # 2026-01-01 00:00:00 UTC
        received_at="2026-01-01T00:00:01Z",
        payload={"type": "text", "text": {"body": "see [image] :smile:"}},
        statuses=[("read", 1_767_225_605)],
        edits=[Change("e2", "edit", "customer", None, {"edit": {"message": {"type": "text", "text": {"body": "v2"}}}})],
        deletion=Change("e3", "revoke", "customer", 1_767_225_660, None),
    )
    text = rendered(messages_table([message]))
    for expected in ("2026-01-01 00:00:00", "<-", "see [image] :smile:", "read", "edited: v2", "DELETED by customer"):
        assert expected in text


def test_the_messages_are_headed_by_who_the_conversation_is_with() -> None:
    who = Correspondent(
        name="Sheena Nelson",
        earlier_names=("Sheena N.",),
        number="+1 650-555-1234",
        business_numbers=(BusinessNumber(phone_number_id="106540352242922", display_number="+1 555-078-3881"),),
    )
    line = correspondent_line(who)
    assert line == (
        "Sheena Nelson · +1 650-555-1234 · also seen as Sheena N. · business number +1 555-078-3881 (106540352242922)"
    )
    assert correspondent_line(Correspondent(user_id="user.937")) == "user.937"
    assert correspondent_line(Correspondent()) is None


@pytest.mark.parametrize(
    ("n", "noun", "plural", "expected"),
    [
        (0, "record", None, "0 records"),
        (1, "record", None, "1 record"),
        (2, "key", None, "2 keys"),
        (1_000, "event", None, "1,000 events"),
        (1, "legal hold", None, "1 legal hold"),
        (3, "entry", "entries", "3 entries"),
    ],
)
def test_the_commands_count_in_the_right_number(n: int, noun: str, plural: str | None, expected: str) -> None:
    assert counted(n, noun, plural) == expected


def test_no_command_prints_a_count_with_a_fixed_plural() -> None:
    cli = Path(__file__).resolve().parents[2] / "services" / "cli"
    for source in cli.glob("*.py"):
        assert re.findall(r"\w\(s\)", source.read_text(encoding="utf-8")) == [], source.name  # "record(s)"


def test_the_holds_and_rows_tables() -> None:
    created = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    hold = Hold(
        hold_id="h-1",
        case_ref="CASE-1",
        scope="contact",
        waba_id=None,
        phone_number_id=None,
        subject_count=3,
        created_by="dpo",
        created_at=created,
        released_at=None,
    )
    text = rendered(holds_table([hold]))
    assert "CASE-1" in text
    assert "3 pseudonyms" in text
    assert "2026-01-01 12:00 by dpo" in text
    text = rendered(rows_table([{"a": 1, "b": None}], ["a", "b"]))
    assert "None" not in text
