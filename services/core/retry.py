"""The one retry policy of the project, and the classification of failures it acts on.

A failure is one of three kinds (:func:`classify`):

- ``OUTAGE``: a dependency is away, slow or overloaded — connection refused or lost, timeouts, S3 5xx and
  throttling, PostgreSQL shutting down or out of resources, Kafka not acknowledging — or a key-encryption key a
  person's key is wrapped by is not configured (``UnknownKek``: removed from the settings too early; the records
  are fine, the configuration is to fix). Retried with capped exponential backoff; nothing is committed meanwhile.
- ``POISON``: the store says the *data* is unacceptable — a PostgreSQL data exception (class 22: invalid text,
  a character the encoding cannot hold, a number out of range), a program limit (class 54: an index row too
  large), a constraint a value breaks (class 23), text Python cannot encode for the wire, an S3 4xx that is
  neither throttling nor an access or configuration problem. Retrying would fail the same way forever: the
  archiver isolates the record that carries it and sends only that record to the dead-letter topic.
- ``UNEXPECTED``: anything else, a bug or an unforeseen failure. Retried like an outage (a batch is never
  skipped on a guess), logged with its frames, and alerted on through the lag and not-committing alerts.

:class:`RetryPolicy` is a thin, typed layer over tenacity: the delays (``initial_s`` doubling up to ``max_s``,
with optional jitter), an optional attempt limit, and an injectable ``sleep`` — tests pass one that records
delays instead of waiting, services pass :func:`sleep_until_stopped` so that SIGTERM ends a retry at once.
Cancellation (``asyncio.CancelledError``) is never retried.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import ClassVar, TypeVar

import asyncpg
import tenacity

from services.core.crypto import UnknownKek

T = TypeVar("T")
Sleep = Callable[[float], Awaitable[None]]


class Failure(enum.Enum):
    OUTAGE = "outage"
    POISON = "poison"
    UNEXPECTED = "unexpected"


class DependencyUnavailable(Exception):
    """Base of the adapters' "try again later" errors (S3, Kafka); ``dependency`` names the server for metrics."""

    dependency: ClassVar[str] = "unknown"


class DataRefused(Exception):
    """Base of the adapters' "never with this data" errors; ``dependency`` names the server that refused."""

    dependency: ClassVar[str] = "unknown"


class Stopped(Exception):
    """The service was asked to stop while it waited to retry: the work was not done (and not committed)."""


# PostgreSQL error classes (SQLSTATE's first two characters) that say the data, not the server, is at fault.
POISON_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})


def classify(exc: BaseException) -> Failure:
    """What kind of failure ``exc`` is (see the module docstring)."""
    if isinstance(exc, DataRefused | UnicodeError):
        return Failure.POISON
    if isinstance(exc, asyncpg.PostgresError):
        sqlstate = getattr(exc, "sqlstate", None) or ""
        return Failure.POISON if sqlstate[:2] in POISON_SQLSTATE_CLASSES else Failure.OUTAGE
    if isinstance(exc, DependencyUnavailable | asyncpg.InterfaceError | OSError | TimeoutError | UnknownKek):
        return Failure.OUTAGE
    return Failure.UNEXPECTED


def dependency_of(exc: BaseException, default: str = "unexpected") -> str:
    """The dependency a failure came from, for the retry metric's bounded label."""
    if isinstance(exc, DependencyUnavailable | DataRefused):
        return exc.dependency
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError | OSError):
        return "postgres"
    if isinstance(exc, UnknownKek):
        return "keys"
    return default


@dataclass(frozen=True, slots=True)
class Attempt:
    """A failed attempt that will be retried: what failed, which attempt it was, and the wait before the next."""

    error: Exception
    number: int
    delay_s: float


def sleep_until_stopped(stop: asyncio.Event) -> Sleep:
    """A sleep that raises :class:`Stopped` as soon as ``stop`` is set (or is set already)."""

    async def sleep(seconds: float) -> None:
        if stop.is_set():
            raise Stopped
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), seconds)
        if stop.is_set():
            raise Stopped

    return sleep


def _never(_exc: Exception) -> bool:
    return False


