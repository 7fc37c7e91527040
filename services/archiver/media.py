"""Media downloads through Meta's Graph API, on arrival (a media id in a webhook lives 30 days, a download URL minutes).

``GET {base}/{media_id}`` with the business token → ``{"url", "mime_type", "sha256" (hex), "file_size"}``, then
``GET url`` with the same token → the bytes. The webhook's ``sha256`` is base64 of the SHA-256 (the media API's
is hex); both are checked.

The bytes are never held whole: they stream into a :class:`MediaSink` (the archiver's seals them chunk by chunk
into a multipart upload, services/archiver/media_store.py) as they arrive, hashed on the way, and the sink is
finished only once both checksums match (aborted otherwise). Before the download, the fetch reserves from the
process's :class:`~services.core.budget.ByteBudget` what the sink may hold for a file of the announced size, so
the memory of all downloads together stays within the budget however many and however large they are.

Egress (:class:`Egress`): the Graph API and the download are reached over https only (plain http only to a
loopback address, and only when the local override is on: the Graph API stand-in of the demo and the tests); the
download URL the Graph API returns must name a host of the allow-list (Meta's CDN by default), so the bearer
token goes nowhere else; a media id must be URL-safe before it enters the path; redirects are not followed.

Contract of :meth:`MediaFetcher.fetch`: never raises, whatever the media id, the Graph API's answer or the network
do; only cancellation and the sink's own errors (the caller's storage) propagate. Transient failures (connection
errors, timeouts, 429, 5xx, a checksum mismatch) are retried with exponential backoff up to ``attempts``; other 4xx
(an expired id), a refused URL and a bad media id end at once. The result says why it failed, in words from a
fixed set that hold no personal data (:data:`FAILURE_REASONS`), so the archiver can archive the message anyway and
mark its media missing.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import ipaddress
import logging
import re
import socket
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Final, Protocol

import httpx

from services.core.budget import ByteBudget
from services.core.retry import RetryPolicy

log = logging.getLogger("wa_archive.archiver")

MEDIA_TYPES = frozenset({"image", "audio", "video", "document", "sticker"})

# Where Meta's media download URLs point (``lookaside.fbsbx.com/whatsapp_business/attachments/?mid=…``) and its
# CDNs: exact host names, or ``*.`` and a domain for any host below it (not the domain itself).
META_MEDIA_HOSTS: Final = ("lookaside.fbsbx.com", "*.fbcdn.net", "*.whatsapp.net")
LOOPBACK_HOSTS: Final = frozenset({"127.0.0.1", "::1", "localhost"})
# Meta's media ids are digits; letters, '_' and '-' are let through (other Graph API versions, stand-ins), nothing
# that could change the path or the query ('/', '.', '%', '?', '#', spaces, control characters).
MEDIA_ID: Final = re.compile(r"[0-9A-Za-z_-]{1,128}")

# Every reason a fetch can fail with (an HTTP status is added as "http NNN"): a bounded label set.
FAILURE_REASONS: Final = frozenset(
    {
        "bad media id",
        "bad metadata",
        "url not https",
        "url host not allowed",
        "bad url",
        "too large",
        "timeout",
        "connection error",
        "sha256 mismatch",
        "size mismatch",
        "unexpected error",
    }
)


@dataclass(frozen=True, slots=True)
class MediaRef:
    media_id: str
    mime_type: str | None
    sha256: str | None
    # A medium the business sent by ``link`` (a URL Meta fetched): downloaded from there, without any token.
    link: str | None = None


@dataclass(frozen=True, slots=True)
class MediaResult:
    """What became of one medium: archived (``size_bytes`` of it went into the sink, which was finished) or not,
    and why (``failure``, one of :data:`FAILURE_REASONS` or ``http NNN``)."""

    media_id: str
    mime_type: str | None
    attempts: int
    failure: str | None
    size_bytes: int | None = None

    @property
    def ok(self) -> bool:
        return self.failure is None


class MediaSink(Protocol):
    """Where one download's bytes go, in order. :meth:`finish` makes them durable (after the checksums matched);
    :meth:`abort` drops what was written (a failed or mismatched download). Errors they raise are the caller's
    (storage): the fetcher passes them on after aborting."""

    async def write(self, data: bytes) -> None: ...

    async def finish(self) -> None: ...

    async def abort(self) -> None: ...


class MediaStore(Protocol):
    """Makes the sink of one medium, and says how much memory such a sink may hold."""

    def memory(self, declared_size: int | None) -> int:
        """Bytes a sink may hold at most for a file of ``declared_size`` bytes (None: not announced)."""
        ...

    def open(self, mime_type: str | None) -> MediaSink:
        """A fresh sink for one attempt (``mime_type`` from the Graph API, else the webhook)."""
        ...


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


def outbound_media_ref(message_type: str | None, payload: object, message_id: str | None) -> MediaRef | None:
    """The medium an outbound event's send used, when Meta accepted the send (``message_id``, the wamid): by id (an
    upload of the business, ``POST /{phone-number-id}/media``), or by ``link`` (:attr:`MediaRef.link`). None for a
    send Meta refused, or no medium (pure; never raises)."""
    if message_id is None or not isinstance(payload, dict):
        return None
    request = payload.get("request")
    by_id = media_ref(message_type, request)
    if by_id is not None:
        return by_id
    body = request.get(message_type) if isinstance(request, dict) and message_type in MEDIA_TYPES else None
    link = body.get("link") if isinstance(body, dict) else None
    if not isinstance(link, str) or not link:
        return None
    return MediaRef("link", None, None, link=link)


def sha256_matches(data: bytes, expected: str | None) -> bool:
    """``expected`` as base64 (webhooks) or hex (media API); None means nothing to verify."""
    return digest_matches(hashlib.sha256(data).digest(), expected)


def digest_matches(digest: bytes, expected: str | None) -> bool:
    """Whether the SHA-256 ``digest`` is ``expected``, as base64 (webhooks) or hex (media API); None: nothing to
    verify."""
    if not expected:
        return True
    if len(expected) == 64:
        try:
            return bytes.fromhex(expected) == digest
        except ValueError:
            pass
    try:
        return base64.b64decode(expected, validate=True) == digest
    except (binascii.Error, ValueError):
        return False


def host_allowed(host: str, patterns: tuple[str, ...]) -> bool:
    """Whether ``host`` (lower case) is one of ``patterns``: an exact name, or ``*.domain`` for any host below it."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


