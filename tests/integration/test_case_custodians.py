"""A case's group and business-number custodians exported on the real stack (services/actions/cases.py
CaseExporting): a group's bag holds every participant's records of the group within the case's period and nothing
of another group or of a participant's own conversation; a business number's bags hold each of its conversations
within the period, one bag per conversation (split into volumes past the bag limit), and nothing of another number
or from outside the period. One archiver run, one case, one export."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from devtools import pipeline
from devtools.pipeline import Person
from services.actions.layer import ExecutionContext
from services.evidence import case_export
from services.evidence.case_export import NOTHING_IN_PERIOD, verify_case
from services.governance.cases import CustodianSpec
from tests.helpers.action_stack import Stack
from tests.helpers.approvals import REQUESTER, approved
from tests.helpers.archive_runs import archive
from tests.helpers.groups import T0, Group

pytestmark = pytest.mark.integration


def events_of(bag: Path) -> str:
    return (bag / "data" / "events.jsonl").read_text()


async def test_a_case_exports_its_group_and_its_business_numbers_conversations_within_its_period(
    demo_env: dict[str, str], pg_pool: asyncpg.Pool, stack: Stack, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    group = Group.fresh()
    other_group = Group(group.business, f"Y2FwaV9ncm91cDo{uuid.uuid4().hex}", group.alice, group.bob, group.chloe)
    alice_alone = Person(group.business.waba_id, group.business.phone_number_id, group.alice)
    # A second business number: two customers in the period, one of them also before it; a third on another number.
    first = Person.fresh()
    second = Person(first.waba_id, first.phone_number_id, "1" + pipeline.digits(10))
    elsewhere = Person.fresh()
    await archive(
        demo_env,
        pg_pool,
        stack.settings.s3.prefix,
        [
            *group.webhooks(),  # T0 .. T0 + 100
            other_group.message(group.bob, "wamid.OTHER-GROUP", "OTHER-GROUP not this one", T0 + 45),
            pipeline.text_message(alice_alone, "wamid.ALICE-ALONE", "ALICE-ALONE just me", T0 + 46),
            pipeline.text_message(first, "wamid.N1-BEFORE", "N1-BEFORE outside the period", T0 - 600),
            pipeline.text_message(first, "wamid.N1-A", "N1-A first in the period", T0 + 50),
            pipeline.text_message(first, "wamid.N1-B", "N1-B second in the period", T0 + 60),
            pipeline.revoke(first, "wamid.N1-R", "wamid.N1-B", T0 + 70),
            pipeline.text_message(second, "wamid.N2-A", "N2-A the other customer", T0 + 80),
            pipeline.text_message(elsewhere, "wamid.ELSEWHERE", "ELSEWHERE another number", T0 + 90),
        ],
    )
    actions = stack.actions
    empty = Person.fresh().phone_number_id  # a number the archive holds nothing of: listed, with why
    case = await actions.open_case(
        REQUESTER,
        title="Spring order dispute",
        case_ref=f"CUST-{pipeline.digits(8)}",
        # From after the group's creation and joins (T0 .. T0 + 30) to after its last message.
        period_start=datetime.fromtimestamp(T0 + 35, UTC),
        period_end=datetime.fromtimestamp(T0 + 200, UTC),
        custodians=[
            CustodianSpec(kind="group", group_id=group.group_id),
            CustodianSpec(kind="phone_number", phone_number_id=first.phone_number_id),
            CustodianSpec(kind="phone_number", phone_number_id=empty),
        ],
    )
    size = await actions.case_export_size(REQUESTER, case.case_ref)
    # The group's 8 records within the period (four messages, a read status, the settings, a removal, a departure);
    # the first customer's 3 (two messages and a deletion), the second's 1; three bags.
    assert size.to_json() == {"records": 12, "bags": 3}

    # Two records per bag: the first customer's conversation comes in two volumes.
    monkeypatch.setattr(case_export, "CASE_BAG_RECORDS", 2)
    out = tmp_path / "case"
    key = Ed25519PrivateKey.generate()
    exported = await approved(
        actions,
        # The JSON Lines and the JSON transcript only: a PDF volume per bag would cost seconds each here.
        actions.request_case_export(REQUESTER, case.case_ref, out, reason="court order 25", formats=["jsonl", "json"]),
        context=ExecutionContext(export_signing_key=key),
    )
    bags = [Path(p) for p in exported.to_json()["bags"]]
    listing = orjson.loads((out / "case.json").read_bytes())
    kinds = [(entry["kind"], entry["volume"]) for entry in listing["bags"]]
    assert kinds[0] == ("group", "1/1")
    assert sorted(kinds[1:]) == [("phone_number", "1/1"), ("phone_number", "1/2"), ("phone_number", "2/2")]
    assert [s["why"] for s in exported.skipped] == [NOTHING_IN_PERIOD]
    assert not verify_case(out, public_key=key.public_key()).failures

    # The group: every participant's messages and the group's updates in the period, nothing else.
    in_group = events_of(bags[0])
    for text in ("hello all, is the order ready", "mine is paid already", "I will pass this time", "thanks, see you"):
        assert text in in_group
    assert "Spring order (closed)" in in_group  # the settings update at T0 + 70
    assert "group_create" not in in_group  # T0: before the period
    assert "OTHER-GROUP" not in in_group
    assert "ALICE-ALONE" not in in_group
    transcript = orjson.loads(next((bags[0] / "data").glob("subject-export-*.json")).read_bytes())
    assert len({m["payload"].get("from") for m in transcript["messages"] if m["kind"] == "message"}) == 3

    # The business number: its conversations in the period, one bag (or volume) each, nothing outside.
    numbered = [events_of(bag) for bag in bags[1:]]
    markers = ("N1-A first", "N1-B second", "wamid.N1-R", "N2-A")
    found = sorted(tuple(m for m in markers if m in events) for events in numbered)
    # The first customer's two volumes (in time order: two messages, then the deletion), the second's one bag.
    assert found == [("N1-A first", "N1-B second"), ("N2-A",), ("wamid.N1-R",)]
    everything = "".join(numbered)
    assert "N1-BEFORE" not in everything
    assert "ELSEWHERE" not in everything
    assert all(len(e.splitlines()) <= 2 for e in numbered)

    # Each bag's read was audited as an export with the case's reason, one row per pseudonym.
    rows = await pg_pool.fetch(
        "SELECT action, reason, details FROM audit_log WHERE details->>'case_ref' = $1 AND action = 'export'",
        case.case_ref,
    )
    assert {(r["action"], r["reason"]) for r in rows} == {("export", "court order 25")}
    assert sum(1 for r in rows if orjson.loads(r["details"]).get("group")) == 4  # three participants, the business