def _not_poison(exc: Exception) -> bool:
    return classify(exc) is not Failure.POISON


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Capped exponential backoff: the n-th retry waits ``min(max_s, initial_s * 2**(n-1))``, reduced by up to
    ``jitter`` (a fraction) at random so that many clients do not retry in step. ``attempts`` bounds the tries,
    ``give_up_after_s`` the time from the first try to the last (a wait that would end past it is not made);
    with neither, the step is tried until it succeeds, its failure is not retryable, or the caller is cancelled."""

    initial_s: float = 0.2
    max_s: float = 10.0
    jitter: float = 0.0
    attempts: int | None = None
    give_up_after_s: float | None = None

    def __post_init__(self) -> None:
        if self.initial_s < 0 or self.max_s < self.initial_s:
            raise ValueError("a retry policy needs 0 <= initial_s <= max_s")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter is a fraction in [0, 1)")
        if self.attempts is not None and self.attempts < 1:
            raise ValueError("attempts must be at least 1 (or None: no limit)")
        if self.give_up_after_s is not None and self.give_up_after_s < 0:
            raise ValueError("give_up_after_s must not be negative (or None: no limit)")

    def delay(self, retry_number: int) -> float:
        """The wait before retry number ``retry_number`` (1 for the first retry), before jitter."""
        return float(min(self.max_s, self.initial_s * 2.0 ** min(retry_number - 1, 64)))

    async def run(
        self,
        step: Callable[[], Awaitable[T]],
        *,
        retry_on: Callable[[Exception], bool] = _not_poison,
        immediately: Callable[[Exception], bool] = _never,
        on_retry: Callable[[Attempt], None] | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> T:
        """Await ``step()`` until it returns; retry the failures ``retry_on`` accepts (by default all but poison),
        without waiting for those ``immediately`` accepts. The last failure propagates unchanged when it is not
        retryable or the attempts are spent; :class:`Stopped` propagates from a stop-aware ``sleep``.

        The first try is a plain await: building tenacity's state costs ≈24 µs, which the load generator and
        other per-request callers would pay on every call for nothing when the first try succeeds."""
        started = time.monotonic()
        try:
            return await step()
        except Exception as exc:
            if not retry_on(exc) or self.attempts == 1:
                raise
            first = exc

        def wait_after(failure: BaseException | None, number: int) -> float:
            if isinstance(failure, Exception) and immediately(failure):
                return 0.0
            delay = self.delay(number)
            return delay * (1 - random.uniform(0, self.jitter)) if self.jitter else delay

        async def pause(seconds: float) -> None:
            if seconds > 0:
                await sleep(seconds)

        delay = wait_after(first, 1)
        stops: list[tenacity.stop.stop_base] = []
        if self.give_up_after_s is not None:
            left = self.give_up_after_s - (time.monotonic() - started) - delay
            if left < 0:
                raise first
            stops.append(tenacity.stop_before_delay(left))
        if self.attempts is not None:
            stops.append(tenacity.stop_after_attempt(self.attempts - 1))
        if on_retry is not None:
            on_retry(Attempt(first, 1, delay))
        await pause(delay)

        # Tries 2, 3, … under tenacity: its attempt n is try n + 1.
        def wait(state: tenacity.RetryCallState) -> float:
            return wait_after(state.outcome.exception() if state.outcome else None, state.attempt_number + 1)

        def before_sleep(state: tenacity.RetryCallState) -> None:
            failure = state.outcome.exception() if state.outcome is not None else None
            if on_retry is not None and isinstance(failure, Exception):
                delay = state.next_action.sleep if state.next_action is not None else 0.0
                on_retry(Attempt(failure, state.attempt_number + 1, float(delay)))

        async def attempt() -> T:
            # tenacity calls a callable that is not a coroutine function synchronously and returns its result,
            # which for a lambda returning a coroutine would be that coroutine, never awaited.
            return await step()

        retrying = tenacity.AsyncRetrying(
            sleep=pause,
            stop=tenacity.stop_any(*stops) if stops else tenacity.stop_never,
            wait=wait,
            # Cancellation and other BaseExceptions are never retried: shutdown must not wait for a dependency.
            retry=tenacity.retry_if_exception(lambda exc: isinstance(exc, Exception) and retry_on(exc)),
            before_sleep=before_sleep,
            reraise=True,
        )
        return await retrying(attempt)