@dataclass(frozen=True, slots=True)
class Egress:
    """Where the media fetcher may go (pure; see the module docstring).

    ``download_hosts``: the hosts a download URL may name (:func:`host_allowed`); ``loopback_http``: the local
    override that lets plain http reach a loopback address (the Graph API stand-in), never for anything else."""

    download_hosts: tuple[str, ...] = META_MEDIA_HOSTS
    loopback_http: bool = False

    def refusal(self, url: str, *, check_host: bool = True) -> str | None:
        """Why ``url`` may not be requested (a reason of :data:`FAILURE_REASONS`), or None if it may.

        https on the default port, or http to a loopback host when ``loopback_http``; no user info; and with
        ``check_host`` a host on the allow-list. Never raises."""
        try:
            parsed = httpx.URL(url)
            host = parsed.host.lower()
        except (httpx.InvalidURL, TypeError, ValueError):
            return "bad url"
        if not host or parsed.userinfo:
            return "bad url"
        if parsed.scheme == "https":
            if parsed.port not in (None, 443):
                return "url host not allowed"
        elif not (parsed.scheme == "http" and self.loopback_http and host in LOOPBACK_HOSTS):
            return "url not https"
        if check_host and not host_allowed(host, self.download_hosts):
            return "url host not allowed"
        return None

    async def link_refusal(self, url: str) -> str | None:
        """Why a medium's ``link`` may not be fetched, or None: the rules of :meth:`refusal` but any host name, as
        long as every address it resolves to is public (not loopback, private, link-local, shared, reserved or
        multicast); a loopback host only with the local override. The check is made on the addresses resolved
        now; a name that resolves elsewhere a moment later (DNS rebinding) is left to the NetworkPolicy, which
        lets the archiver reach public addresses only."""
        refused = self.refusal(url, check_host=False)
        if refused is not None:
            return refused
        host = httpx.URL(url).host.lower()
        if self.loopback_http and host in LOOPBACK_HOSTS:
            return None
        try:
            found = await asyncio.get_running_loop().getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except OSError:
            return "connection error"
        addresses = {ipaddress.ip_address(str(entry[4][0]).split("%", 1)[0]) for entry in found}
        if not addresses or any(not address.is_global for address in addresses):
            return "url host not allowed"
        return None


