"""Envelope encryption: a key-encryption key (KEK) wraps one data-encryption key (DEK) per subject, and the
DEK seals each of that subject's records with AES-256-GCM (docs/ARCHIVE_FORMAT.md).

- A sealed record is ``nonce (12) || ciphertext || tag (16)``. Its associated data binds it to its event id
  and subject pseudonym, so a record moved into another event's place, or another person's, fails
  authentication and raises :class:`RecordTampered` — as does any flipped bit or a wrong key.
- A wrapped DEK is bound to its KEK id and subject the same way: copied onto another subject's row, it does
  not unwrap.
- :class:`KekProvider` is the seam for a KMS (AWS KMS, Vault transit); :class:`LocalKek` implements it with
  keys held in memory (from a Kubernetes Secret, the environment or a file), several ids at once for rotation.
  :meth:`KekProvider.rewrap` moves a wrapped DEK under another KEK (the DEK itself does not change), so that an old
  KEK can be retired (services/core/kek_retirement.py, :func:`~services.core.kek_retirement.rewrap_keys`).
- :class:`DekCache` is a bounded LRU of unwrapped DEKs, with their AES-GCM objects ready for the hot path; it
  can never bring back a key that was shredded.
- A large record (a media file) is sealed as a stream of chunks (:class:`StreamSealer`, :class:`StreamOpener`),
  so neither side ever holds it whole: each chunk is a sealed record of its own whose associated data also binds
  the stream (its chunk size and a random stream id), the chunk's index and whether it is the last, as Tink's and
  age's streaming AEADs do: chunks cannot be reordered, dropped, truncated at a boundary or mixed between streams.

Erasing a person destroys their wrapped DEK (crypto-shredding): every record sealed with it becomes unreadable
wherever its ciphertext lives. Nothing here stores keys; callers own persistence (services/core/keyring.py).
"""

from __future__ import annotations

import base64
import binascii
import os
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_BYTES = 32  # AES-256 for both KEKs and DEKs
NONCE_BYTES = 12  # 96-bit random nonces: one DEK seals one person's records, far below the 2**32 bound
TAG_BYTES = 16
SEALED_OVERHEAD = NONCE_BYTES + TAG_BYTES
RECORD_AAD = b"wa-archive/record/v1\x00"
DEK_AAD = b"wa-archive/dek/v1\x00"
CHUNK_AAD = b"wa-archive/chunk/v1\x00"
STREAM_HEADER = struct.Struct(">I16s")  # plaintext bytes per chunk (all but the last), random stream id
STREAM_ID_BYTES = 16
MAX_CHUNK_BYTES = 16 * 1024 * 1024  # what a reader accepts: it holds one chunk at a time
_CHUNK_POSITION = struct.Struct(">QB")  # chunk index, final flag

__all__ = [
    "DEK_AAD",
    "KEY_BYTES",
    "NONCE_BYTES",
    "RECORD_AAD",
    "SEALED_OVERHEAD",
    "TAG_BYTES",
    "CachedDek",
    "DekCache",
    "KekProvider",
    "KeyRingError",
    "LocalKek",
    "RecordTampered",
    "StreamOpener",
    "StreamSealer",
    "UnknownKek",
    "WrappedDek",
    "new_dek",
    "open_record",
    "record_aad",
    "seal_record",
    "sealed_stream_length",
]


class KeyRingError(Exception):
    """A key is unknown (e.g. a KEK id this process was not given) or was shredded."""


class UnknownKek(KeyRingError):
    """A wrapped DEK names a KEK id this process was not given (e.g. a KEK removed from the settings while keys
    were still wrapped by it: ``wa-archive keys status`` counts them). The message names the KEK id only."""

    def __init__(self, kek_id: str) -> None:
        self.kek_id = kek_id
        super().__init__(f"unknown KEK id {kek_id!r}: is the key still configured?")


class RecordTampered(Exception):
    """AES-GCM authentication failed: altered or truncated bytes, a record or wrapped key moved to another
    event or subject (wrong associated data), or the wrong key."""


