"""Envelope encryption: seal/open, tamper detection, KEK rotation, and a cache that cannot resurrect keys."""

from __future__ import annotations

import os

import pytest

from services.core.crypto import (
    DekCache,
    KeyRingError,
    LocalKek,
    RecordTampered,
    WrappedDek,
    new_dek,
    open_record,
    seal_record,
)
from services.core.pseudonym import message_ref, subject_ref

pytestmark = pytest.mark.unit

DEK = bytes(range(32))
SEALED = seal_record(b"hello archive", DEK, event_id="e1", subject_ref="s1")


def flip(data: bytes, index: int) -> bytes:
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


def test_round_trip() -> None:
    assert open_record(SEALED, DEK, event_id="e1", subject_ref="s1") == b"hello archive"
    assert seal_record(b"x", DEK, event_id="e1", subject_ref="s1") != seal_record(
        b"x", DEK, event_id="e1", subject_ref="s1"
    )


@pytest.mark.parametrize(
    ("sealed", "key", "event_id", "subject"),
    [
        pytest.param(flip(SEALED, 0), DEK, "e1", "s1", id="flipped bit in the nonce"),
        pytest.param(flip(SEALED, 14), DEK, "e1", "s1", id="flipped bit in the ciphertext"),
        pytest.param(flip(SEALED, len(SEALED) - 1), DEK, "e1", "s1", id="flipped bit in the tag"),
        pytest.param(SEALED, DEK, "e2", "s1", id="record moved to another event"),
        pytest.param(SEALED, DEK, "e1", "s2", id="record moved to another subject"),
        pytest.param(SEALED, new_dek(), "e1", "s1", id="wrong key"),
        pytest.param(SEALED[:20], DEK, "e1", "s1", id="truncated"),
        pytest.param(
            seal_record(b"other", DEK, event_id="e2", subject_ref="s1"), DEK, "e1", "s1", id="swapped records"
        ),
    ],
)
def test_tampering_is_detected(sealed: bytes, key: bytes, event_id: str, subject: str) -> None:
    with pytest.raises(RecordTampered):
        open_record(sealed, key, event_id=event_id, subject_ref=subject)


def test_kek_rotation_and_binding() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    old = LocalKek({"k1": k1}, "k1")
    wrapped_old = old.wrap(DEK, subject_ref="s1")
    rotated = LocalKek({"k1": k1, "k2": k2}, "k2")
    wrapped_new = rotated.wrap(DEK, subject_ref="s1")
    assert wrapped_new.kek_id == "k2"
    assert rotated.unwrap(wrapped_old, subject_ref="s1") == DEK
    assert rotated.unwrap(wrapped_new, subject_ref="s1") == DEK
    with pytest.raises(KeyRingError):
        LocalKek({"k2": k2}, "k2").unwrap(wrapped_old, subject_ref="s1")
    with pytest.raises(RecordTampered):
        rotated.unwrap(wrapped_new, subject_ref="s2")  # a wrapped key moved to another person
    with pytest.raises(RecordTampered):
        rotated.unwrap(WrappedDek("k2", flip(wrapped_new.blob, 20)), subject_ref="s1")


@pytest.mark.parametrize(
    ("keys", "current"),
    [
        pytest.param({"k": b"short"}, "k", id="key too short"),
        pytest.param({"k": os.urandom(33)}, "k", id="key too long"),
        pytest.param({"k": os.urandom(32)}, "other", id="unknown current id"),
    ],
)
def test_bad_keks_are_refused(keys: dict[str, bytes], current: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 — the message varies by case
        LocalKek(keys, current)


def test_cache_is_a_bounded_lru() -> None:
    cache = DekCache(2)
    cache.put("a", "ka", new_dek())
    cache.put("b", "kb", new_dek())
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("c", "kc", new_dek())
    assert cache.get("b") is None
    assert cache.get("a") is not None
    assert len(cache) == 2


def test_cache_never_resurrects_a_shredded_key() -> None:
    cache = DekCache(10)
    dek = new_dek()
    cache.put("s", "old-key", dek)
    cache.mark_shredded("s", "old-key")
    assert cache.get("s") is None
    with pytest.raises(KeyRingError, match="shredded"):
        cache.put("s", "old-key", dek)
    fresh = cache.put("s", "new-key", new_dek())  # the person writes again: a new key is fine
    assert cache.get("s") == fresh


def test_pseudonyms_are_stable_scoped_and_peppered() -> None:
    pepper, other = b"p" * 32, b"q" * 32
    assert subject_ref(pepper, "100", "16505551234") == subject_ref(pepper, "100", "16505551234")
    assert subject_ref(pepper, "100", "16505551234") != subject_ref(pepper, "200", "16505551234")
    assert subject_ref(pepper, "100", "16505551234") != subject_ref(other, "100", "16505551234")
    assert "16505551234" not in subject_ref(pepper, "100", "16505551234")
    assert message_ref(pepper, "wamid.A") != message_ref(other, "wamid.A")
    with pytest.raises(ValueError, match="person id"):
        subject_ref(pepper, "100", "")