class _Transient(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Final(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _SinkFailed(Exception):
    """The sink (the caller's storage) raised: not the download's failure, passed on as it is."""

    def __init__(self, error: Exception) -> None:
        super().__init__(type(error).__name__)
        self.error = error


# What httpx hands over per read: the download's own buffering, outside the sink's.
READ_BYTES: Final = 64 * 1024


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
        egress: Egress | None = None,
        budget: ByteBudget | None = None,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        """Raises ValueError when ``base_url`` itself is refused by ``egress`` (http to a non-loopback host, or
        without the local override)."""
        self.egress = egress or Egress()
        refused = self.egress.refusal(base_url, check_host=False)
        if refused is not None:
            raise ValueError(f"the Graph API base URL is refused: {refused}")
        self.base_url = base_url.rstrip("/")
        self.retry = RetryPolicy(initial_s=backoff_s, max_s=max(backoff_s, 30.0), attempts=max(1, attempts))
        self.max_bytes = max_bytes
        self.budget = budget or ByteBudget(256 * 1024 * 1024)
        self._headers = {"authorization": f"Bearer {token}"}
        # Redirects are not followed: the token would go to wherever a 3xx points.
        self._client = client or httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
        self._owns_client = client is None

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def fetch(self, ref: MediaRef, store: MediaStore) -> MediaResult:
        """Download the medium of ``ref`` into a sink of ``store``, or say why not (see the module docstring).
        Never raises but for cancellation and what the sink raises."""
        tries = 0
        if not MEDIA_ID.fullmatch(ref.media_id):
            return MediaResult(ref.media_id, ref.mime_type, 0, "bad media id")

        async def attempt() -> tuple[str | None, int]:
            nonlocal tries
            tries += 1
            return await self._download(ref, store)

        try:
            mime, size = await self.retry.run(attempt, retry_on=lambda exc: isinstance(exc, _Transient))
        except (_Final, _Transient) as failure:
            return MediaResult(ref.media_id, ref.mime_type, tries, failure.reason)
        except _SinkFailed as failed:
            raise failed.error from None
        except Exception as exc:  # a bug or an answer nobody foresaw: the message is archived all the same
            log.warning("media download failed unexpectedly (%s)", type(exc).__name__)
            return MediaResult(ref.media_id, ref.mime_type, tries, "unexpected error")
        return MediaResult(ref.media_id, mime or ref.mime_type, tries, None, size)

    async def _download(self, ref: MediaRef, store: MediaStore) -> tuple[str | None, int]:
        if ref.link is not None:
            return await self._download_link(ref.link, ref, store)
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
            refused = self.egress.refusal(url)
            if refused is not None:
                # Never requested: the token must not reach a host off the allow-list.
                raise _Final(refused)
            declared = info.get("file_size")
            if not isinstance(declared, int) or isinstance(declared, bool) or declared < 0:
                declared = None
            if declared is not None and declared > self.max_bytes:
                raise _Final("too large")
            api_sha, mime = info.get("sha256"), info.get("mime_type")
            mime = mime if isinstance(mime, str) else ref.mime_type
            async with self.budget.reserve(store.memory(declared) + READ_BYTES):
                size = await self._stream(url, store.open(mime), ref, declared, api_sha)
        except httpx.TimeoutException:
            raise _Transient("timeout") from None
        except httpx.TransportError:
            raise _Transient("connection error") from None
        except httpx.InvalidURL:
            raise _Final("bad url") from None
        return mime, size

    async def _download_link(self, url: str, ref: MediaRef, store: MediaStore) -> tuple[str | None, int]:
        """A medium sent by link: the URL is the business's, so no token goes with it, and it must be a public
        address (:meth:`Egress.link_refusal`): never the cluster, a private network or the metadata service."""
        refused = await self.egress.link_refusal(url)
        if refused is not None:
            raise _Final(refused)
        try:
            async with self.budget.reserve(store.memory(None) + READ_BYTES):
                size = await self._stream(url, store.open(ref.mime_type), ref, None, None, token=False)
        except httpx.TimeoutException:
            raise _Transient("timeout") from None
        except httpx.TransportError:
            raise _Transient("connection error") from None
        except httpx.InvalidURL:
            raise _Final("bad url") from None
        return ref.mime_type, size

    async def _stream(
        self,
        url: str,
        sink: MediaSink,
        ref: MediaRef,
        declared: int | None,
        api_sha: object,
        *,
        token: bool = True,
    ) -> int:
        """Stream ``url`` into ``sink`` (with the bearer token only when ``token``) and finish it once the checksums
        match; abort it on any failure."""
        hasher = hashlib.sha256()
        size = 0
        try:
            async with self._client.stream("GET", url, headers=self._headers if token else None) as stream:
                self._check(stream)
                async for piece in stream.aiter_bytes(READ_BYTES):
                    size += len(piece)
                    if size > self.max_bytes:
                        raise _Final("too large")
                    if declared is not None and size > declared:
                        # The sink's memory was reserved for the announced size.
                        raise _Transient("size mismatch")
                    hasher.update(piece)
                    await _into(sink.write(piece))
            digest = hasher.digest()
            if not digest_matches(digest, ref.sha256) or not digest_matches(
                digest, api_sha if isinstance(api_sha, str) else None
            ):
                raise _Transient("sha256 mismatch")
            await _into(sink.finish())
        except BaseException:
            try:
                await asyncio.shield(sink.abort())
            except Exception as exc:  # the object was never completed, so nothing readable is left behind
                log.warning("could not abort a media upload (%s)", type(exc).__name__)
            raise
        return size

    @staticmethod
    def _check(answer: httpx.Response) -> None:
        status = answer.status_code
        if status == 429 or status >= 500:
            raise _Transient(f"http {status}")
        if not 200 <= status < 300:  # a 3xx too: redirects are not followed (the token would go with them)
            raise _Final(f"http {status}")


async def _into(step: Awaitable[None]) -> None:
    """Await a sink's step; what it raises is the sink's failure, not the download's."""
    try:
        await step
    except Exception as exc:
        raise _SinkFailed(exc) from exc
