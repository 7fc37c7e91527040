"""The careful plan after a death: pieces cover the batch exactly, narrow the suspect range, and doom an event only
when it was in flight alone at a second death. A simulation of the whole protocol (ledger rows, deaths, restarts)
shows that any one event that kills every process writing it is dead-lettered after a few deaths, alone."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.archiver.inflight import DEATHS_TO_DEAD_LETTER, Piece, Suspect, plan_pieces, residual


@dataclass(frozen=True, slots=True)
class Item:
    offset: int
    position: int = 0


def items(*pairs: tuple[int, int]) -> list[Item]:
    return [Item(o, p) for o, p in pairs]


def batch(first: int, last: int) -> list[Item]:
    return [Item(o) for o in range(first, last + 1)]


def shape(pieces: list[Piece[Item]]) -> list[tuple[int, int, int, bool]]:
    return [(p.items[0].offset, p.items[-1].offset, p.deaths, p.doomed) for p in pieces]


@pytest.mark.parametrize(
    ("suspect", "expected"),
    [
        pytest.param(None, [(10, 25, 0, False)], id="no death recorded: one piece"),
        pytest.param(Suspect((40, 0), (50, 0), 1), [(10, 25, 0, False)], id="a suspect outside the batch"),
        pytest.param(
            Suspect((10, 0), (25, 0), 1),
            [(o, o + 1, 1, False) for o in range(10, 26, 2)],
            id="first death: eight pieces",
        ),
        pytest.param(
            Suspect((14, 0), (15, 0), 2),
            [(10, 13, 0, False), (14, 14, 2, False), (15, 15, 2, False), (16, 25, 0, False)],
            id="records around the suspect are pieces of their own",
        ),
        pytest.param(
            Suspect((14, 0), (14, 0), 1),
            [(10, 13, 0, False), (14, 14, 1, False), (15, 25, 0, False)],
            id="alone after one death: written alone, not doomed",
        ),
        pytest.param(
            Suspect((14, 0), (14, 0), 2),
            [(10, 13, 0, False), (14, 14, 2, True), (15, 25, 0, False)],
            id="alone at a second death: doomed",
        ),
        pytest.param(
            Suspect((20, 0), (40, 0), 1),
            [(10, 19, 0, False)] + [(o, o, 1, False) for o in range(20, 26)],
            id="the batch ends inside the suspect range",
        ),
    ],
)
def test_plan_pieces(suspect: Suspect | None, expected: list[tuple[int, int, int, bool]]) -> None:
    assert shape(plan_pieces(batch(10, 25), suspect)) == expected


def test_events_of_one_record_are_narrowed_by_position() -> None:
    events = items(*((7, p) for p in range(10)))
    pieces = plan_pieces(events, Suspect((7, 3), (7, 4), 3), fan_out=8)
    assert [[(i.offset, i.position) for i in p.items] for p in pieces] == [
        [(7, 0), (7, 1), (7, 2)],
        [(7, 3)],
        [(7, 4)],
        [(7, 5), (7, 6), (7, 7), (7, 8), (7, 9)],
    ]


@pytest.mark.parametrize(
    ("up_to", "expected"),
    [
        pytest.param((30, 0), None, id="written to its end"),
        pytest.param((31, 0), None, id="written past its end"),
        pytest.param((5, 0), Suspect((10, 0), (30, 0), 2), id="not reached"),
        pytest.param((20, 3), Suspect((20, 4), (30, 0), 2), id="ended inside"),
    ],
)
def test_residual(up_to: tuple[int, int], expected: Suspect | None) -> None:
    assert residual(Suspect((10, 0), (30, 0), 2), up_to) == expected
    assert residual(None, up_to) is None


@given(
    size=st.integers(1, 300),
    bounds=st.tuples(st.integers(-5, 305), st.integers(-5, 305)),
    deaths=st.integers(1, 6),
    fan_out=st.integers(2, 16),
)
def test_pieces_cover_the_batch_in_order_and_narrow_the_suspect(
    size: int, bounds: tuple[int, int], deaths: int, fan_out: int
) -> None:
    events = batch(0, size - 1)
    low, high = sorted(bounds)
    suspect = Suspect((low, 0), (high, 0), deaths)
    pieces = plan_pieces(events, suspect, fan_out=fan_out)
    assert [i for p in pieces for i in p.items] == events, "every event once, in order"
    inside = [i for i in events if suspect.holds(i)]
    for piece in pieces:
        held = [suspect.holds(i) for i in piece.items]
        assert all(held) or not any(held), "no piece mixes suspect and innocent events"
        if all(held) and inside:
            assert len(piece.items) <= math.ceil(len(inside) / fan_out)
            assert piece.deaths == deaths
        else:
            assert piece.deaths == 0
        assert piece.doomed == (len(inside) == 1 and all(held) and deaths >= DEATHS_TO_DEAD_LETTER)


@dataclass
class Row:
    first: tuple[int, int]
    last: tuple[int, int]
    deaths: int
    state: str
    owner: int


def simulate(events: list[Item], killer: Item, max_records: int, fan_out: int) -> tuple[int, list[Item], list[Item]]:
    """The protocol of BatchWriter._write_recorded and InflightLedger, with a process that dies whenever ``killer``
    is in a piece being written: (deaths, events written, events dead-lettered)."""
    row: Row | None = None
    committed = 0
    written: list[Item] = []
    dead: list[Item] = []
    deaths = 0
    owner = 0
    while committed < len(events):
        assert deaths < 40, "never converges"
        owner += 1  # a new process
        alive = True
        while alive and committed < len(events):
            chunk = events[committed : committed + max_records]
            suspect = None
            if row is not None:
                died = row.state == "writing" and row.owner != owner
                if row.state == "suspect" or died:
                    suspect = Suspect(row.first, row.last, row.deaths + (1 if died else 0))
            for piece in plan_pieces(chunk, suspect, fan_out=fan_out):
                if piece.doomed:
                    dead.extend(piece.items)
                    continue
                row = Row(piece.first, piece.last, piece.deaths, "writing", owner)
                if killer in piece.items:
                    alive = False
                    deaths += 1
                    break
                written.extend(piece.items)
            if not alive:
                break
            remaining = residual(suspect, (chunk[-1].offset, chunk[-1].position))
            row = None
            if remaining is not None:
                row = Row(remaining.first, remaining.last, remaining.deaths, "suspect", owner)
            committed += len(chunk)
    return deaths, written, dead


@given(
    size=st.integers(1, 3000),
    where=st.floats(0, 1, exclude_max=True),
    max_records=st.sampled_from([1, 7, 50, 500, 2000]),
    fan_out=st.sampled_from([2, 4, 8]),
)
def test_an_event_that_kills_every_process_is_dead_lettered_alone_after_few_deaths(
    size: int, where: float, max_records: int, fan_out: int
) -> None:
    events = batch(0, size - 1)
    killer = events[int(where * size)]
    deaths, written, dead = simulate(events, killer, max_records, fan_out)
    assert dead == [killer]
    # Pieces written before a death are written again after it (same object keys, same index rows: idempotent).
    assert set(written) == {e for e in events if e != killer}
    suspect_size = min(size, max_records)
    assert deaths <= math.ceil(math.log(suspect_size, fan_out)) + 2 if suspect_size > 1 else deaths == 2


def test_one_unrelated_death_dead_letters_nothing() -> None:
    # A kill (a deploy, a node drained) during a batch of one event: written alone next time, not dead-lettered.
    pieces = plan_pieces([Item(3)], Suspect((3, 0), (3, 0), 1))
    assert shape(pieces) == [(3, 3, 1, False)]
