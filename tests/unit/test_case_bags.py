"""The bags of a case export (services/evidence/case_export.py plan_case_bags, pure): one per person, one per group,
one per conversation of a business number, split into volumes of at most ``bag_records`` records; custodians with
nothing to export listed with why."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.evidence.case_export import (
    NO_PSEUDONYM,
    NOTHING_IN_PERIOD,
    CaseCustodian,
    PlannedBag,
    plan_case_bags,
    volume_count,
)

pytestmark = pytest.mark.unit

A, B, G = "a" * 64, "b" * 64, "c" * 64


def person(cid: str, *refs: str) -> CaseCustodian:
    return CaseCustodian(custodian_id=cid, kind="person", phone_number_id=None, subject_refs=refs, group_ref=None)


def group(cid: str, ref: str | None = G) -> CaseCustodian:
    return CaseCustodian(custodian_id=cid, kind="group", phone_number_id=None, subject_refs=(), group_ref=ref)


def number(cid: str, pid: str | None = "1001") -> CaseCustodian:
    return CaseCustodian(custodian_id=cid, kind="phone_number", phone_number_id=pid, subject_refs=(), group_ref=None)


def shape(bags: list[PlannedBag]) -> list[tuple[str, str, str | None, str | None, int, int]]:
    return [(b.folder, b.kind, b.subject_ref, b.group_ref, b.part, b.parts) for b in bags]


@pytest.mark.parametrize(
    ("records", "limit", "volumes"),
    [
        pytest.param(0, 10, 1, id="an empty conversation is one bag"),
        pytest.param(10, 10, 1, id="exactly the limit"),
        pytest.param(11, 10, 2, id="one over the limit"),
        pytest.param(25_000, 10_000, 3, id="a long conversation"),
    ],
)
def test_volume_count(records: int, limit: int, volumes: int) -> None:
    assert volume_count(records, limit) == volumes


def test_a_bag_holds_one_record_at_least() -> None:
    with pytest.raises(ValueError, match="one record"):
        volume_count(3, 0)


def test_one_bag_per_person_group_and_conversation_in_the_custodians_order() -> None:
    bags, skipped = plan_case_bags(
        [person("p", A, B), number("n"), group("g")],
        {"n": [(A, 3), (B, 25)]},
        group_records={"g": 7},
        bag_records=10,
    )
    assert shape(bags) == [
        ("01-p", "person", A, None, 1, 1),  # the person's first pseudonym (their linked ones are read with it)
        ("02-n-c0001", "phone_number", A, None, 1, 1),
        ("03-n-c0002-v1", "phone_number", B, None, 1, 3),
        ("04-n-c0002-v2", "phone_number", B, None, 2, 3),
        ("05-n-c0002-v3", "phone_number", B, None, 3, 3),
        ("06-g", "group", None, G, 1, 1),
    ]
    assert skipped == []
    assert bags[2].to_json() == {
        "custodian_id": "n",
        "kind": "phone_number",
        "subject_ref": B,
        "group_ref": None,
        "phone_number_id": "1001",
        "conversation": 2,
        "volume": "1/3",
    }


@pytest.mark.parametrize(
    ("custodian", "why"),
    [
        pytest.param(person("p"), NO_PSEUDONYM, id="a person with no pseudonym"),
        pytest.param(group("g"), NOTHING_IN_PERIOD, id="a group without records in the period"),
        pytest.param(group("g", None), NOTHING_IN_PERIOD, id="a group without its pseudonym"),
        pytest.param(number("n"), NOTHING_IN_PERIOD, id="a number without conversations in the period"),
        pytest.param(number("n", None), NOTHING_IN_PERIOD, id="a number without its id"),
    ],
)
def test_a_custodian_with_nothing_to_export_is_listed_with_why(custodian: CaseCustodian, why: str) -> None:
    bags, skipped = plan_case_bags([custodian], {"n": [(A, 0)]}, group_records={"g": 0})
    assert (bags, skipped) == ([], [{"custodian_id": custodian.custodian_id, "kind": custodian.kind, "why": why}])


@settings(max_examples=60)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=60), max_size=6),
    limit=st.integers(min_value=1, max_value=25),
)
def test_every_record_of_a_number_is_in_exactly_one_bag_of_at_most_the_limit(counts: list[int], limit: int) -> None:
    conversations = [(f"{n:064x}", count) for n, count in enumerate(counts)]
    bags, _ = plan_case_bags([number("n")], {"n": conversations}, group_records={}, bag_records=limit)
    held: dict[str, int] = {}
    for bag in bags:
        assert bag.subject_ref is not None
        total = dict(conversations)[bag.subject_ref]
        size = min(limit, total - (bag.part - 1) * limit)  # what the export slices for this volume
        assert 0 < size <= limit
        held[bag.subject_ref] = held.get(bag.subject_ref, 0) + size
    assert held == dict(conversations)
    assert len({bag.folder for bag in bags}) == len(bags)
