"""The one vocabulary (services/core/vocabulary.py): the kind groups partition the kinds, every kind the splitter
makes falls in exactly one, the id validators and the timestamp format hold their contracts, and no module of
services/ spells a closed set a second time."""

from __future__ import annotations

import ast
import contextlib
import copy
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, get_args

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core import vocabulary
from services.core.events import Event, WebhookRejected, parse_webhook
from services.core.journal import split_record, webhook_record
from services.core.vocabulary import (
    BUSINESS_RECORD_KINDS,
    BUSINESS_SENT_KINDS,
    CONTACT_KINDS,
    DIRECTIONS,
    EVENT_KIND_SET,
    EVENT_KINDS,
    GROUP_KINDS,
    HOLD_SCOPES,
    KIND_GROUPS,
    MESSAGE_KINDS,
    PERSON_HOLD_SCOPES,
    ROLES,
    WEBHOOK_MESSAGE_KINDS,
    EventKind,
    direction_of_kind,
    is_event_id,
    is_lower_hex,
    is_pseudonym,
    rfc3339_millis,
)
from services.ingest.app import UtcClock
from services.ingest.outbound import outbound_event
from tests.helpers.support import json_slots
from tests.helpers.webhook_strategies import JSON_VALUES, SAMPLE_VALUES, sample_bodies

pytestmark = pytest.mark.unit

SERVICES = Path(__file__).resolve().parents[2] / "services"
RECEIVED_AT = "2026-12-06T10:00:00.000Z"


def groups_of(kind: str) -> list[str]:
    return [name for name, kinds in KIND_GROUPS.items() if kind in kinds]


def test_groups_partition_the_kinds() -> None:
    union: set[str] = set()
    for name, kinds in KIND_GROUPS.items():
        assert kinds, f"group {name} is empty"
        assert not union & kinds, f"group {name} shares kinds with another group: {sorted(union & kinds)}"
        union |= kinds
    assert union == EVENT_KIND_SET
    assert len(EVENT_KINDS) == len(EVENT_KIND_SET), "a kind is spelled twice in EventKind"
    assert set(KIND_GROUPS) == {"messages", "statuses", "calls", "changes", "business records", "send attempts"}


@pytest.mark.parametrize(
    ("narrower", "wider"),
    [
        pytest.param(WEBHOOK_MESSAGE_KINDS, MESSAGE_KINDS, id="webhook messages are messages"),
        pytest.param(BUSINESS_SENT_KINDS, MESSAGE_KINDS, id="business-sent kinds are messages"),
        pytest.param(MESSAGE_KINDS, CONTACT_KINDS, id="every message is contact"),
        pytest.param(CONTACT_KINDS, EVENT_KIND_SET, id="contact kinds are kinds"),
        pytest.param(GROUP_KINDS, vocabulary.CHANGE_KINDS, id="a group's records are changes"),
    ],
)
def test_named_subsets(narrower: frozenset[str], wider: frozenset[str]) -> None:
    assert narrower <= wider


def test_outbound_is_the_one_message_without_meta_s_message_object() -> None:
    assert {"outbound"} == MESSAGE_KINDS - WEBHOOK_MESSAGE_KINDS


def test_closed_sets_in_order_and_unique() -> None:
    for members in (EVENT_KINDS, HOLD_SCOPES, ROLES, DIRECTIONS):
        assert len(set(members)) == len(members)
    assert ROLES == ("reader", "dpo"), "ROLES is in increasing rank: the action layer ranks by position"
    assert set(PERSON_HOLD_SCOPES) <= set(HOLD_SCOPES)
    assert get_args(vocabulary.Direction) == ("inbound", "outbound")


@pytest.mark.parametrize(
    ("kind", "direction"),
    [
        pytest.param("message", "inbound", id="the person's message"),
        pytest.param("echo", "outbound", id="sent from the app"),
        pytest.param("outbound", "outbound", id="sent through the API"),
        pytest.param("history", None, id="history: the sender says"),
        pytest.param("status", None, id="not a message"),
        pytest.param("media", None, id="not a kind"),
    ],
)
def test_direction_of_kind(kind: str, direction: str | None) -> None:
    assert direction_of_kind(kind) == direction


def check_kinds(events: Iterator[Event] | list[Event] | tuple[Event, ...]) -> None:
    for event in events:
        assert len(groups_of(event.kind)) == 1, f"{event.kind} is in {groups_of(event.kind)}"
        if event.kind in BUSINESS_RECORD_KINDS:
            assert event.subject is None, f"a {event.kind} record is about no person"


def split(raw: bytes) -> tuple[Event, ...]:
    """The events the archiver gets from ``raw`` journaled by ingest (services/core/journal.py)."""
    found = split_record(raw, webhook_record("t", "k", raw, signature=None, received_at=RECEIVED_AT).headers)
    return found.events


