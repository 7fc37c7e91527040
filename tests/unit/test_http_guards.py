"""Pure pieces of the HTTP hardening: the sign-in throttle's window arithmetic, and the body limit middleware
driven as uvicorn drives it (ASGI messages)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.console.throttle import AttemptWindow, ThrottlePolicy, count_attempt, locked_for
from services.core.http import BodyLimit, Message, Receive, Scope, Send

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
POLICY = ThrottlePolicy(max_attempts=3, window_s=900, lockout_s=600)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@pytest.mark.parametrize(
    ("window", "now", "expected"),
    [
        pytest.param(None, at(0), AttemptWindow(attempts=1, window_started_at=at(0)), id="first attempt"),
        pytest.param(
            AttemptWindow(attempts=0, window_started_at=at(0)),
            at(5),
            AttemptWindow(attempts=1, window_started_at=at(0)),
            id="row just created, empty",
        ),
        pytest.param(
            AttemptWindow(attempts=2, window_started_at=at(0)),
            at(10),
            AttemptWindow(attempts=3, window_started_at=at(0)),
            id="last attempt of the allowance",
        ),
        pytest.param(
            AttemptWindow(attempts=3, window_started_at=at(0)),
            at(20),
            AttemptWindow(attempts=4, window_started_at=at(0), locked_until=at(620)),
            id="one past the allowance: locked",
        ),
        pytest.param(
            AttemptWindow(attempts=4, window_started_at=at(0), locked_until=at(620)),
            at(300),
            AttemptWindow(attempts=4, window_started_at=at(0), locked_until=at(620)),
            id="during the lockout: unchanged (not extended)",
        ),
        pytest.param(
            AttemptWindow(attempts=4, window_started_at=at(0), locked_until=at(620)),
            at(620),
            AttemptWindow(attempts=1, window_started_at=at(620)),
            id="lockout over: a new window",
        ),
        pytest.param(
            AttemptWindow(attempts=3, window_started_at=at(0)),
            at(900),
            AttemptWindow(attempts=1, window_started_at=at(900)),
            id="window over: a new window",
        ),
    ],
)
def test_count_attempt(window: AttemptWindow | None, now: datetime, expected: AttemptWindow) -> None:
    assert count_attempt(window, POLICY, now) == expected


@given(st.lists(st.floats(min_value=0, max_value=60), min_size=1, max_size=50))
def test_never_more_than_the_allowance_checked_per_window(gaps: list[float]) -> None:
    """Whatever the rhythm of the attempts, no window lets more than max_attempts through unlocked."""
    window: AttemptWindow | None = None
    now = T0
    admitted: dict[datetime, int] = {}
    for gap in gaps:
        now += timedelta(seconds=gap)
        window = count_attempt(window, POLICY, now)
        if locked_for(window, now) == 0:
            admitted[window.window_started_at] = admitted.get(window.window_started_at, 0) + 1
    assert all(count <= POLICY.max_attempts for count in admitted.values())


def test_locked_for() -> None:
    locked = AttemptWindow(attempts=4, window_started_at=at(0), locked_until=at(620))
    assert locked_for(locked, at(20)) == 600
    assert locked_for(locked, at(620)) == 0
    assert locked_for(AttemptWindow(attempts=1, window_started_at=at(0)), at(1)) == 0


# ------------------------------------------------------------------------------------------ BodyLimit


def reading_app(read: list[bytes]) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """An application that reads the whole body, as FastAPI does, then answers 200; ``read`` gets what it saw."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ConnectionResetError("client gone")  # what a framework does on a disconnect
            read.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def drive(
    limit: int, chunks: list[bytes], headers: list[tuple[bytes, bytes]]
) -> tuple[list[Message], list[bytes], int, int]:
    """(messages sent to the client, chunks the application read, chunks pulled from the client, refusals)."""
    sent: list[Message] = []
    read: list[bytes] = []
    pulled = 0
    refusals: list[int] = []

    async def receive() -> Message:
        nonlocal pulled
        pulled += 1
        return {"type": "http.request", "body": chunks[pulled - 1], "more_body": pulled < len(chunks)}

    async def send(message: Message) -> None:
        sent.append(message)

    middleware = BodyLimit(reading_app(read), limit, on_refused=lambda: refusals.append(1))
    scope: dict[str, Any] = {"type": "http", "method": "POST", "path": "/", "headers": headers}
    await middleware(scope, receive, send)
    return sent, read, pulled, len(refusals)


async def test_an_announced_body_over_the_limit_is_refused_unread() -> None:
    sent, read, pulled, refusals = await drive(100, [b"x" * 101], [(b"content-length", b"101")])
    assert (sent[0]["status"], pulled, read, refusals) == (413, 0, [], 1)
    assert (b"connection", b"close") in sent[0]["headers"]
    assert orjson.loads(sent[1]["body"]) == {"detail": "the request body exceeds 100 bytes"}


async def test_a_streamed_body_is_stopped_at_the_chunk_that_passes_the_limit() -> None:
    chunks = [b"x" * 40] * 10  # chunked: no Content-Length
    sent, read, pulled, refusals = await drive(100, chunks, [])
    assert [m.get("status") for m in sent if m["type"] == "http.response.start"] == [413]
    assert read == [b"x" * 40] * 2  # the third chunk, past 100 bytes, never reaches the application
    assert (pulled, refusals) == (3, 1)


async def test_a_body_within_the_limit_passes_untouched() -> None:
    sent, read, pulled, refusals = await drive(100, [b"x" * 50, b"y" * 50], [(b"content-length", b"100")])
    assert (sent[0]["status"], b"".join(read), pulled, refusals) == (200, b"x" * 50 + b"y" * 50, 2, 0)
