"""The one retry policy: delays, limits, the classification of failures, cancellation and stop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from botocore.exceptions import ClientError

from services.core.bucket import StorageRefused, StorageUnavailable, _is_refusal
from services.core.crypto import KeyRingError, UnknownKek
from services.core.kafka import ProduceUnavailable
from services.core.retry import Attempt, Failure, RetryPolicy, Stopped, classify, dependency_of, sleep_until_stopped

pytestmark = pytest.mark.unit


class Clock:
    """An injected sleep: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


def failing(errors: list[Exception], result: str = "done") -> Callable[[], asyncio.Future[str]]:
    """A step that raises each of ``errors`` in turn, then returns ``result``."""
    calls = iter(errors)

    async def step() -> str:
        error = next(calls, None)
        if error is not None:
            raise error
        return result

    return step  # type: ignore[return-value]


def pg_error(cls: type[asyncpg.PostgresError]) -> asyncpg.PostgresError:
    return cls("refused")


def s3_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, "PutObject")  # type: ignore[typeddict-item]


@pytest.mark.parametrize(
    ("error", "failure", "dependency"),
    [
        pytest.param(
            pg_error(asyncpg.CharacterNotInRepertoireError), Failure.POISON, "postgres", id="pg: invalid text"
        ),
        pytest.param(
            pg_error(asyncpg.NumericValueOutOfRangeError), Failure.POISON, "postgres", id="pg: number out of range"
        ),
        pytest.param(pg_error(asyncpg.ProgramLimitExceededError), Failure.POISON, "postgres", id="pg: index row size"),
        pytest.param(pg_error(asyncpg.CheckViolationError), Failure.POISON, "postgres", id="pg: check violation"),
        pytest.param(pg_error(asyncpg.CannotConnectNowError), Failure.OUTAGE, "postgres", id="pg: starting up"),
        pytest.param(pg_error(asyncpg.AdminShutdownError), Failure.OUTAGE, "postgres", id="pg: shutting down"),
        pytest.param(pg_error(asyncpg.DeadlockDetectedError), Failure.OUTAGE, "postgres", id="pg: deadlock"),
        pytest.param(pg_error(asyncpg.TooManyConnectionsError), Failure.OUTAGE, "postgres", id="pg: out of slots"),
        pytest.param(asyncpg.InterfaceError("connection is closed"), Failure.OUTAGE, "postgres", id="pg: closed"),
        pytest.param(ConnectionRefusedError(), Failure.OUTAGE, "postgres", id="connection refused"),
        pytest.param(TimeoutError(), Failure.OUTAGE, "postgres", id="timeout"),
        pytest.param(StorageUnavailable("503"), Failure.OUTAGE, "s3", id="s3: unavailable"),
        pytest.param(StorageRefused("InvalidArgument"), Failure.POISON, "s3", id="s3: refused"),
        pytest.param(ProduceUnavailable("no ack"), Failure.OUTAGE, "kafka", id="kafka: no ack"),
        pytest.param(UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogate"), Failure.POISON, "unexpected", id="text"),
        pytest.param(UnknownKek("old-kek"), Failure.OUTAGE, "keys", id="keys: a KEK removed too early"),
        pytest.param(KeyRingError("key was shredded"), Failure.UNEXPECTED, "unexpected", id="keys: shredded"),
        pytest.param(KeyError("bug"), Failure.UNEXPECTED, "unexpected", id="a bug"),
    ],
)
def test_classification(error: Exception, failure: Failure, dependency: str) -> None:
    assert classify(error) is failure
    assert dependency_of(error) == dependency


@pytest.mark.parametrize(
    ("code", "status", "refused"),
    [
        pytest.param("InvalidArgument", 400, True, id="invalid argument"),
        pytest.param("KeyTooLongError", 400, True, id="key too long"),
        pytest.param("EntityTooLarge", 400, True, id="entity too large"),
        pytest.param("AccessDenied", 403, False, id="access denied is configuration"),
        pytest.param("NoSuchBucket", 404, False, id="no bucket is configuration"),
        pytest.param("SlowDown", 429, False, id="throttling"),
        pytest.param("RequestTimeTooSkewed", 400, False, id="clock skew is configuration"),
        pytest.param("InternalError", 500, False, id="server error"),
    ],
)
def test_s3_refusals_are_the_4xx_about_the_request(code: str, status: int, refused: bool) -> None:
    assert _is_refusal(s3_error(code, status)) is refused


@pytest.mark.parametrize(
    ("policy", "expected"),
    [
        pytest.param(
            RetryPolicy(initial_s=0.2, max_s=10), [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10, 10], id="doubling capped"
        ),
        pytest.param(RetryPolicy(initial_s=1, max_s=1), [1] * 8, id="constant"),
        pytest.param(RetryPolicy(initial_s=0, max_s=0), [0] * 8, id="no wait"),
    ],
)
def test_delays(policy: RetryPolicy, expected: list[float]) -> None:
    assert [policy.delay(n) for n in range(1, 9)] == pytest.approx(expected)
    assert policy.delay(10_000) == policy.max_s, "no overflow after many retries"


async def test_outages_are_retried_with_backoff_until_the_step_succeeds() -> None:
    clock = Clock()
    seen: list[Attempt] = []
    errors: list[Exception] = [StorageUnavailable("1"), ConnectionResetError(), StorageUnavailable("3")]
    result = await RetryPolicy(initial_s=1, max_s=3).run(failing(errors), on_retry=seen.append, sleep=clock)
    assert result == "done"
    assert clock.waits == [1, 2, 3]
    assert [a.number for a in seen] == [1, 2, 3]
    assert [type(a.error) for a in seen] == [StorageUnavailable, ConnectionResetError, StorageUnavailable]
    assert [a.delay_s for a in seen] == [1, 2, 3]


async def test_poison_is_not_retried() -> None:
    clock = Clock()
    with pytest.raises(asyncpg.CharacterNotInRepertoireError):
        await RetryPolicy().run(failing([pg_error(asyncpg.CharacterNotInRepertoireError)]), sleep=clock)
    assert clock.waits == []


async def test_attempts_bound_the_tries_and_the_last_error_propagates() -> None:
    clock = Clock()
    errors: list[Exception] = [StorageUnavailable(str(n)) for n in range(5)]
    with pytest.raises(StorageUnavailable, match="2"):
        await RetryPolicy(initial_s=0.5, max_s=5, attempts=3).run(failing(errors), sleep=clock)
    assert clock.waits == [0.5, 1.0]


async def test_immediate_retries_do_not_wait() -> None:
    clock = Clock()
    errors: list[Exception] = [LookupError("again"), StorageUnavailable("down")]
    await RetryPolicy(initial_s=1, max_s=1).run(
        failing(errors), immediately=lambda exc: isinstance(exc, LookupError), sleep=clock
    )
    assert clock.waits == [1], "only the outage waited"


async def test_jitter_only_shortens_the_wait() -> None:
    clock = Clock()
    errors: list[Exception] = [StorageUnavailable("x")] * 20
    await RetryPolicy(initial_s=4, max_s=4, jitter=0.5).run(failing(errors), sleep=clock)
    assert all(2 <= wait <= 4 for wait in clock.waits)
    assert len(set(clock.waits)) > 1


async def test_cancellation_is_never_retried() -> None:
    async def step() -> None:
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        await RetryPolicy().run(step, retry_on=lambda exc: True, sleep=Clock())


async def test_a_stop_ends_the_wait_at_once() -> None:
    stop = asyncio.Event()
    errors: list[Exception] = [StorageUnavailable("down")] * 1000
    task = asyncio.create_task(
        RetryPolicy(initial_s=30, max_s=30).run(failing(errors), sleep=sleep_until_stopped(stop))
    )
    await asyncio.sleep(0.05)
    assert not task.done(), "waiting 30 s before the next try"
    started = asyncio.get_running_loop().time()
    stop.set()
    with pytest.raises(Stopped):
        await task
    assert asyncio.get_running_loop().time() - started < 1


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param({"initial_s": -1}, id="negative delay"),
        pytest.param({"initial_s": 5, "max_s": 1}, id="cap below the first delay"),
        pytest.param({"jitter": 1.0}, id="jitter of a whole delay"),
        pytest.param({"attempts": 0}, id="no attempt at all"),
    ],
)
def test_policies_that_make_no_sense_are_refused(policy: dict[str, float]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 — each message is checked by reading the policy
        RetryPolicy(**policy)  # type: ignore[arg-type]


async def test_a_lambda_returning_a_coroutine_is_awaited_and_retried() -> None:
    clock = Clock()
    step = failing([StorageUnavailable("once")], result="awaited")
    assert await RetryPolicy().run(lambda: step(), sleep=clock) == "awaited"  # noqa: PLW0108 — what is tested
    assert clock.waits == [0.2]