@dataclass(frozen=True, slots=True)
class WrappedDek:
    """A DEK encrypted under the KEK ``kek_id``: ``blob`` is opaque to everyone but that KEK's provider."""

    kek_id: str
    blob: bytes


class KekProvider(Protocol):
    """Wraps and unwraps DEKs under a key-encryption key chosen by id.

    This is the interface a KMS can implement later (AWS KMS ``Encrypt``/``Decrypt`` with an encryption
    context, Vault transit with a context): the KEK never has to leave it. Contract for every implementation:

    - :meth:`wrap` uses the current KEK and returns its id with the blob, so rotation needs no re-encryption:
      old blobs keep their id and stay readable as long as that KEK is known.
    - The blob is bound to ``subject_ref``: :meth:`unwrap` with another subject fails.
    - :meth:`unwrap` raises :class:`UnknownKek` (a :class:`KeyRingError`) for an unknown KEK id and
      :class:`RecordTampered` when the blob does not authenticate.
    - :meth:`rewrap` (AWS KMS ``ReEncrypt``, Vault ``rewrap``) returns the same DEK wrapped under another KEK, for
      the same subject; it fails as :meth:`unwrap` does, and with :class:`UnknownKek` for an unknown target.
    """

    @property
    def current_kek_id(self) -> str:
        """The id of the KEK new DEKs are wrapped with."""
        ...

    @property
    def kek_ids(self) -> frozenset[str]:
        """Every KEK id this provider can unwrap with (and rewrap to)."""
        ...

    def wrap(self, dek: bytes, *, subject_ref: str) -> WrappedDek:
        """Encrypt ``dek`` for ``subject_ref`` under the current KEK."""
        ...

    def unwrap(self, wrapped: WrappedDek, *, subject_ref: str) -> bytes:
        """Decrypt a blob made by :meth:`wrap` for the same ``subject_ref``, under the KEK it names."""
        ...

    def rewrap(self, wrapped: WrappedDek, *, subject_ref: str, to_kek_id: str) -> WrappedDek:
        """The DEK inside ``wrapped``, wrapped for the same ``subject_ref`` under the KEK ``to_kek_id``."""
        ...


def _check_no_nul(value: str, what: str) -> None:
    # The associated data separates fields with NUL; a NUL inside the first field would let two different
    # (field, field) pairs produce the same bytes. Ids are hex, uuids and digits, so this never fires in use.
    if "\x00" in value:
        raise ValueError(f"{what} must not contain a NUL character")


