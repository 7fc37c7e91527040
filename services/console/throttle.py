"""Sign-in throttling of the console: a few attempts per account name and per client address, then a lockout.

An attempt is counted *before* its credentials are checked, in PostgreSQL (migration 0015), so that guesses sent
in parallel or spread over the console's replicas are all counted; a sign-in that succeeds takes its own attempt
back from its address and clears its name. When either count has used its window's allowance the attempt is refused
without checking the credentials (the correct token is refused too during a lockout, so a lockout cannot be used
to confirm a guess), until the lockout ends.

The per-name limit protects an account from a distributed guess; the per-address limit stops one client from
trying many names. A lockout by name can be triggered by anyone who knows the name: it delays that person's
sign-in by ``lockout_s`` at most, never more, which is the usual price of bounding guesses.

Keys are HMAC-SHA256 under the pepper of ``"name:<name>"`` and ``"address:<ip>"``: no name or address in clear in
the table, and a copy of it cannot be matched against a list of addresses without the pepper.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

import asyncpg

from services.core.db import Connection

ThrottledBy = Literal["name", "address"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ThrottlePolicy:
    """``max_attempts`` in a window of ``window_s``; the attempt after them locks for ``lockout_s``."""

    max_attempts: int
    window_s: float
    lockout_s: float


@dataclass(frozen=True, kw_only=True, slots=True)
class AttemptWindow:
    attempts: int
    window_started_at: datetime
    locked_until: datetime | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Admission:
    """The answer to one attempt: ``locked_by`` is None when the credentials may be checked."""

    locked_by: ThrottledBy | None
    retry_after_s: float = 0.0

    @property
    def admitted(self) -> bool:
        return self.locked_by is None


def count_attempt(window: AttemptWindow | None, policy: ThrottlePolicy, now: datetime) -> AttemptWindow:
    """The window after one more attempt at ``now``. A lockout that is running stays as it is; one that ended, or a
    window that ran out, starts a new window; the attempt past ``max_attempts`` locks for ``lockout_s``."""
    if window is not None and window.locked_until is not None and window.locked_until > now:
        return window
    if (
        window is None
        or window.locked_until is not None
        or now - window.window_started_at >= timedelta(seconds=policy.window_s)
    ):
        return AttemptWindow(attempts=1, window_started_at=now)
    attempts = window.attempts + 1
    if attempts > policy.max_attempts:
        return replace(window, attempts=attempts, locked_until=now + timedelta(seconds=policy.lockout_s))
    return replace(window, attempts=attempts)


def locked_for(window: AttemptWindow, now: datetime) -> float:
    """Seconds the window's lockout still runs (0 when it is not locked)."""
    if window.locked_until is None or window.locked_until <= now:
        return 0.0
    return (window.locked_until - now).total_seconds()


class SigninThrottle:
    """The attempt windows of names and addresses, in PostgreSQL (table ``console_signin_throttle``)."""

    def __init__(
        self, pool: asyncpg.Pool, pepper: bytes, *, by_name: ThrottlePolicy, by_address: ThrottlePolicy
    ) -> None:
        self.pool = pool
        self._pepper = pepper
        self.policies: dict[ThrottledBy, ThrottlePolicy] = {"name": by_name, "address": by_address}

    def key(self, kind: ThrottledBy, value: str) -> bytes:
        message = b"wa-archive console sign-in\x00" + kind.encode() + b"\x00" + value.encode("utf-8", "replace")
        return hmac.new(self._pepper, message, hashlib.sha256).digest()

    async def attempt(self, name: str, address: str, now: datetime) -> Admission:
        """Count an attempt for ``name`` from ``address``; the admission says whether to check its credentials."""
        keys: dict[ThrottledBy, bytes] = {"name": self.key("name", name), "address": self.key("address", address)}
        longest = max(max(p.window_s, p.lockout_s) for p in self.policies.values())
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM console_signin_throttle WHERE window_started_at < $1"
                " AND (locked_until IS NULL OR locked_until < $2)",
                now - timedelta(seconds=longest),
                now,
            )
            # Rows created (empty) and then locked in key order: two first attempts at once are both counted, and
            # two attempts never wait for each other's second row.
            await conn.execute(
                "INSERT INTO console_signin_throttle (key, attempts, window_started_at)"
                " SELECT k, 0, $2 FROM unnest($1::bytea[]) AS k ORDER BY k ON CONFLICT (key) DO NOTHING",
                sorted(keys.values()),
                now,
            )
            rows = await conn.fetch(
                "SELECT key, attempts, window_started_at, locked_until FROM console_signin_throttle"
                " WHERE key = ANY($1::bytea[]) ORDER BY key FOR UPDATE",
                sorted(keys.values()),
            )
            found = {
                bytes(row["key"]): AttemptWindow(
                    attempts=row["attempts"],
                    window_started_at=row["window_started_at"],
                    locked_until=row["locked_until"],
                )
                for row in rows
            }
            locked_by: ThrottledBy | None = None
            retry_after = 0.0
            for kind, key in keys.items():
                window = count_attempt(found.get(key), self.policies[kind], now)
                waiting = locked_for(window, now)
                if waiting > retry_after:
                    locked_by, retry_after = kind, waiting
                await self._store(conn, key, window)
        return Admission(locked_by=locked_by, retry_after_s=retry_after)

    async def succeeded(self, name: str, address: str) -> None:
        """A sign-in admitted by :meth:`attempt` succeeded: its name starts afresh, its address gets the attempt
        back (so that people signing in from one office do not use up its allowance)."""
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("DELETE FROM console_signin_throttle WHERE key = $1", self.key("name", name))
            await conn.execute(
                "UPDATE console_signin_throttle SET attempts = greatest(attempts - 1, 0) WHERE key = $1",
                self.key("address", address),
            )

    @staticmethod
    async def _store(conn: Connection, key: bytes, window: AttemptWindow) -> None:
        await conn.execute(
            "INSERT INTO console_signin_throttle (key, attempts, window_started_at, locked_until)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (key) DO UPDATE SET attempts = EXCLUDED.attempts,"
            " window_started_at = EXCLUDED.window_started_at, locked_until = EXCLUDED.locked_until",
            key,
            window.attempts,
            window.window_started_at,
            window.locked_until,
        )
