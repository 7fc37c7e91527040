"""Sign-in sessions of the console, kept in PostgreSQL (migrations 0010 and 0015).

The browser holds a random 256-bit session id in an HttpOnly, SameSite=Strict cookie; the table holds its SHA-256
(:func:`session_hash`), so a copy of the table signs nobody in. A session carries who signed in (the actor written to
the audit log) and their role, a CSRF token for its forms, the viewer's language and time zone, and the reasons
given for the conversations opened during the visit (a reason is asked once per conversation, then kept).

A session unused for ``idle_timeout_s``, or older than ``lifetime_s`` however busy, is gone: :meth:`SessionStore.touch`
does not find it, and the next sign-in deletes such rows. A session also keeps the fingerprint of the credential
that opened it (services/console/auth.py), which the console checks against the configuration at each request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import orjson

from services.actions.layer import Operator
from services.core.vocabulary import Role


def new_secret() -> str:
    """A random token for a cookie or a form (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def same_token(offered: str | None, expected: str) -> bool:
    """Constant-time comparison of a form's token with the session's."""
    return offered is not None and hmac.compare_digest(offered.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class OpenedConversation:
    """A conversation the viewer gave a reason for: the reason, the optional case reference, and the pseudonyms the
    conversation covers (the person's linked identifiers), so that its media can be checked against it."""

    reason: str
    case_ref: str | None
    subject_refs: tuple[str, ...]

    def audit_reason(self) -> str:
        # The audit log is read in any language: the case reference in brackets, not after an English word.
        return self.reason if not self.case_ref else f"{self.reason} [{self.case_ref}]"


@dataclass(frozen=True, slots=True, kw_only=True)
class Session:
    session_hash: bytes
    operator: Operator
    csrf_token: str
    locale: str
    timezone: str
    reasons: dict[str, OpenedConversation] = field(default_factory=dict)
    credential: bytes = b""

    def opened_for(self, subject_ref: str) -> OpenedConversation | None:
        """The opened conversation that covers ``subject_ref`` (as its own pseudonym or a linked one)."""
        found = self.reasons.get(subject_ref)
        if found is not None:
            return found
        return next((c for c in self.reasons.values() if subject_ref in c.subject_refs), None)


def _reasons(raw: Any) -> dict[str, OpenedConversation]:
    data = orjson.loads(raw) if isinstance(raw, str | bytes) else (raw or {})
    return {
        ref: OpenedConversation(entry["reason"], entry.get("case_ref"), tuple(entry.get("subject_refs", ())))
        for ref, entry in data.items()
    }


class SessionStore:
    def __init__(self, pool: asyncpg.Pool, idle_timeout_s: float, lifetime_s: float) -> None:
        self.pool = pool
        self.idle_timeout_s = idle_timeout_s
        self.lifetime_s = lifetime_s

    async def create(self, operator: Operator, *, credential: bytes, locale: str, timezone: str) -> tuple[str, Session]:
        """A new session for ``operator`` opened with the credential of this fingerprint; returns the id for the
        cookie (never stored) and the session."""
        session_id = new_secret()
        session = Session(
            session_hash=session_hash(session_id),
            operator=operator,
            csrf_token=new_secret(),
            locale=locale,
            timezone=timezone,
            credential=credential,
        )
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM console_sessions WHERE last_seen_at < now() - make_interval(secs => $1)"
                " OR created_at < now() - make_interval(secs => $2)",
                self.idle_timeout_s,
                self.lifetime_s,
            )
            await conn.execute(
                "INSERT INTO console_sessions (session_hash, actor, role, csrf_token, locale, timezone, credential)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                session.session_hash,
                operator.name,
                operator.role,
                session.csrf_token,
                locale,
                timezone,
                credential,
            )
        return session_id, session

    async def touch(self, session_id: str) -> Session | None:
        """The live session with this id, its idle clock restarted; None if unknown, idle too long, or older than
        the absolute lifetime (a busy session ends then too)."""
        row = await self.pool.fetchrow(
            "UPDATE console_sessions SET last_seen_at = now() WHERE session_hash = $1"
            " AND last_seen_at >= now() - make_interval(secs => $2)"
            " AND created_at >= now() - make_interval(secs => $3)"
            " RETURNING actor, role, csrf_token, locale, timezone, reasons::text AS reasons, credential",
            session_hash(session_id),
            self.idle_timeout_s,
            self.lifetime_s,
        )
        if row is None:
            return None
        role: Role = row["role"]
        return Session(
            session_hash=session_hash(session_id),
            operator=Operator(row["actor"], role),
            csrf_token=row["csrf_token"],
            locale=row["locale"],
            timezone=row["timezone"],
            reasons=_reasons(row["reasons"]),
            credential=bytes(row["credential"]),
        )

    async def remember_reason(self, session: Session, subject_ref: str, opened: OpenedConversation) -> None:
        entry = {"reason": opened.reason, "case_ref": opened.case_ref, "subject_refs": list(opened.subject_refs)}
        await self.pool.execute(
            "UPDATE console_sessions SET reasons = reasons || jsonb_build_object($2::text, $3::jsonb)"
            " WHERE session_hash = $1",
            session.session_hash,
            subject_ref,
            orjson.dumps(entry).decode(),
        )

    async def set_locale(self, session: Session, locale: str) -> None:
        await self.pool.execute(
            "UPDATE console_sessions SET locale = $2 WHERE session_hash = $1", session.session_hash, locale
        )

    async def delete(self, session: Session) -> None:
        await self.pool.execute("DELETE FROM console_sessions WHERE session_hash = $1", session.session_hash)
