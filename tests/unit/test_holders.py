"""A phone number that changes hands (services/core/holders.py, issue #15): the number change message read from
Meta's sample, the holder of a number at a moment, and the pseudonyms the archiver seals each record under."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from devtools.samples import payloads_dir
from services.archiver.sealing import holders_of, number_refs, people_of, pseudonyms_of
from services.core.events import Event, parse_webhook
from services.core.holders import current_since, holder_since, new_number, with_changes
from services.core.pseudonym import holder_ref, subject_ref
from tests.helpers.events import event

pytestmark = pytest.mark.unit

PEPPER = b"pepper-for-unit-tests"
NUMBER = "106540352242922"
OLD, NEW = "16505551234", "12195555358"  # Meta's sample: "User Sheena Nelson changed from 16505551234 to 12195555358"
CHANGED = datetime.fromtimestamp(1750269342, UTC)  # the sample's timestamp
NOW = datetime(2026, 12, 1, tzinfo=UTC)


def change_event(raw: bytes | None = None) -> Event:
    raw = raw or (payloads_dir() / "inbound_system_user_changed_number.json").read_bytes()
    (found,) = parse_webhook(
        raw, raw_sha256=hashlib.sha256(raw).hexdigest(), signature=None, received_at="2026-12-01T00:00:00Z"
    )
    return found


def text_from(wa_id: str, at: datetime, seed: str = "t") -> Event:
    return event(wa_id=wa_id, timestamp=int(at.timestamp()), seed=seed)


def test_the_number_change_message_of_meta_s_sample_names_the_new_number() -> None:
    found = change_event()
    assert (found.kind, found.type, found.subject and found.subject.wa_id) == ("message", "system", OLD)
    assert new_number(found) == NEW


@pytest.mark.parametrize(
    ("system", "why"),
    [
        ({"type": "customer_identity_changed", "identity": "x"}, "another system message"),
        ({"type": "user_changed_number", "wa_id": OLD}, "the same number"),
        ({"type": "user_changed_number", "wa_id": ""}, "no number"),
        ({"type": "user_changed_number"}, "no number at all"),
        ({"type": "user_changed_number", "wa_id": "+1 219 555"}, "not digits"),
        ("user_changed_number", "not an object"),
        ({"type": ["user_changed_number"], "wa_id": NEW}, "a type that is not a string"),
        ({"type": "customer_changed_number", "wa_id": NEW}, "the older name keeps the number in new_wa_id"),
    ],
)
def test_anything_else_is_no_number_change(system: object, why: str) -> None:
    body = orjson.loads((payloads_dir() / "inbound_system_user_changed_number.json").read_bytes())
    body["entry"][0]["changes"][0]["value"]["messages"][0]["system"] = system
    assert new_number(change_event(orjson.dumps(body))) is None, why


def test_the_older_name_of_the_number_change_is_one_too() -> None:
    body = orjson.loads((payloads_dir() / "inbound_system_user_changed_number.json").read_bytes())
    body["entry"][0]["changes"][0]["value"]["messages"][0]["system"] = {
        "body": "User A changed from 16505551234 to 12195555358",
        "new_wa_id": NEW,
        "type": "customer_changed_number",
    }
    assert new_number(change_event(orjson.dumps(body))) == NEW


def test_a_text_is_no_number_change() -> None:
    assert new_number(text_from(OLD, CHANGED)) is None
    assert new_number(replace(change_event(), kind="echo")) is None


def test_the_holder_at_a_moment_got_the_number_at_the_latest_change_strictly_before() -> None:
    first, second = CHANGED, CHANGED + timedelta(days=400)
    changes = [first, second]
    assert holder_since(changes, first - timedelta(seconds=1)) is None
    assert holder_since(changes, first) is None  # the change message itself: the one who leaves
    assert holder_since(changes, first + timedelta(microseconds=1)) == first
    assert holder_since(changes, second) == first
    assert holder_since(changes, second + timedelta(days=1)) == second
    assert holder_since([], NOW) is None
    assert current_since(changes) == second
    assert current_since([]) is None


def test_with_changes_merges_in_order_without_repeats() -> None:
    later = CHANGED + timedelta(days=3)
    merged = with_changes({"a": [later]}, [("a", CHANGED), ("a", later), ("b", later)])
    assert merged == {"a": [CHANGED, later], "b": [later]}


def test_each_holder_has_a_pseudonym_of_their_own() -> None:
    first = holder_ref(PEPPER, NUMBER, OLD, None)
    assert first == subject_ref(PEPPER, NUMBER, OLD)  # before any change: the number's pseudonym, as always
    after = holder_ref(PEPPER, NUMBER, OLD, CHANGED)
    assert after != first
    assert holder_ref(PEPPER, NUMBER, OLD, CHANGED + timedelta(microseconds=1)) != after
    # The same moment in another zone is the same holder: PostgreSQL gives it back in UTC.
    paris = CHANGED.astimezone(timezone(timedelta(hours=2)))
    assert holder_ref(PEPPER, NUMBER, OLD, paris) == after
    assert holder_ref(PEPPER, "other-number", OLD, CHANGED) != after
    with pytest.raises(ValueError, match="timezone-aware"):
        holder_ref(PEPPER, NUMBER, OLD, CHANGED.replace(tzinfo=None))


def test_a_batch_with_the_change_seals_the_old_number_s_later_records_under_its_next_holder() -> None:
    # In the order Kafka may deliver them: a stranger's message from the old number a year later comes first.
    stranger = text_from(OLD, CHANGED + timedelta(days=365), "s")
    before = text_from(OLD, CHANGED - timedelta(hours=1), "b")
    change = change_event()
    events = [stranger, before, change]
    firsts = [pseudonyms_of(PEPPER, e) for e in events]
    assert number_refs(firsts, events, PEPPER) == {subject_ref(PEPPER, NUMBER, OLD), subject_ref(PEPPER, NUMBER, NEW)}

    owners, moves = holders_of(PEPPER, events, firsts, {}, NOW)

    old_first = subject_ref(PEPPER, NUMBER, OLD)
    assert moves == [(old_first, CHANGED)]
    assert owners[0].sealing == holder_ref(PEPPER, NUMBER, OLD, CHANGED)  # the stranger: the next holder
    assert owners[1] == firsts[1]  # before the change: the person who leaves
    # The change message is the leaver's, and links them to their new number.
    assert owners[2].sealing == old_first
    assert owners[2].aliases == (old_first, subject_ref(PEPPER, NUMBER, NEW))  # alias rows: both to the leaver
    assert old_first not in owners[0].aliases
    assert people_of(owners) == {old_first, holder_ref(PEPPER, NUMBER, OLD, CHANGED), subject_ref(PEPPER, NUMBER, NEW)}


def test_changes_already_kept_apply_to_a_later_batch_and_to_the_new_number_s_own_past() -> None:
    # The new number had itself changed hands before (its previous holder left it): the link goes to the holder
    # who got it then, not to that earlier holder.
    new_first = subject_ref(PEPPER, NUMBER, NEW)
    earlier = CHANGED - timedelta(days=30)
    known = {subject_ref(PEPPER, NUMBER, OLD): [CHANGED], new_first: [earlier]}
    events = [text_from(OLD, CHANGED + timedelta(seconds=5)), change_event()]
    firsts = [pseudonyms_of(PEPPER, e) for e in events]
    owners, moves = holders_of(PEPPER, events, firsts, known, NOW)
    assert owners[0].sealing == holder_ref(PEPPER, NUMBER, OLD, CHANGED)
    assert owners[1].aliases[-1] == holder_ref(PEPPER, NUMBER, NEW, earlier)
    assert moves == [(subject_ref(PEPPER, NUMBER, OLD), CHANGED)]  # kept again: ON CONFLICT DO NOTHING


def test_without_any_change_the_pseudonyms_are_the_first_holders() -> None:
    events = [text_from(OLD, CHANGED), event(wa_id=None, user_id="US.123", seed="u"), event(kind="account", wa_id=None)]
    firsts = [pseudonyms_of(PEPPER, e) for e in events]
    assert holders_of(PEPPER, events, firsts, {}, NOW) == (firsts, [])
    # A user id is a person's, never recycled: a change kept for a number does not touch it.
    known = {subject_ref(PEPPER, NUMBER, OLD): [CHANGED]}
    owners, _ = holders_of(PEPPER, events, firsts, known, NOW)
    assert owners[1:] == firsts[1:]
    assert owners[0].sealing == holder_ref(PEPPER, NUMBER, OLD, None)  # at the change: still the first holder
