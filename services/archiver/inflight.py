"""A record that kills the archiver must not kill it again: the in-flight ledger and the careful plan.

An exception is caught and isolated by the writer (:mod:`services.archiver.writer`); a death is not — out of
memory, a segfault in a native library, a SIGKILL. After such a death the next process reads the same uncommitted
records and, if one of them caused it, dies the same way, for ever: every partition of the process stops.

So before each write the archiver records, per consumer group and partition, the range of events it is about to
write (:class:`InflightLedger`, table ``archiver_inflight``), and clears it once the write returned. A row still
``writing`` when a write of that partition begins means the process that wrote it died meanwhile: its range is a
*suspect*, with one more death to its name. :func:`plan_pieces` then writes the suspect range in up to ``fan_out``
smaller pieces, one after the other, each recorded before it is written, so each further death narrows the suspect
range by ``fan_out``: a batch of 2,000 events is down to one event after four deaths. An event that was in flight
*alone* when the process died, after at least one earlier death, goes to the dead-letter topic with the reason,
and the partition moves on. One unrelated kill (a node drained, a deploy) costs smaller objects, never a dead
letter: that needs two deaths, the last with the event alone in flight.

Events are identified by (Kafka offset, position in the record's body), so a webhook POST of a thousand messages
is narrowed down to the one message at fault, not dead-lettered whole.

A write cancelled by a shutdown or a revoke is not a death: its row is cleared (or left as ``suspect``, without a
death more, when it was part of a careful plan). If PostgreSQL cannot be reached to clear it, the next process
counts one death too many, which only makes its pieces smaller.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

import asyncpg

# The ledger is one small statement before and after each write: bounded, so a shutdown never waits on it long.
CLEAR_TIMEOUT_S = 5.0
DEFAULT_FAN_OUT = 8
# Deaths with an event alone in flight, counting the earlier ones of its range, before it is dead-lettered.
DEATHS_TO_DEAD_LETTER = 2

EventPosition = tuple[int, int]  # (Kafka offset, position of the event in the record's body)


class Positioned(Protocol):
    @property
    def offset(self) -> int: ...

    @property
    def position(self) -> int: ...


P = TypeVar("P", bound=Positioned)


@dataclass(frozen=True, slots=True)
class Suspect:
    """A range of events in flight when a process died (``deaths`` times in all), inclusive at both ends."""

    first: EventPosition
    last: EventPosition
    deaths: int

    def holds(self, item: Positioned) -> bool:
        return self.first <= (item.offset, item.position) <= self.last


@dataclass(frozen=True, slots=True)
class Piece(Generic[P]):
    """Events to write together. ``deaths`` is recorded with them (their range's deaths so far); ``doomed`` says
    the single event was in flight alone at a death, after an earlier one: it is dead-lettered, not written."""

    items: tuple[P, ...]
    deaths: int
    doomed: bool = False

    @property
    def first(self) -> EventPosition:
        return (self.items[0].offset, self.items[0].position)

    @property
    def last(self) -> EventPosition:
        return (self.items[-1].offset, self.items[-1].position)


def plan_pieces(items: Sequence[P], suspect: Suspect | None, *, fan_out: int = DEFAULT_FAN_OUT) -> list[Piece[P]]:
    """The pieces in which to write ``items`` (the events of one batch, in order), given the ``suspect`` range of
    the partition (None: no death recorded). Pure.

    Without a suspect among the items, the batch is one piece. Otherwise the events before the suspect range and
    those after it are a piece each, and the suspect's events are cut into at most ``fan_out`` pieces of nearly
    equal size; a suspect of one event with :data:`DEATHS_TO_DEAD_LETTER` deaths or more is one doomed piece."""
    if fan_out < 2:
        raise ValueError("fan_out must be at least 2")
    if not items:
        return []
    if suspect is None or not any(suspect.holds(item) for item in items):
        return [Piece(tuple(items), 0)]
    before = tuple(item for item in items if (item.offset, item.position) < suspect.first)
    inside = [item for item in items if suspect.holds(item)]
    after = tuple(item for item in items if (item.offset, item.position) > suspect.last)
    pieces: list[Piece[P]] = []
    if before:
        pieces.append(Piece(before, 0))
    if len(inside) == 1:
        pieces.append(Piece((inside[0],), suspect.deaths, doomed=suspect.deaths >= DEATHS_TO_DEAD_LETTER))
    else:
        count = min(fan_out, len(inside))
        size, extra = divmod(len(inside), count)
        start = 0
        for n in range(count):
            end = start + size + (1 if n < extra else 0)
            pieces.append(Piece(tuple(inside[start:end]), suspect.deaths))
            start = end
    if after:
        pieces.append(Piece(after, 0))
    return pieces


def residual(suspect: Suspect | None, written_up_to: EventPosition) -> Suspect | None:
    """What remains suspect once the events up to ``written_up_to`` are written: the part of the suspect range
    after it (the batch ended inside the range), or None."""
    if suspect is None or written_up_to >= suspect.last:
        return None
    if written_up_to < suspect.first:
        return suspect
    # The next event after written_up_to is unknown here (positions restart at 0 in each record): start the
    # residual right after it, at the following position of the same record; a gap there holds no event.
    return Suspect((written_up_to[0], written_up_to[1] + 1), suspect.last, suspect.deaths)


State = Literal["writing", "suspect"]


class InflightLedger:
    """The ``archiver_inflight`` rows of one consumer group and topic (migration 0018).

    Contract: :meth:`suspect` returns the partition's suspect range and turns a ``writing`` row left by a dead
    process into one more death; :meth:`mark` records the range about to be written (replacing the row);
    :meth:`settle` clears the row, or leaves what is still suspect. Every call is one statement; PostgreSQL errors
    propagate (the writer retries them like any outage). Rows carry an owner id, so a process never clears the
    row of another that took its partition over."""

    def __init__(self, pool: asyncpg.Pool, *, group_id: str, topic: str) -> None:
        self.pool = pool
        self.group_id = group_id
        self.topic = topic
        self.owner = uuid.uuid4().hex

    async def suspect(self, partition: int) -> Suspect | None:
        row = await self.pool.fetchrow(
            "SELECT first_offset, first_position, last_offset, last_position, deaths, state, owner"
            " FROM archiver_inflight WHERE group_id = $1 AND topic = $2 AND kafka_partition = $3",
            self.group_id,
            self.topic,
            partition,
        )
        if row is None:
            return None
        # A row `writing` under our own owner id is one this process left (a write failed and is tried again as a
        # new batch): not a death. Anyone else's means its process died (or lost the partition mid-write).
        died = row["state"] == "writing" and row["owner"] != self.owner
        if row["state"] == "writing" and not died:
            return None
        return Suspect(
            (row["first_offset"], row["first_position"]),
            (row["last_offset"], row["last_position"]),
            row["deaths"] + (1 if died else 0),
        )

    async def mark(
        self, partition: int, first: EventPosition, last: EventPosition, deaths: int, state: State = "writing"
    ) -> None:
        await self.pool.execute(
            "INSERT INTO archiver_inflight (group_id, topic, kafka_partition, first_offset, first_position,"
            " last_offset, last_position, deaths, state, owner, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, now())"
            " ON CONFLICT (group_id, topic, kafka_partition) DO UPDATE SET first_offset = EXCLUDED.first_offset,"
            " first_position = EXCLUDED.first_position, last_offset = EXCLUDED.last_offset,"
            " last_position = EXCLUDED.last_position, deaths = EXCLUDED.deaths, state = EXCLUDED.state,"
            " owner = EXCLUDED.owner, updated_at = now()",
            self.group_id,
            self.topic,
            partition,
            first[0],
            first[1],
            last[0],
            last[1],
            deaths,
            state,
            self.owner,
        )

    async def settle(self, partition: int, remaining: Suspect | None) -> None:
        """The write is over: clear our row, or keep ``remaining`` as the partition's suspect range."""
        if remaining is not None:
            await self.mark(partition, remaining.first, remaining.last, remaining.deaths, "suspect")
            return
        await self.pool.execute(
            "DELETE FROM archiver_inflight WHERE group_id = $1 AND topic = $2 AND kafka_partition = $3 AND owner = $4",
            self.group_id,
            self.topic,
            partition,
            self.owner,
        )

    async def settle_cancelled(self, partition: int, remaining: Suspect | None) -> None:
        """Best effort, bounded: a cancelled write (shutdown, revoke) is not a death."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.settle(partition, remaining), CLEAR_TIMEOUT_S)