def test_every_sample_splits_into_grouped_kinds_and_covers_each_group() -> None:
    seen: set[str] = set()
    for raw in sample_bodies():
        events = split(raw)
        check_kinds(events)
        seen |= {e.kind for e in events}
    # The samples reach every group (outbound comes from ingest's outbound capture, not from a webhook; send attempts
    # from the send gateway).
    assert {name for kind in seen for name in groups_of(kind)} == set(KIND_GROUPS) - {"send attempts"}


@st.composite
def edited_samples(draw: st.DrawFn) -> bytes:
    """A sample webhook with one to three of its values replaced by arbitrary JSON or removed (never repeated:
    a body of millions of items would only test the time it takes)."""
    body = copy.deepcopy(draw(SAMPLE_VALUES))
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        places = list(json_slots(body))
        if not places:
            break
        container, key = draw(st.sampled_from(places))
        if draw(st.booleans()):
            container[key] = draw(JSON_VALUES)
        else:
            del container[key]
    return json.dumps(body).encode()


@settings(max_examples=300, deadline=None, database=None)
@given(edited_samples())
def test_every_kind_the_splitter_makes_is_in_exactly_one_group(raw: bytes) -> None:
    check_kinds(split(raw))
    with contextlib.suppress(WebhookRejected):
        check_kinds(parse_webhook(raw, raw_sha256="0" * 64, signature=None, received_at=RECEIVED_AT))


def test_outbound_capture_makes_a_message() -> None:
    raw = json.dumps(
        {
            "waba_id": "102290129340398",
            "phone_number_id": "106540352242922",
            "request": {"messaging_product": "whatsapp", "to": "16505551234", "type": "text", "text": {"body": "x"}},
            "response": {"messages": [{"id": "wamid.out"}], "contacts": [{"input": "16505551234"}]},
        }
    ).encode()
    event = outbound_event(raw, received_at=RECEIVED_AT)
    check_kinds([event])
    assert event.kind in BUSINESS_SENT_KINDS


@pytest.mark.parametrize(
    ("value", "event_id", "pseudonym"),
    [
        pytest.param("0123456789abcdef" * 2, True, False, id="32 lowercase hex"),
        pytest.param("0123456789abcdef" * 4, False, True, id="64 lowercase hex"),
        pytest.param("0123456789ABCDEF" * 2, False, False, id="upper case"),
        pytest.param("0123456789abcdef" * 2 + "0", False, False, id="33 digits"),
        pytest.param("0123456789abcdef"[:15] * 2, False, False, id="30 digits"),
        pytest.param("g" * 32, False, False, id="not hex"),
        pytest.param(" " + "a" * 31, False, False, id="a space"),
        pytest.param("a" * 31 + "\n", False, False, id="a newline"),
        pytest.param("", False, False, id="empty"),
        pytest.param("٠" * 32, False, False, id="other digits"),
        pytest.param(None, False, False, id="None"),
        pytest.param(b"a" * 32, False, False, id="bytes"),
        pytest.param(["a"] * 32, False, False, id="a list of hex digits"),
    ],
)
def test_hex_validators(value: Any, event_id: bool, pseudonym: bool) -> None:
    assert is_event_id(value) is event_id
    assert is_pseudonym(value) is pseudonym


@given(st.text(alphabet="0123456789abcdefABCDEFg-", max_size=70), st.integers(min_value=0, max_value=70))
def test_is_lower_hex_is_the_pattern(value: str, digits: int) -> None:
    assert is_lower_hex(value, digits) == (len(value) == digits and all(c in "0123456789abcdef" for c in value))


@pytest.mark.parametrize(
    ("moment", "text"),
    [
        pytest.param(datetime(2026, 1, 2, 3, 4, 5, 678_999, tzinfo=UTC), "2026-01-02T03:04:05.678Z", id="truncated"),
        pytest.param(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), "2026-01-02T03:04:05.000Z", id="whole second"),
        pytest.param(
            datetime(2026, 1, 2, 4, 4, 5, 1000, tzinfo=timezone(timedelta(hours=1))),
            "2026-01-02T03:04:05.001Z",
            id="another zone: written in UTC",
        ),
        pytest.param(datetime(1970, 1, 1, tzinfo=UTC), "1970-01-01T00:00:00.000Z", id="epoch"),
    ],
)
def test_rfc3339_millis(moment: datetime, text: str) -> None:
    assert rfc3339_millis(moment) == text


def test_rfc3339_millis_refuses_a_naive_time() -> None:
    with pytest.raises(ValueError, match="naive"):
        rfc3339_millis(datetime(2026, 1, 2, 3, 4, 5))


