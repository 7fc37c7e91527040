"""Sign-in sessions of the console, kept in PostgreSQL (migrations 0010 and 0015).

The browser holds a random 256-bit session id in an HttpOnly, SameSite=Strict cookie; the table holds its SHA-256
(:func:`session_hash`), so a copy of the table signs nobody in. A session carries who signed in (the actor written to
the audit log) and their role, a CSRF token for its forms, the viewer's language and time zone, and the reasons
given for the conversations opened during the visit (a reason is asked once per conversation, then kept).

A session unused for ``idle_timeout_s``, or older than ``lifetime_s`` however busy, is gone: :meth:`SessionStore.touch`
does not find it, and the next sign-in deletes such rows. A session opened with a named token (the local demo) keeps
the fingerprint of that credential (services/console/auth.py), which the console checks against the configuration
at each request.

A session opened through the OpenID Connect provider (services/console/oidc.py, migration 0028) also keeps
:class:`ProviderLink`: digests of the provider's session id and subject (a back-channel logout names them), the
``acr`` of its last sign-in or step-up, when its roles were last read, and :class:`ProviderSecrets` (the refresh
token, the ID token, the person's display name, when they last stepped up) *sealed* with AES-256-GCM under a key
derived from the session id (:func:`sealing_key`). The database holds the id's SHA-256 only, so neither a copy of
the table nor a database administrator can open them; the browser's cookie brings the key with each request.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import asyncpg
import orjson
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from services.actions.layer import Operator
from services.core.vocabulary import Role


def new_secret() -> str:
    """A random token for a cookie or a form (URL-safe, 256 bits)."""
    return secrets.token_urlsafe(32)


def session_hash(session_id: str) -> bytes:
    return hashlib.sha256(session_id.encode()).digest()


def sealing_key(session_id: str) -> bytes:
    """The AES-256 key that seals a session's provider secrets: HKDF-SHA256 of the session id, which only the
    cookie holds (the table keeps its SHA-256, from which this key cannot be made)."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"wa-archive console session secrets v1")
    return hkdf.derive(session_id.encode())


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderSecrets:
    """What a provider session needs and the table may not hold in clear: the refresh token (roles are read again
    with it), the ID token (the hint of RP-initiated logout) and the name shown in the page header."""

    refresh_token: str | None = field(repr=False)
    id_token: str | None = field(repr=False)
    name: str = field(repr=False)
    # When the person last authenticated with the step-up's acr (seconds since the epoch), None if never.
    stepped_up_at: float | None = None

    def seal(self, key: bytes, session_hash: bytes) -> bytes:
        plain = orjson.dumps({"r": self.refresh_token, "i": self.id_token, "n": self.name, "s": self.stepped_up_at})
        nonce = secrets.token_bytes(12)
        return nonce + AESGCM(key).encrypt(nonce, plain, session_hash)

    @staticmethod
    def open(sealed: bytes, key: bytes, session_hash: bytes) -> ProviderSecrets | None:
        """The secrets, or None when they do not open (another session's row, altered bytes)."""
        try:
            data = orjson.loads(AESGCM(key).decrypt(sealed[:12], sealed[12:], session_hash))
        except (InvalidTag, ValueError, orjson.JSONDecodeError):
            return None
        stepped = data.get("s")
        return ProviderSecrets(
            refresh_token=data.get("r"),
            id_token=data.get("i"),
            name=str(data.get("n") or ""),
            stepped_up_at=float(stepped) if isinstance(stepped, int | float) else None,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ProviderLink:
    """How a session is tied to the provider (see the module docstring)."""

    sid_digest: bytes | None
    sub_digest: bytes
    acr: str | None
    roles_read_at: datetime
    secrets: ProviderSecrets


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
    provider: ProviderLink | None = None
    # The key that seals the provider secrets (derived from the cookie's id; in memory only).
    key: bytes = field(default=b"", repr=False)

    @property
    def display_name(self) -> str:
        """The name the page header shows: the provider's ``name`` claim, else the actor."""
        return (self.provider.secrets.name if self.provider else "") or self.operator.name

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

    async def create(
        self,
        operator: Operator,
        *,
        credential: bytes,
        locale: str,
        timezone: str,
        provider: ProviderLink | None = None,
    ) -> tuple[str, Session]:
        """A new session for ``operator``, opened with the named credential of this fingerprint or through the
        provider (``provider``, whose secrets are sealed here); returns the id for the cookie (never stored) and
        the session."""
        session_id = new_secret()
        key = sealing_key(session_id)
        session = Session(
            session_hash=session_hash(session_id),
            operator=operator,
            csrf_token=new_secret(),
            locale=locale,
            timezone=timezone,
            credential=credential,
            provider=provider,
            key=key,
        )
        sealed = provider.secrets.seal(key, session.session_hash) if provider else None
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(
                "DELETE FROM console_sessions WHERE last_seen_at < now() - make_interval(secs => $1)"
                " OR created_at < now() - make_interval(secs => $2)",
                self.idle_timeout_s,
                self.lifetime_s,
            )
            await conn.execute(
                "INSERT INTO console_sessions (session_hash, actor, role, csrf_token, locale, timezone, credential,"
                " provider_sid, provider_sub, sealed, acr, roles_read_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
                session.session_hash,
                operator.name,
                operator.role,
                session.csrf_token,
                locale,
                timezone,
                credential,
                provider.sid_digest if provider else None,
                provider.sub_digest if provider else None,
                sealed,
                provider.acr if provider else None,
                provider.roles_read_at if provider else None,
            )
        return session_id, session

    async def touch(self, session_id: str) -> Session | None:
        """The live session with this id, its idle clock restarted; None if unknown, idle too long, or older than
        the absolute lifetime (a busy session ends then too)."""
        row = await self.pool.fetchrow(
            "UPDATE console_sessions SET last_seen_at = now() WHERE session_hash = $1"
            " AND last_seen_at >= now() - make_interval(secs => $2)"
            " AND created_at >= now() - make_interval(secs => $3)"
            " RETURNING actor, role, csrf_token, locale, timezone, reasons::text AS reasons, credential,"
            " provider_sid, provider_sub, sealed, acr, roles_read_at",
            session_hash(session_id),
            self.idle_timeout_s,
            self.lifetime_s,
        )
        if row is None:
            return None
        role: Role = row["role"]
        digest = session_hash(session_id)
        key = sealing_key(session_id)
        provider: ProviderLink | None = None
        if row["provider_sub"] is not None:
            opened = ProviderSecrets.open(bytes(row["sealed"] or b""), key, digest)
            if opened is None:  # not this session's secrets: treat the session as gone
                return None
            provider = ProviderLink(
                sid_digest=bytes(row["provider_sid"]) if row["provider_sid"] is not None else None,
                sub_digest=bytes(row["provider_sub"]),
                acr=row["acr"],
                roles_read_at=row["roles_read_at"],
                secrets=opened,
            )
        return Session(
            session_hash=digest,
            operator=Operator(row["actor"], role),
            csrf_token=row["csrf_token"],
            locale=row["locale"],
            timezone=row["timezone"],
            reasons=_reasons(row["reasons"]),
            credential=bytes(row["credential"]),
            provider=provider,
            key=key,
        )

    async def claim_reread(self, session: Session, every_s: float) -> bool:
        """Whether this request is the one to read the session's roles again: True for one request once
        ``every_s`` have passed since the last read (concurrent requests of the session see False and go on with
        the role they have, so one refresh token is spent once)."""
        claimed = await self.pool.fetchval(
            "UPDATE console_sessions SET roles_read_at = now() WHERE session_hash = $1"
            " AND roles_read_at < now() - make_interval(secs => $2) RETURNING true",
            session.session_hash,
            every_s,
        )
        return bool(claimed)

    async def reread(self, session: Session, role: Role, secrets_: ProviderSecrets) -> Session:
        """The session with the role and secrets the provider gave at a refresh (sealed again)."""
        sealed = secrets_.seal(session.key, session.session_hash)
        await self.pool.execute(
            "UPDATE console_sessions SET role = $2, sealed = $3 WHERE session_hash = $1",
            session.session_hash,
            role,
            sealed,
        )
        link = session.provider
        assert link is not None  # a reread is for a provider's session only
        return replace(
            session,
            operator=Operator(session.operator.name, role),
            provider=replace(link, secrets=secrets_),
        )

    async def delete_provider_sessions(
        self, *, sid_digest: bytes | None, sub_digest: bytes | None, begun_before: datetime
    ) -> int:
        """Delete the sessions of a provider session (``sid_digest``), or of a provider account (``sub_digest``
        when no sid is given), begun before ``begun_before``; returns how many.

        The cut-off makes a logout token worth one logout: replayed later (it has no ``exp``, and the provider may
        deliver it twice), it ends nothing begun after it was issued, so the person's new sign-in survives. The
        caller gives the token's ``iat`` plus the clock leeway (the provider's clock and the database's differ)."""
        if sid_digest is not None:
            query = "DELETE FROM console_sessions WHERE provider_sid = $1 AND created_at < $2"
        else:
            query = "DELETE FROM console_sessions WHERE provider_sub = $1 AND created_at < $2"
        status = await self.pool.execute(query, sid_digest if sid_digest is not None else sub_digest, begun_before)
        return int(status.split()[-1])

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