class LocalKek(KekProvider):
    """KEKs held in process memory, by id: wraps with ``current_kek_id``, unwraps with any known id.

    A wrapped DEK is ``nonce (12) || ciphertext || tag (16)`` of AES-256-GCM under the KEK, with associated
    data ``b"wa-archive/dek/v1\\x00" + kek_id + b"\\x00" + subject_ref``.

    Raises ValueError at construction when there is no key, a key is not exactly 32 bytes, a key id is empty
    or contains NUL, or ``current_kek_id`` is not among the ids. Messages name the key id, never its value.
    """

    def __init__(self, keys: Mapping[str, bytes], current_kek_id: str) -> None:
        if not keys:
            raise ValueError("at least one KEK is needed")
        for kek_id, key in keys.items():
            if not kek_id:
                raise ValueError("a KEK id must not be empty")
            _check_no_nul(kek_id, f"KEK id {kek_id!r}")
            if len(key) != KEY_BYTES:
                raise ValueError(f"KEK {kek_id!r} must be exactly {KEY_BYTES} bytes, got {len(key)}")
        if current_kek_id not in keys:
            known = sorted(keys)
            raise ValueError(f"current KEK id {current_kek_id!r} is not one of the configured ids {known}")
        self._aeads = {kek_id: AESGCM(key) for kek_id, key in keys.items()}
        self._current = current_kek_id

    @classmethod
    def from_base64(cls, spec: Mapping[str, str], current: str) -> LocalKek:
        """Build from ``{kek_id: base64 of 32 bytes}``, as configuration holds them.

        Raises ValueError naming the key id when a value is not strict base64 or does not decode to 32 bytes.
        """
        keys: dict[str, bytes] = {}
        for kek_id, encoded in spec.items():
            try:
                keys[kek_id] = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                raise ValueError(f"KEK {kek_id!r} is not valid base64") from None
        return cls(keys, current)

    @property
    def current_kek_id(self) -> str:
        return self._current

    @property
    def kek_ids(self) -> frozenset[str]:
        """Every KEK id this provider can unwrap with."""
        return frozenset(self._aeads)

    @staticmethod
    def _aad(kek_id: str, subject_ref: str) -> bytes:
        return DEK_AAD + kek_id.encode() + b"\x00" + subject_ref.encode()

    def _aead_of(self, kek_id: str) -> AESGCM:
        aead = self._aeads.get(kek_id)
        if aead is None:
            raise UnknownKek(kek_id)
        return aead

    def _wrap_under(self, kek_id: str, dek: bytes, subject_ref: str) -> WrappedDek:
        if len(dek) != KEY_BYTES:
            raise ValueError(f"a DEK must be exactly {KEY_BYTES} bytes, got {len(dek)}")
        aead = self._aead_of(kek_id)
        nonce = os.urandom(NONCE_BYTES)
        return WrappedDek(kek_id=kek_id, blob=nonce + aead.encrypt(nonce, dek, self._aad(kek_id, subject_ref)))

    def wrap(self, dek: bytes, *, subject_ref: str) -> WrappedDek:
        """Raises ValueError when ``dek`` is not 32 bytes."""
        return self._wrap_under(self._current, dek, subject_ref)

    def rewrap(self, wrapped: WrappedDek, *, subject_ref: str, to_kek_id: str) -> WrappedDek:
        """Raises UnknownKek for an unknown KEK id (``wrapped``'s or the target's); RecordTampered as
        :meth:`unwrap`. A blob already under ``to_kek_id`` gets a fresh nonce, the same DEK."""
        self._aead_of(to_kek_id)  # refuse an unknown target before decrypting anything
        return self._wrap_under(to_kek_id, self.unwrap(wrapped, subject_ref=subject_ref), subject_ref)

    def unwrap(self, wrapped: WrappedDek, *, subject_ref: str) -> bytes:
        """Raises UnknownKek (a KeyRingError) for an unknown KEK id; RecordTampered when the blob is short,
        altered, or was wrapped for another subject."""
        aead = self._aead_of(wrapped.kek_id)
        blob = memoryview(wrapped.blob)
        if len(blob) < SEALED_OVERHEAD:
            raise RecordTampered("wrapped key is too short")
        aad = self._aad(wrapped.kek_id, subject_ref)
        try:
            return aead.decrypt(blob[:NONCE_BYTES], blob[NONCE_BYTES:], aad)
        except InvalidTag:
            raise RecordTampered("wrapped key does not authenticate (altered, or moved)") from None


def new_dek() -> bytes:
    """A fresh random 256-bit data key."""
    return os.urandom(KEY_BYTES)


def record_aad(event_id: str, subject_ref: str) -> bytes:
    """The associated data of a sealed record:
    ``b"wa-archive/record/v1\\x00" + event_id + b"\\x00" + subject_ref``.

    Raises ValueError when ``event_id`` contains NUL (the encoding would no longer be unambiguous).
    """
    _check_no_nul(event_id, "event_id")
    return RECORD_AAD + event_id.encode() + b"\x00" + subject_ref.encode()


def _aead(key: bytes | AESGCM) -> AESGCM:
    if isinstance(key, AESGCM):
        return key
    if len(key) != KEY_BYTES:
        # AESGCM would quietly accept a 16- or 24-byte key and run AES-128/192.
        raise ValueError(f"a DEK must be exactly {KEY_BYTES} bytes, got {len(key)}")
    return AESGCM(key)


