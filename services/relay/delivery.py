"""The relay's decisions, pure: which journal records a destination gets, the headers they carry, what an answer
means, and how long to wait before trying again.

What a destination receives is the value of a ``webhook/1`` journal record (services/core/journal.py) — the exact
bytes Meta signed — POSTed whole. Filtering by field never changes the bytes: a record is delivered whole when one
of its changes has a wanted ``field``, skipped otherwise.

Signatures (docs/ARCHITECTURE.md, "Feeding the company's existing systems"):

- Without a secret of its own, a destination gets Meta's ``X-Hub-Signature-256`` as ingest received it: a receiver
  that verifies with the same Meta app's secret accepts the bytes as if Meta had sent them.
- With a secret of its own (a receiver that verifies with another app's secret), ``X-Hub-Signature-256`` is the
  HMAC-SHA256 of the same bytes under that secret — what a standard receiver checks — and Meta's original moves to
  ``X-Wa-Archive-Meta-Signature-256``, for a receiver that wants to check both.

Every delivery also names its journal position (``X-Wa-Archive-Record: <topic>/<partition>/<offset>``): delivery
is at least once, and a receiver can drop a redelivery by it.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final, Literal

import orjson

from services.core.journal import FORMAT_HEADER, SIGNATURE_HEADER, WEBHOOK_FORMAT, header_value
from services.ingest.signature import sign

HUB_SIGNATURE: Final = "X-Hub-Signature-256"
META_SIGNATURE: Final = "X-Wa-Archive-Meta-Signature-256"
RECORD_POSITION: Final = "X-Wa-Archive-Record"

Headers = Sequence[tuple[str, bytes]]

# Why a record was parked: a closed set, so it can be a metric label. The parking record's reason header says more.
ParkReason = Literal["rejected", "retry_budget_exhausted", "unsigned", "unreadable"]
# Why one attempt failed (a metric label).
FailureKind = Literal["status_3xx", "status_4xx", "status_408", "status_429", "status_5xx", "timeout", "connection"]


class Selection(enum.Enum):
    """What a destination does with one journal record."""

    DELIVER = "deliver"
    SKIP = "skip"  # not a webhook POST (an outbound report, an event envelope), or none of the wanted fields
    UNREADABLE = "unreadable"  # fields are wanted but the body's changes cannot be read: parked, never guessed


def webhook_fields(raw: bytes) -> frozenset[str] | None:
    """The ``field`` of every change of every entry of a webhook body (``messages``, ``message_template_status_update``
    …), or None when the body is not an object with a list of entries. Reads the bytes; never changes them."""
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    entries = body.get("entry") if isinstance(body, dict) else None
    if not isinstance(entries, list):
        return None
    fields: set[str] = set()
    for entry in entries:
        changes = entry.get("changes") if isinstance(entry, dict) else None
        for change in changes if isinstance(changes, list) else ():
            field = change.get("field") if isinstance(change, dict) else None
            if isinstance(field, str):
                fields.add(field)
    return frozenset(fields)


def select(value: bytes | None, headers: Headers | None, wanted: Collection[str]) -> Selection:
    """Whether a destination wanting ``wanted`` fields (empty: every field) gets this journal record."""
    if value is None or header_value(headers, FORMAT_HEADER) != WEBHOOK_FORMAT:
        return Selection.SKIP
    if not wanted:
        return Selection.DELIVER
    fields = webhook_fields(value)
    if fields is None:
        return Selection.UNREADABLE
    return Selection.DELIVER if not fields.isdisjoint(wanted) else Selection.SKIP


def delivery_headers(
    value: bytes, headers: Headers | None, *, secret: bytes | None, position: str
) -> dict[str, str] | None:
    """The HTTP headers of a delivery of ``value`` (see the module's docstring), or None when the record carries no
    Meta signature and the destination has no secret of its own: nothing a receiver could verify (parked)."""
    meta = header_value(headers, SIGNATURE_HEADER)
    out = {"Content-Type": "application/json", RECORD_POSITION: position}
    if secret is not None:
        out[HUB_SIGNATURE] = sign(value, secret)
        if meta is not None:
            out[META_SIGNATURE] = meta.decode("latin-1")
        return out
    if meta is None:
        return None
    out[HUB_SIGNATURE] = meta.decode("latin-1")
    return out


@dataclass(frozen=True, slots=True)
class Answer:
    """What one attempt's outcome means: delivered, to retry, or to park (``failure`` names the kind when not
    delivered)."""

    delivered: bool
    retry: bool
    failure: FailureKind | None


DELIVERED: Final = Answer(delivered=True, retry=False, failure=None)


def judge_status(status: int) -> Answer:
    """2xx is delivered. 408, 429 and 5xx are the receiver's trouble, retried. Any other status (a 4xx, a redirect —
    never followed: the bytes go to the configured URL only) will not change by retrying: parked."""
    if 200 <= status < 300:
        return DELIVERED
    if status == 408:
        return Answer(delivered=False, retry=True, failure="status_408")
    if status == 429:
        return Answer(delivered=False, retry=True, failure="status_429")
    if status >= 500:
        return Answer(delivered=False, retry=True, failure="status_5xx")
    if 300 <= status < 400:
        return Answer(delivered=False, retry=False, failure="status_3xx")
    return Answer(delivered=False, retry=False, failure="status_4xx")


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff with jitter, within a budget per record: retry ``n`` (1 for the first) waits
    ``min(max_s, initial_s * 2**(n-1))`` reduced by up to ``jitter`` at random, and no wait is made that would end
    more than ``budget_s`` after the record's first attempt (it is parked instead)."""

    initial_s: float
    max_s: float
    jitter: float
    budget_s: float

    def __post_init__(self) -> None:
        if not 0 < self.initial_s <= self.max_s:
            raise ValueError("backoff needs 0 < initial_s <= max_s")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")
        if self.budget_s < 0:
            raise ValueError("the retry budget must not be negative")

    def delay(self, retry_number: int, draw: float) -> float:
        """The wait before retry ``retry_number``; ``draw`` is a uniform random number in [0, 1)."""
        capped = min(self.max_s, self.initial_s * 2.0 ** min(retry_number - 1, 64))
        return capped * (1.0 - self.jitter * draw)

    def next_wait(self, retry_number: int, draw: float, elapsed_s: float) -> float | None:
        """The wait before retry ``retry_number`` when ``elapsed_s`` passed since the first attempt, or None when
        the budget does not allow it."""
        wait = self.delay(retry_number, draw)
        return wait if elapsed_s + wait <= self.budget_s else None
