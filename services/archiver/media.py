"""Media downloads through Meta's Graph API, on arrival (media ids in webhooks expire after 7 days).

``GET {base}/{media_id}`` with the business token → ``{"url", "mime_type", "sha256" (hex), "file_size"}``, then
``GET url`` with the same token → the bytes. The webhook's ``sha256`` is base64 of the SHA-256 (the media API's
is hex); both are checked.

Contract of :meth:`MediaFetcher.fetch`: never raises for HTTP or network trouble. Transient failures
(connection errors, timeouts, 429, 5xx, a checksum mismatch) are retried with exponential backoff up to
``attempts``; other 4xx (an expired id) end at once. The result says why it failed, in words that hold no
personal data, so the archiver can archive the message anyway and mark its media missing.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from typing import Any

import httpx

from services.core.retry import RetryPolicy

MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})


@dataclass(frozen=True, slots=True)
class MediaRef:
    media_id: str
    mime_type: str | None
    sha256: str | None


@dataclass(frozen=True, slots=True)
class MediaResult:
    media_id: str
    data: bytes | None
    mime_type: str | None
    attempts: int
    failure: str | None

    @property
    def ok(self) -> bool:
        return self.failure is None and self.data is not None


def media_ref(message_type: str | None, payload: object) -> MediaRef | None:
    """The media a message/echo/history payload refers to, or None (pure; never raises)."""
    if message_type not in MEDIA_TYPES or not isinstance(payload, dict):
        return None
    body = payload.get(message_type)
    if not isinstance(body, dict):
        return None
    media_id = body.get("id")
    if not isinstance(media_id, str) or not media_id:
        return None
    mime = body.get("mime_type")
    digest = body.get("sha256")
    return MediaRef(media_id, mime if isinstance(mime, str) else None, digest if isinstance(digest, str) else None)


def sha256_matches(data: bytes, expected: str | None) -> bool:
    """``expected`` as base64 (webhooks) or hex (media API); None means nothing to verify."""
    if not expected:
        return True
    digest = hashlib.sha256(data).digest()
    if len(expected) == 64:
        try:
            return bytes.fromhex(expected) == digest
        except ValueError:
            pass
    try:
        return base64.b64decode(expected, validate=True) == digest
    except (binascii.Error, ValueError):
        return False


class _Transient(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Final(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MediaFetcher:
    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        attempts: int = 3,
        backoff_s: float = 0.5,
        timeout_s: float = 30.0,
        max_bytes: int = 100 * 1024 * 1024,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.retry = RetryPolicy(initial_s=backoff_s, max_s=max(backoff_s, 30.0), attempts=max(1, attempts))
        self.max_bytes = max_bytes
        self._headers = {"authorization": f"Bearer {token}"}
        self._client = client or httpx.AsyncClient(timeout=timeout_s)
        self._owns_client = client is None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def fetch(self, ref: MediaRef) -> MediaResult:
        tries = 0

        async def attempt() -> tuple[bytes, str | None]:
            nonlocal tries
            tries += 1
            return await self._download(ref)

        try:
            data, mime = await self.retry.run(attempt, retry_on=lambda exc: isinstance(exc, _Transient))
        except (_Final, _Transient) as failure:
            return MediaResult(ref.media_id, None, ref.mime_type, tries, failure.reason)
        return MediaResult(ref.media_id, data, mime or ref.mime_type, tries, None)

    async def _download(self, ref: MediaRef) -> tuple[bytes, str | None]:
        try:
            answer = await self._client.get(f"{self.base_url}/{ref.media_id}", headers=self._headers)
            self._check(answer)
            try:
                info: Any = answer.json()
            except ValueError:
                raise _Final("bad metadata") from None
            url = info.get("url") if isinstance(info, dict) else None
            if not isinstance(url, str):
                raise _Final("bad metadata")
            chunks: list[bytes] = []
            size = 0
            async with self._client.stream("GET", url, headers=self._headers) as stream:
                self._check(stream)
                async for chunk in stream.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise _Final("too large")
                    chunks.append(chunk)
        except httpx.TimeoutException:
            raise _Transient("timeout") from None
        except httpx.TransportError:
            raise _Transient("connection error") from None
        data = b"".join(chunks)
        api_sha = info.get("sha256")
        if not sha256_matches(data, ref.sha256) or not sha256_matches(
            data, api_sha if isinstance(api_sha, str) else None
        ):
            raise _Transient("sha256 mismatch")
        mime = info.get("mime_type")
        return data, mime if isinstance(mime, str) else None

    @staticmethod
    def _check(answer: httpx.Response) -> None:
        status = answer.status_code
        if status == 429 or status >= 500:
            raise _Transient(f"http {status}")
        if status >= 400:
            raise _Final(f"http {status}")