def seal_record(plaintext: bytes, key: bytes | AESGCM, *, event_id: str, subject_ref: str) -> bytes:
    """Encrypt one record: ``nonce (12) || ciphertext || tag (16)``, ``len(plaintext) + 28`` bytes.

    ``key`` is the 32-byte DEK or, on the hot path, an :class:`AESGCM` made once per batch (:meth:`CachedDek.aead`).
    Sealing the same plaintext twice gives different bytes (random nonce). Raises ValueError for a key that is
    not 32 bytes or an ``event_id`` containing NUL.
    """
    aead = _aead(key)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, record_aad(event_id, subject_ref))


def open_record(sealed: bytes, key: bytes | AESGCM, *, event_id: str, subject_ref: str) -> bytes:
    """Decrypt and authenticate a record made by :func:`seal_record` for the same event and subject.

    Raises RecordTampered on any authentication failure: input shorter than nonce and tag, any altered byte,
    another event's or subject's record, or the wrong key. Raises ValueError for a key that is not 32 bytes or
    an ``event_id`` containing NUL (caller errors, not evidence about the data).
    """
    aead = _aead(key)
    aad = record_aad(event_id, subject_ref)
    view = memoryview(sealed)
    if len(view) < SEALED_OVERHEAD:
        raise RecordTampered(f"sealed record is too short: {len(view)} bytes, under {SEALED_OVERHEAD}")
    try:
        return aead.decrypt(view[:NONCE_BYTES], view[NONCE_BYTES:], aad)
    except InvalidTag:
        raise RecordTampered("record does not authenticate (altered, moved, or the wrong key)") from None


def _chunk_aad_prefix(event_id: str, subject_ref: str, header: bytes) -> bytes:
    _check_no_nul(event_id, "event_id")
    return CHUNK_AAD + event_id.encode() + b"\x00" + subject_ref.encode() + b"\x00" + header


