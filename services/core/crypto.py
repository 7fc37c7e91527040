"""Envelope encryption: a key-encryption key (KEK) wraps one data-encryption key (DEK) per subject; the DEK
seals each record with AES-256-GCM.

- Associated data binds a sealed record to its event id and subject pseudonym, so a record moved into another
  event's place, or another person's, fails authentication (:class:`RecordTampered`).
- A wrapped DEK is bound to its subject the same way: moved to another subject's row, it does not unwrap.
- :class:`KekProvider` is the seam for a KMS (AWS KMS, Vault transit): wrap/unwrap by key id. :class:`LocalKek`
  implements it with local keys (Kubernetes Secret / environment), several ids accepted for rotation.
- :class:`DekCache` is a bounded LRU of unwrapped keys that can never resurrect a shredded one.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from services.core.settings import decode_key

NONCE_BYTES = 12
TAG_BYTES = 16
RECORD_AAD = b"wa-archive/record/v1\x00"
DEK_AAD = b"wa-archive/dek/v1\x00"


class KeyRingError(Exception):
    """A key is unknown, malformed, or was shredded."""


class RecordTampered(Exception):
    """AES-GCM authentication failed: wrong key, wrong associated data, or altered bytes."""


@dataclass(frozen=True, slots=True)
class WrappedDek:
    kek_id: str
    blob: bytes


class KekProvider(Protocol):
    """Wraps and unwraps data keys. A KMS-backed implementation calls the KMS here."""

    @property
    def current_kek_id(self) -> str: ...

    def wrap(self, dek: bytes, *, subject_ref: str) -> WrappedDek: ...

    def unwrap(self, wrapped: WrappedDek, *, subject_ref: str) -> bytes: ...


class LocalKek:
    """KEKs held in memory, by id; wraps with the current one, unwraps with any known one."""

    def __init__(self, keys: Mapping[str, bytes], current_kek_id: str) -> None:
        if current_kek_id not in keys:
            raise ValueError(f"current KEK id {current_kek_id!r} is not among the configured ids")
        for kek_id, key in keys.items():
            if len(key) != 32:
                raise ValueError(f"KEK {kek_id!r} must be 32 bytes, got {len(key)}")
        self._aeads = {kek_id: AESGCM(key) for kek_id, key in keys.items()}
        self._current = current_kek_id

    @classmethod
    def from_base64(cls, spec: Mapping[str, str], current: str) -> LocalKek:
        return cls({kek_id: decode_key(value, f"KEK {kek_id!r}") for kek_id, value in spec.items()}, current)

    @property
    def current_kek_id(self) -> str:
        return self._current

    @staticmethod
    def _aad(kek_id: str, subject_ref: str) -> bytes:
        return DEK_AAD + kek_id.encode() + b"\x00" + subject_ref.encode()

    def wrap(self, dek: bytes, *, subject_ref: str) -> WrappedDek:
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._aeads[self._current].encrypt(nonce, dek, self._aad(self._current, subject_ref))
        return WrappedDek(self._current, nonce + sealed)

    def unwrap(self, wrapped: WrappedDek, *, subject_ref: str) -> bytes:
        aead = self._aeads.get(wrapped.kek_id)
        if aead is None:
            raise KeyRingError(f"unknown KEK id {wrapped.kek_id!r}")
        if len(wrapped.blob) < NONCE_BYTES + TAG_BYTES:
            raise RecordTampered("wrapped key too short")
        try:
            return aead.decrypt(
                wrapped.blob[:NONCE_BYTES], wrapped.blob[NONCE_BYTES:], self._aad(wrapped.kek_id, subject_ref)
            )
        except InvalidTag:
            raise RecordTampered("wrapped key does not authenticate") from None


def new_dek() -> bytes:
    return os.urandom(32)


def _record_aad(event_id: str, subject_ref: str) -> bytes:
    return RECORD_AAD + event_id.encode() + b"\x00" + subject_ref.encode()


def seal_record(plaintext: bytes, key: bytes | AESGCM, *, event_id: str, subject_ref: str) -> bytes:
    """nonce (12) || ciphertext || tag (16)."""
    aead = key if isinstance(key, AESGCM) else AESGCM(key)
    nonce = os.urandom(NONCE_BYTES)
    return nonce + aead.encrypt(nonce, plaintext, _record_aad(event_id, subject_ref))


def open_record(sealed: bytes, key: bytes | AESGCM, *, event_id: str, subject_ref: str) -> bytes:
    if len(sealed) < NONCE_BYTES + TAG_BYTES:
        raise RecordTampered("sealed record too short")
    aead = key if isinstance(key, AESGCM) else AESGCM(key)
    try:
        return aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _record_aad(event_id, subject_ref))
    except InvalidTag:
        raise RecordTampered("record does not authenticate") from None


@dataclass(frozen=True, slots=True)
class CachedDek:
    dek_id: str
    dek: bytes
    aead: AESGCM


class DekCache:
    """Bounded LRU of unwrapped DEKs by subject_ref.

    Contract: only a cache. :meth:`mark_shredded` drops the key and remembers its id, and a later :meth:`put` of
    that id raises KeyRingError — a stale copy can never bring a destroyed key back — while a new key id for the
    same subject (the person writes again after erasure) is accepted.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self._entries: OrderedDict[str, CachedDek] = OrderedDict()
        self._shredded: set[str] = set()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, subject_ref: str) -> CachedDek | None:
        entry = self._entries.get(subject_ref)
        if entry is not None:
            self._entries.move_to_end(subject_ref)
        return entry

    def put(self, subject_ref: str, dek_id: str, dek: bytes) -> CachedDek:
        if dek_id in self._shredded:
            raise KeyRingError("key was shredded")
        entry = CachedDek(dek_id, dek, AESGCM(dek))
        self._entries[subject_ref] = entry
        self._entries.move_to_end(subject_ref)
        while len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
        return entry

    def discard(self, subject_ref: str) -> None:
        self._entries.pop(subject_ref, None)

    def mark_shredded(self, subject_ref: str, dek_id: str) -> None:
        self._shredded.add(dek_id)
        entry = self._entries.get(subject_ref)
        if entry is not None and entry.dek_id == dek_id:
            del self._entries[subject_ref]

    def forget_dek(self, dek_id: str) -> None:
        for ref in [ref for ref, entry in self._entries.items() if entry.dek_id == dek_id]:
            del self._entries[ref]