@given(st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)))
def test_rfc3339_millis_round_trip(moment: datetime) -> None:
    text = rfc3339_millis(moment)
    assert len(text) == len("2026-01-02T03:04:05.678Z")
    assert text.endswith("Z")
    assert datetime.fromisoformat(text) == moment.replace(microsecond=moment.microsecond // 1000 * 1000)


@given(st.integers(min_value=0, max_value=253_402_300_799_999_999_999))
def test_ingest_clock_writes_the_same_text(ns: int) -> None:
    """ingest's received_at clock formats each second once (the hot path): it must write what rfc3339_millis does."""
    moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=ns // 1000)
    assert UtcClock(lambda: ns)() == rfc3339_millis(moment)


# ------------------------------------------------------------------ no second definition

CLOSED_SETS: dict[str, frozenset[str]] = {
    "event kinds": EVENT_KIND_SET,
    "hold scopes": frozenset(HOLD_SCOPES),
    "roles": frozenset(ROLES),
    "directions": frozenset(DIRECTIONS),
}


def defined_names(tree: ast.Module) -> set[str]:
    """The names a module assigns at its top level."""
    names: set[str] = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else []
        if isinstance(node, ast.AnnAssign):
            targets = [node.target]
        names |= {t.id for t in targets if isinstance(t, ast.Name)}
    return names


VOCABULARY = SERVICES / "core" / "vocabulary.py"
# The modules that define names once: the vocabulary, and the PostgreSQL handle types (Connection...).
DEFINING_MODULES = (VOCABULARY, SERVICES / "core" / "db.py")
DEFINED_ONCE = frozenset().union(*(defined_names(ast.parse(m.read_text(encoding="utf-8"))) for m in DEFINING_MODULES))


def spelled_sets(tree: ast.AST) -> Iterator[tuple[int, str, list[str]]]:
    """(line, which set, members) of every tuple, list, set or ``Literal[...]`` spelling two or more members of a
    closed set."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == "Literal":
            elements = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
        elif isinstance(node, ast.Tuple | ast.List | ast.Set):
            elements = node.elts
        else:
            continue
        words = [e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        for name, members in CLOSED_SETS.items():
            found = [w for w in words if w in members]
            if len(found) >= 2:
                yield node.lineno, name, found


def redefined_names(tree: ast.Module) -> Iterator[tuple[int, str]]:
    """Module-level assignments to a name the vocabulary (or core/db.py) defines (an import is no definition)."""
    for node in tree.body:
        for name in sorted(defined_names(ast.Module(body=[node], type_ignores=[])) & DEFINED_ONCE):
            yield node.lineno, name


def second_definitions(source: str, path: str) -> list[str]:
    tree = ast.parse(source)
    found = [f"{path}:{line}: {name} {members}" for line, name, members in spelled_sets(tree)]
    found += [f"{path}:{line}: {name} is defined once, in services/core" for line, name in redefined_names(tree)]
    return found


def test_no_module_spells_a_closed_set_again() -> None:
    offenders = [
        finding
        for path in sorted(SERVICES.rglob("*.py"))
        if path not in DEFINING_MODULES
        for finding in second_definitions(path.read_text(encoding="utf-8"), str(path.relative_to(SERVICES.parent)))
    ]
    assert not offenders, "import these from services/core/vocabulary.py (or db.py) instead:\n" + "\n".join(offenders)


@pytest.mark.parametrize(
    "source",
    [
        pytest.param('KINDS = frozenset({"message", "status"})', id="a frozenset of kinds"),
        pytest.param('if kind in ("message", "echo", "history"):\n    pass', id="a tuple of kinds in a test"),
        pytest.param('Scope = Literal["waba", "group"]', id="a Literal of hold scopes"),
        pytest.param('Role = Literal["reader", "dpo"]', id="roles"),
        pytest.param('side = ["inbound", "outbound"]', id="directions"),
        pytest.param("MESSAGE_KINDS = frozenset(wanted)", id="a vocabulary name assigned"),
        pytest.param("HoldScope = str", id="a vocabulary type assigned"),
        pytest.param("Connection = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy", id="a Connection alias"),
    ],
)
def test_the_scan_finds_a_second_definition(source: str) -> None:
    assert second_definitions(source, "x.py")


@pytest.mark.parametrize(
    "source",
    [
        pytest.param("from services.core.vocabulary import MESSAGE_KINDS", id="an import"),
        pytest.param('if kind == "outbound":\n    pass', id="one kind"),
        pytest.param('routes = ("webhook", "outbound")', id="one member among other words"),
        pytest.param('WORDS = {"inbound": "received", "outbound": "sent"}', id="a dict keyed by members"),
        pytest.param("KINDS = tuple(k for k in EVENT_KINDS if k in MESSAGE_KINDS)", id="derived from the vocabulary"),
    ],
)
def test_the_scan_lets_a_use_be(source: str) -> None:
    assert not second_definitions(source, "x.py")


def test_event_kind_is_the_literal_of_the_kinds() -> None:
    kinds: tuple[EventKind, ...] = get_args(EventKind)
    assert kinds == EVENT_KINDS
