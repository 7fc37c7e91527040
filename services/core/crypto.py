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
  KEK can be retired (services/core/keyring.py, :func:`~services.core.keyring.rewrap_keys`).
- :class:`DekCache` is a bounded LRU of unwrapped DEKs, with their AES-GCM objects ready for the hot path; it
  can never bring back a key that was shredded.

Erasing a person destroys their wrapped DEK (crypto-shredding): every record sealed with it becomes unreadable
wherever its ciphertext lives. Nothing here stores keys; callers own persistence (services/core/keyring.py).
"""

from __future__ import annotations

import base64
import binascii
import os
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
    "UnknownKek",
    "WrappedDek",
    "new_dek",
    "open_record",
    "record_aad",
    "seal_record",
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