def sealed_stream_length(plaintext_bytes: int, chunk_size: int) -> int:
    """How long the sealed stream of ``plaintext_bytes`` is: the stream header, then one sealed chunk per
    ``chunk_size`` bytes begun (at least one: an empty plaintext is one empty final chunk)."""
    chunks = max(1, -(-plaintext_bytes // chunk_size))
    return STREAM_HEADER.size + plaintext_bytes + chunks * SEALED_OVERHEAD


class StreamSealer:
    """Seals one large record as a stream: :attr:`header`, then :meth:`seal` per chunk, the last with
    ``final=True``.

    A sealed stream is ``chunk_size u32 BE || stream id (16 random bytes)`` followed by the chunks, each
    ``nonce (12) || ciphertext || tag (16)`` of AES-256-GCM under the DEK with associated data
    ``b"wa-archive/chunk/v1\x00" + event_id + b"\x00" + subject_ref + b"\x00" + stream header + index (u64 BE)
    + final (u8)``. Every chunk but the last holds exactly ``chunk_size`` plaintext bytes; the last holds 0 to
    ``chunk_size``. Raises ValueError for a chunk size out of 1..16 MiB, an ``event_id`` with NUL, a chunk of the
    wrong size, or a chunk after the final one."""

    def __init__(self, key: bytes | AESGCM, *, event_id: str, subject_ref: str, chunk_size: int) -> None:
        if not 0 < chunk_size <= MAX_CHUNK_BYTES:
            raise ValueError(f"chunk size must be 1..{MAX_CHUNK_BYTES} bytes, got {chunk_size}")
        self._aead = _aead(key)
        self.chunk_size = chunk_size
        self.header = STREAM_HEADER.pack(chunk_size, os.urandom(STREAM_ID_BYTES))
        self._aad = _chunk_aad_prefix(event_id, subject_ref, self.header)
        self._index = 0
        self._done = False

    def seal(self, plaintext: bytes | memoryview, *, final: bool) -> bytes:
        if self._done:
            raise ValueError("the stream was already sealed with its final chunk")
        if len(plaintext) > self.chunk_size or (not final and len(plaintext) != self.chunk_size):
            raise ValueError(f"a chunk holds {self.chunk_size} bytes (the last at most that), got {len(plaintext)}")
        nonce = os.urandom(NONCE_BYTES)
        aad = self._aad + _CHUNK_POSITION.pack(self._index, final)
        self._index += 1
        self._done = final
        return nonce + self._aead.encrypt(nonce, bytes(plaintext), aad)


class StreamOpener:
    """Opens a sealed stream (see :class:`StreamSealer`) of a known total length, fed in pieces of any size:
    :meth:`feed` returns the plaintext of every chunk completed so far (each authenticated before it is
    returned), :meth:`finish` checks that the stream ended where its length said. It holds at most one sealed
    chunk and a piece.

    Raises RecordTampered when a chunk does not authenticate (altered, reordered, from another stream, event or
    person, the wrong key, or a stream cut at a chunk boundary: its new last chunk was not sealed as final) and
    when the stream header is not a valid one (chunk size out of range, a length no stream can have)."""

    def __init__(self, key: bytes | AESGCM, *, event_id: str, subject_ref: str, sealed_length: int) -> None:
        self._aead = _aead(key)
        self._event_id, self._subject_ref = event_id, subject_ref
        self._remaining = sealed_length
        self._buffer = bytearray()
        self._aad: bytes | None = None
        self._chunk = 0  # sealed bytes per chunk, once the header is read
        self._index = 0
        self.plaintext_length: int | None = None

    def _start(self) -> None:
        chunk_size, _stream_id = STREAM_HEADER.unpack_from(self._buffer)
        if not 0 < chunk_size <= MAX_CHUNK_BYTES:
            raise RecordTampered(f"sealed stream: chunk size {chunk_size} is out of range")
        body = self._remaining - STREAM_HEADER.size
        self._chunk = chunk_size + SEALED_OVERHEAD
        chunks = max(1, -(-body // self._chunk))
        last = body - (chunks - 1) * self._chunk
        if body < SEALED_OVERHEAD or last < SEALED_OVERHEAD:
            raise RecordTampered(f"sealed stream: {body} bytes of chunks is no whole number of chunks")
        self.plaintext_length = body - chunks * SEALED_OVERHEAD
        self._aad = _chunk_aad_prefix(self._event_id, self._subject_ref, bytes(self._buffer[: STREAM_HEADER.size]))
        del self._buffer[: STREAM_HEADER.size]
        self._remaining = body

    def feed(self, piece: bytes | memoryview) -> list[bytes]:
        if len(piece) > self._remaining - len(self._buffer):
            raise RecordTampered("sealed stream: more bytes than its length")
        self._buffer += piece
        opened: list[bytes] = []
        if self._aad is None:
            if len(self._buffer) < STREAM_HEADER.size:
                return opened
            self._start()
        while self._buffer and (len(self._buffer) >= self._chunk or len(self._buffer) == self._remaining):
            size = min(self._chunk, self._remaining)
            final = size == self._remaining
            sealed = memoryview(self._buffer)[:size]
            if size < SEALED_OVERHEAD:
                raise RecordTampered("sealed stream: a chunk shorter than its nonce and tag")
            assert self._aad is not None
            aad = self._aad + _CHUNK_POSITION.pack(self._index, final)
            try:
                opened.append(self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad))
            except InvalidTag:
                raise RecordTampered(f"sealed stream: chunk {self._index} does not authenticate") from None
            finally:
                sealed.release()
            del self._buffer[:size]
            self._remaining -= size
            self._index += 1
        return opened

    def finish(self) -> None:
        """Raises RecordTampered when the stream ended before its length (a chunk or the header missing)."""
        if self._aad is None or self._remaining or self._buffer:
            raise RecordTampered("sealed stream: it ended early")


@dataclass(frozen=True, slots=True)
class CachedDek:
    """An unwrapped DEK and its id (the ``subject_keys`` row it came from).

    No AES-GCM object is kept: each holds about 3 KiB of OpenSSL state, so a full cache of 100,000 subjects
    grew the archiver by some 390 MB (the 30-minute soak showed the climb). Making one costs 1.7 µs; writers
    make one per subject per batch (:meth:`aead`)."""

    dek_id: str
    dek: bytes = field(repr=False)  # never in logs or tracebacks

    def aead(self) -> AESGCM:
        return AESGCM(self.dek)


class DekCache:
    """A bounded LRU of unwrapped DEKs by subject_ref; every operation is O(1).

    Contract: it is only a cache — a miss costs an unwrap, never correctness — and it never resurrects a
    shredded key. :meth:`mark_shredded` drops the key and remembers (subject_ref, dek_id); from then on a
    :meth:`put` of that dek_id raises :class:`KeyRingError`, so a stale copy read before the erasure (or from
    a restored backup) can never be cached again. A new dek_id for the same subject (the person writes again
    after erasure and gets a new key) is accepted. The shredded set lives as long as the process: it holds
    one entry per erasure seen, not per record.

    Not thread-safe: meant for one asyncio event loop.
    """

    def __init__(self, capacity: int) -> None:
        """Raises ValueError when ``capacity`` is below 1."""
        if capacity < 1:
            raise ValueError(f"DEK cache capacity must be at least 1, got {capacity}")
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedDek] = OrderedDict()
        self._subjects_by_dek: dict[str, set[str]] = {}
        self._shredded: dict[str, str] = {}  # dek_id -> the subject_ref it was shredded for

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, subject_ref: object) -> bool:
        """Whether a key is cached for ``subject_ref``, without touching its recency."""
        return subject_ref in self._entries

    def get(self, subject_ref: str) -> CachedDek | None:
        """The cached key of ``subject_ref`` (now the most recently used), or None."""
        entry = self._entries.get(subject_ref)
        if entry is not None:
            self._entries.move_to_end(subject_ref)
        return entry

    def put(self, subject_ref: str, dek_id: str, dek: bytes) -> CachedDek:
        """Cache ``dek`` as the key of ``subject_ref`` (most recently used) and return its entry, evicting the
        least recently used entry beyond capacity.

        Raises KeyRingError("key was shredded") when ``dek_id`` was marked shredded, and ValueError when
        ``dek`` is not 32 bytes.
        """
        if dek_id in self._shredded:
            raise KeyRingError("key was shredded")
        current = self._entries.get(subject_ref)
        if current is not None and current.dek_id == dek_id and current.dek == dek:
            self._entries.move_to_end(subject_ref)
            return current
        if len(dek) != KEY_BYTES:
            raise ValueError(f"a DEK must be exactly {KEY_BYTES} bytes, got {len(dek)}")
        entry = CachedDek(dek_id=dek_id, dek=dek)
        if current is not None:
            self._unlink(subject_ref, current.dek_id)
        self._entries[subject_ref] = entry
        self._entries.move_to_end(subject_ref)
        self._subjects_by_dek.setdefault(dek_id, set()).add(subject_ref)
        while len(self._entries) > self.capacity:
            evicted_ref, evicted = self._entries.popitem(last=False)
            self._unlink(evicted_ref, evicted.dek_id)
        return entry

    def discard(self, subject_ref: str) -> None:
        """Drop the cached key of ``subject_ref``, if any."""
        entry = self._entries.pop(subject_ref, None)
        if entry is not None:
            self._unlink(subject_ref, entry.dek_id)

    def forget_dek(self, dek_id: str) -> None:
        """Drop ``dek_id`` from the cache, whichever subject holds it; unlike :meth:`mark_shredded`, a later
        put of it is still accepted."""
        for subject_ref in self._subjects_by_dek.pop(dek_id, set()):
            self._entries.pop(subject_ref, None)

    def mark_shredded(self, subject_ref: str, dek_id: str) -> None:
        """Record that ``dek_id`` (the key of ``subject_ref``) was destroyed: drop it and refuse it forever.

        A newer key already cached for the same subject is kept: only the shredded one is dropped.
        """
        self._shredded[dek_id] = subject_ref
        self.forget_dek(dek_id)

    def is_shredded(self, dek_id: str) -> bool:
        """Whether ``dek_id`` was marked shredded in this process."""
        return dek_id in self._shredded

    def _unlink(self, subject_ref: str, dek_id: str) -> None:
        subjects = self._subjects_by_dek.get(dek_id)
        if subjects is not None:
            subjects.discard(subject_ref)
            if not subjects:
                del self._subjects_by_dek[dek_id]
