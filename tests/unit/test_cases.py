"""The pure steps of cases (services/governance/cases.py): references, tags, texts, periods, the case's own seal."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.crypto import RecordTampered, new_dek
from services.governance.cases import (
    NOTE_MAX,
    CaseRefused,
    Incident,
    check_case_ref,
    check_period,
    check_tag,
    check_text,
    next_case_ref,
    open_case_text,
    seal_case_text,
)

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("taken", "expected"),
    [
        pytest.param([], "CASE-2026-0001", id="the first of the year"),
        pytest.param(["CASE-2026-0001", "CASE-2026-0007"], "CASE-2026-0008", id="after the highest, not the count"),
        pytest.param(["CASE-2025-0042"], "CASE-2026-0001", id="another year's do not count"),
        pytest.param(["LIT-7", "CASE-2026-x", "case-2026-0003"], "CASE-2026-0001", id="given references do not count"),
        pytest.param(["CASE-2026-9999"], "CASE-2026-10000", id="past four digits"),
    ],
)
def test_the_next_reference(taken: list[str], expected: str) -> None:
    assert next_case_ref(2026, taken) == expected


@settings(max_examples=50)
@given(st.lists(st.integers(min_value=1, max_value=99_999), max_size=20))
def test_a_generated_reference_is_never_one_taken(numbers: list[int]) -> None:
    taken = [f"CASE-2026-{n:04d}" for n in numbers]
    made = next_case_ref(2026, taken)
    assert made not in taken
    assert check_case_ref(made) == made


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param("", id="empty"),
        pytest.param("-LEADING", id="a leading dash"),
        pytest.param("two words", id="a blank inside"),
        pytest.param("CASE/1", id="a slash"),
        pytest.param("x" * 49, id="too long"),
        pytest.param("Jean Dupont's case", id="a sentence"),
    ],
)
def test_a_reference_is_a_plain_token(ref: str) -> None:
    with pytest.raises(CaseRefused):
        check_case_ref(ref)


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        pytest.param("Relevant", "relevant", id="lowercased"),
        pytest.param(" privileged ", "privileged", id="stripped"),
        pytest.param("follow-up_2", "follow-up_2", id="dashes, underscores, digits"),
    ],
)
def test_a_tag_is_a_label(tag: str, expected: str) -> None:
    assert check_tag(tag) == expected


@pytest.mark.parametrize("tag", ["", "two words", "x" * 41, "é", "call +33 6 12"])
def test_a_tag_cannot_carry_a_sentence(tag: str) -> None:
    with pytest.raises(CaseRefused):
        check_tag(tag)


def test_texts_are_bounded_and_the_refusal_names_the_field_only() -> None:
    assert check_text("  a note  ", "note", NOTE_MAX) == "a note"
    assert check_text("   ", "note", NOTE_MAX) is None
    with pytest.raises(CaseRefused, match="the title is required"):
        check_text(None, "title", 10, required=True)
    with pytest.raises(CaseRefused) as refused:
        check_text("secret words here", "note", 5)
    assert "secret" not in str(refused.value)


def test_a_period_has_zones_and_ends_after_it_starts() -> None:
    start, end = datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC)
    check_period(start, end)
    check_period(None, end)
    with pytest.raises(CaseRefused):
        check_period(end, start)
    with pytest.raises(CaseRefused):
        check_period(datetime(2026, 1, 1), None)


def test_an_incident_with_no_field_is_none() -> None:
    assert Incident(what_deleted="  ").checked() is None
    assert Incident(what_deleted=" the refund ").checked() == Incident(what_deleted="the refund")


def test_a_case_text_opens_only_for_its_case_and_field() -> None:
    key = new_dek()
    sealed = seal_case_text(key, "case-1", "title", "Dispute of Jean")
    assert b"Jean" not in sealed
    assert open_case_text(key, "case-1", "title", sealed) == "Dispute of Jean"
    for case_id, what in (("case-2", "title"), ("case-1", "incident")):
        with pytest.raises(RecordTampered):
            open_case_text(key, case_id, what, sealed)
