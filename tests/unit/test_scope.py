"""The reader's scope (services/governance/scope.py): a reader sees a record iff some open case assigned to them
names a custodian of it and its period holds the record's time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.governance.scope import (
    EVERYTHING,
    CaseCover,
    CaseCustodian,
    Grant,
    ReadingScope,
    break_glass_grant,
    case_scope,
    record_time,
    scope_sql,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)
PEOPLE = [f"{n:064x}" for n in range(1, 5)]
GROUPS = [f"{n:064x}" for n in range(100, 103)]
NUMBERS = ["1001", "1002", "1003"]
REVIEWERS = ["ana", "ben", "cy"]


@dataclass(frozen=True, slots=True)
class Place:
    subject_ref: str | None
    phone_number_id: str | None
    group_ref: str | None
    event_time: datetime | None
    received_at: datetime


days = st.integers(min_value=0, max_value=20).map(lambda d: T0 + timedelta(days=d))
custodians = st.one_of(
    st.lists(st.sampled_from(PEOPLE), min_size=1, max_size=2).map(
        lambda refs: CaseCustodian(kind="person", subject_refs=tuple(refs))
    ),
    st.sampled_from(NUMBERS).map(lambda n: CaseCustodian(kind="phone_number", phone_number_id=n)),
    st.sampled_from(GROUPS).map(lambda g: CaseCustodian(kind="group", group_ref=g)),
)
cases = st.builds(
    CaseCover,
    case_ref=st.from_regex(r"CASE-[0-9]{2}", fullmatch=True),
    status=st.sampled_from(["open", "closed"]),
    reviewers=st.frozensets(st.sampled_from(REVIEWERS), max_size=2),
    period_start=st.none() | days,
    period_end=st.none() | days,
    custodians=st.lists(custodians, max_size=3).map(tuple),
)
places = st.builds(
    Place,
    subject_ref=st.none() | st.sampled_from(PEOPLE),
    phone_number_id=st.none() | st.sampled_from(NUMBERS),
    group_ref=st.none() | st.sampled_from(GROUPS),
    event_time=st.none() | days,
    received_at=days,
)


def covered_by(case: CaseCover, reviewer: str, place: Place) -> bool:
    """The rule as the issue states it, spelled out independently of the implementation."""
    moment = place.event_time or place.received_at
    in_period = (case.period_start is None or case.period_start <= moment) and (
        case.period_end is None or moment <= case.period_end
    )
    theirs = any(
        (c.kind == "person" and place.subject_ref in c.subject_refs)
        or (c.kind == "phone_number" and place.phone_number_id == c.phone_number_id)
        or (c.kind == "group" and place.group_ref == c.group_ref)
        for c in case.custodians
    )
    return case.status == "open" and reviewer in case.reviewers and in_period and theirs


@settings(max_examples=80, deadline=None)
@given(st.lists(cases, max_size=4), st.sampled_from(REVIEWERS), st.lists(places, min_size=1, max_size=8))
def test_a_reader_sees_a_record_iff_an_assigned_open_case_covers_it(
    found: list[CaseCover], reviewer: str, records: list[Place]
) -> None:
    scope = case_scope(found, reviewer)
    for place in records:
        assert scope.covers(place) == any(covered_by(case, reviewer, place) for case in found)
    assert set(scope.sources) <= {c.case_ref for c in found if c.status == "open" and reviewer in c.reviewers}


@settings(max_examples=30, deadline=None)
@given(st.lists(cases, max_size=4), st.sampled_from(REVIEWERS), places)
def test_everything_covers_every_record_and_no_case_covers_none(
    found: list[CaseCover], reviewer: str, place: Place
) -> None:
    assert EVERYTHING.covers(place)
    assert not case_scope([c for c in found if reviewer not in c.reviewers], reviewer).covers(place)


@pytest.mark.parametrize(
    ("place", "covered"),
    [
        pytest.param(Place(PEOPLE[0], "9", None, T0, T0), True, id="the custodian, on the first day"),
        pytest.param(Place(PEOPLE[0], "9", None, T0 + timedelta(days=2), T0), True, id="on the last day"),
        pytest.param(Place(PEOPLE[0], "9", None, T0 - timedelta(seconds=1), T0), False, id="a second before"),
        pytest.param(Place(PEOPLE[0], "9", None, None, T0 + timedelta(days=3)), False, id="received after, no time"),
        pytest.param(Place(PEOPLE[1], "9", None, T0, T0), False, id="another person of another number"),
        pytest.param(Place(PEOPLE[1], "1001", None, T0, T0), True, id="anyone of the custodian number"),
        pytest.param(Place(PEOPLE[2], "9", GROUPS[0], T0, T0), True, id="anyone in the custodian group"),
    ],
)
def test_one_case(place: Place, covered: bool) -> None:
    grant = Grant(
        source="CASE-1",
        since=T0,
        until=T0 + timedelta(days=2),
        subject_refs=frozenset({PEOPLE[0]}),
        phone_number_ids=frozenset({"1001"}),
        group_refs=frozenset({GROUPS[0]}),
    )
    assert ReadingScope((grant,)).covers(place) is covered
    assert record_time(place) == (place.event_time or place.received_at)


def test_the_sql_binds_every_value_and_says_false_for_nothing() -> None:
    args: list[object] = []

    def arg(value: object) -> str:
        args.append(value)
        return f"${len(args)}"

    assert scope_sql(EVERYTHING, arg) == "TRUE"
    assert scope_sql(ReadingScope(), arg) == "FALSE"
    assert scope_sql(ReadingScope((Grant(source="CASE-empty"),)), arg) == "FALSE"  # a case without custodians
    sql = scope_sql(ReadingScope((Grant(source="C", since=T0, phone_number_ids=frozenset({"1001"})),)), arg)
    assert "1001" not in sql
    assert args == [["1001"], T0]


def test_a_break_glass_grant_opens_its_person_or_group_whatever_the_time_and_is_not_a_case() -> None:
    person = break_glass_grant("req-1", {"subject_refs": [PEOPLE[0]]})
    group = break_glass_grant("req-2", {"group_ref": GROUPS[0]})
    scope = ReadingScope((Grant(source="CASE-1", phone_number_ids=frozenset({"1001"})), person, group))
    long_ago = T0 - timedelta(days=3650)
    assert scope.covers(Place(PEOPLE[0], "9", None, long_ago, long_ago))
    assert scope.covers(Place(PEOPLE[3], "9", GROUPS[0], long_ago, long_ago))
    assert not scope.covers(Place(PEOPLE[1], "9", GROUPS[1], T0, T0))
    assert scope.sources == ["CASE-1"]  # what the search page calls "your cases"
    assert scope.break_glass_for(subject_refs=[PEOPLE[0], PEOPLE[1]]) == ["req-1"]
    assert scope.break_glass_for(group_ref=GROUPS[0]) == ["req-2"]
    assert scope.break_glass_for(subject_refs=[PEOPLE[1]]) == []
