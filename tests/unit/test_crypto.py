"""Envelope encryption and pseudonyms: seal/open, tamper detection, KEK wrapping and rotation, the DEK cache
that cannot resurrect a shredded key, and stable, scoped, peppered pseudonyms."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import given
from hypothesis import strategies as st

from services.core.crypto import (
    SEALED_OVERHEAD,
    CachedDek,
    DekCache,
    KeyRingError,
    LocalKek,
    RecordTampered,
    UnknownKek,
    WrappedDek,
    new_dek,
    open_record,
    record_aad,
    seal_record,
)
from services.core.pseudonym import message_ref, subject_ref

pytestmark = pytest.mark.unit

DEK = bytes(range(32))
OTHER_DEK = bytes(range(1, 33))
EVENT, SUBJECT = "e" * 32, "ab" * 32
PLAINTEXT = b'{"from":"16505551234","text":{"body":"hello archive"}}'
SEALED = seal_record(PLAINTEXT, DEK, event_id=EVENT, subject_ref=SUBJECT)
K1, K2 = b"\x01" * 32, b"\x02" * 32


def flip(data: bytes, index: int) -> bytes:
    """``data`` with the lowest bit of byte ``index`` inverted."""
    return data[:index] + bytes([data[index] ^ 1]) + data[index + 1 :]


# --- seal / open -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("plaintext", "key"),
    [
        pytest.param(PLAINTEXT, DEK, id="key as bytes"),
        pytest.param(PLAINTEXT, AESGCM(DEK), id="key as a ready AESGCM"),
        pytest.param(b"", DEK, id="empty record"),
        pytest.param(os.urandom(1 << 20), DEK, id="1 MiB media"),
    ],
)
def test_seal_open_round_trip(plaintext: bytes, key: bytes | AESGCM) -> None:
    sealed = seal_record(plaintext, key, event_id=EVENT, subject_ref=SUBJECT)
    assert len(sealed) == len(plaintext) + SEALED_OVERHEAD
    assert open_record(sealed, DEK, event_id=EVENT, subject_ref=SUBJECT) == plaintext
    assert open_record(sealed, AESGCM(DEK), event_id=EVENT, subject_ref=SUBJECT) == plaintext


def test_sealing_twice_uses_fresh_nonces() -> None:
    first = seal_record(PLAINTEXT, DEK, event_id=EVENT, subject_ref=SUBJECT)
    second = seal_record(PLAINTEXT, DEK, event_id=EVENT, subject_ref=SUBJECT)
    assert first[:12] != second[:12]
    assert first != second
    assert PLAINTEXT not in first


@pytest.mark.parametrize(
    ("sealed", "key", "event_id", "subject"),
    [
        pytest.param(flip(SEALED, 0), DEK, EVENT, SUBJECT, id="flipped bit in the nonce (first byte)"),
        pytest.param(flip(SEALED, 11), DEK, EVENT, SUBJECT, id="flipped bit in the nonce (last byte)"),
        pytest.param(flip(SEALED, 12), DEK, EVENT, SUBJECT, id="flipped bit in the ciphertext (first byte)"),
        pytest.param(flip(SEALED, 30), DEK, EVENT, SUBJECT, id="flipped bit in the ciphertext (middle)"),
        pytest.param(flip(SEALED, len(SEALED) - 16), DEK, EVENT, SUBJECT, id="flipped bit in the tag (1st)"),
        pytest.param(flip(SEALED, len(SEALED) - 1), DEK, EVENT, SUBJECT, id="flipped bit in the tag (end)"),
        pytest.param(
            seal_record(b"another event", DEK, event_id="f" * 32, subject_ref=SUBJECT),
            DEK,
            EVENT,
            SUBJECT,
            id="record swapped in from another event",
        ),
        pytest.param(
            seal_record(b"another person", DEK, event_id=EVENT, subject_ref="cd" * 32),
            DEK,
            EVENT,
            SUBJECT,
            id="record swapped in from another subject",
        ),
        pytest.param(SEALED, DEK, "f" * 32, SUBJECT, id="wrong event_id in the AAD"),
        pytest.param(SEALED, DEK, EVENT, "cd" * 32, id="wrong subject_ref in the AAD"),
        pytest.param(SEALED, DEK, EVENT + "x", SUBJECT, id="event_id extended by one character"),
        pytest.param(SEALED, OTHER_DEK, EVENT, SUBJECT, id="wrong key"),
        pytest.param(SEALED, AESGCM(OTHER_DEK), EVENT, SUBJECT, id="wrong key as AESGCM"),
        pytest.param(SEALED[:-1], DEK, EVENT, SUBJECT, id="truncated by one byte"),
        pytest.param(SEALED[: SEALED_OVERHEAD - 1], DEK, EVENT, SUBJECT, id="shorter than nonce and tag"),
        pytest.param(b"", DEK, EVENT, SUBJECT, id="empty"),
        pytest.param(SEALED + b"\x00", DEK, EVENT, SUBJECT, id="one byte appended"),
    ],
)
def test_tampering_is_detected(sealed: bytes, key: bytes | AESGCM, event_id: str, subject: str) -> None:
    with pytest.raises(RecordTampered):
        open_record(sealed, key, event_id=event_id, subject_ref=subject)


def test_aad_fields_cannot_be_shifted_into_each_other() -> None:
    # (event "e", subject "\x00s") and (event "e\x00", subject "s") would give the same AAD bytes.
    with pytest.raises(ValueError, match="NUL"):
        record_aad("e\x00", "s")
    assert record_aad("e", "s") == b"wa-archive/record/v1\x00e\x00s"


@pytest.mark.parametrize(
    ("key", "event_id", "message"),
    [
        pytest.param(b"\x00" * 16, EVENT, "32 bytes, got 16", id="AES-128 key"),
        pytest.param(DEK[:24], EVENT, "32 bytes, got 24", id="AES-192 key"),
        pytest.param(b"", EVENT, "32 bytes, got 0", id="empty key"),
        pytest.param(DEK, "a\x00b", "NUL", id="NUL in the event id"),
    ],
)
def test_caller_errors_are_value_errors_not_tampering(key: bytes, event_id: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        seal_record(b"x", key, event_id=event_id, subject_ref=SUBJECT)
    with pytest.raises(ValueError, match=message):
        open_record(SEALED, key, event_id=event_id, subject_ref=SUBJECT)


def test_new_dek_is_random_and_256_bits() -> None:
    keys = {new_dek() for _ in range(100)}
    assert len(keys) == 100
    assert {len(key) for key in keys} == {32}


# --- KEK wrapping ------------------------------------------------------------------------------------------


def test_wrap_unwrap_round_trip() -> None:
    kek = LocalKek({"k1": K1}, "k1")
    wrapped = kek.wrap(DEK, subject_ref=SUBJECT)
    assert wrapped.kek_id == "k1"
    assert len(wrapped.blob) == 12 + 32 + 16
    assert DEK not in wrapped.blob
    assert kek.unwrap(wrapped, subject_ref=SUBJECT) == DEK
    assert kek.wrap(DEK, subject_ref=SUBJECT).blob != wrapped.blob  # fresh nonce every time


def test_rotation_wraps_with_the_current_kek_and_unwraps_with_any_known_one() -> None:
    before = LocalKek({"k1": K1}, "k1")
    old_blob = before.wrap(DEK, subject_ref=SUBJECT)
    rotated = LocalKek({"k1": K1, "k2": K2}, "k2")
    new_blob = rotated.wrap(OTHER_DEK, subject_ref=SUBJECT)
    assert rotated.current_kek_id == "k2"
    assert new_blob.kek_id == "k2"
    assert rotated.kek_ids == {"k1", "k2"}
    assert rotated.unwrap(old_blob, subject_ref=SUBJECT) == DEK
    assert rotated.unwrap(new_blob, subject_ref=SUBJECT) == OTHER_DEK
    retired = LocalKek({"k2": K2}, "k2")  # k1 removed once every DEK was re-wrapped
    with pytest.raises(KeyRingError, match="unknown KEK id 'k1'"):
        retired.unwrap(old_blob, subject_ref=SUBJECT)


ROTATED = LocalKek({"k1": K1, "k2": K2}, "k2")
WRAPPED = ROTATED.wrap(DEK, subject_ref=SUBJECT)


def test_rewrap_moves_the_same_dek_under_the_target_so_the_old_kek_can_go() -> None:
    old = LocalKek({"k1": K1}, "k1").wrap(DEK, subject_ref=SUBJECT)
    moved = ROTATED.rewrap(old, subject_ref=SUBJECT, to_kek_id="k2")
    assert moved.kek_id == "k2"
    assert LocalKek({"k2": K2}, "k2").unwrap(moved, subject_ref=SUBJECT) == DEK
    with pytest.raises(RecordTampered):
        ROTATED.unwrap(moved, subject_ref="cd" * 32)  # still bound to its subject
    back = ROTATED.rewrap(moved, subject_ref=SUBJECT, to_kek_id="k1")  # to a KEK that is not the current one
    assert back.kek_id == "k1"
    assert LocalKek({"k1": K1}, "k1").unwrap(back, subject_ref=SUBJECT) == DEK


KEK_IDS = st.text(min_size=1, max_size=20).filter(lambda s: "\x00" not in s)


@given(
    dek=st.binary(min_size=32, max_size=32),
    subject=st.text(max_size=70),
    ids=st.lists(KEK_IDS, min_size=2, max_size=2, unique=True),
)
def test_rewrap_then_unwrap_with_the_target_alone_gives_the_same_dek(dek: bytes, subject: str, ids: list[str]) -> None:
    old, new = ids
    both = LocalKek({old: K1, new: K2}, old)
    moved = both.rewrap(both.wrap(dek, subject_ref=subject), subject_ref=subject, to_kek_id=new)
    assert moved.kek_id == new
    assert LocalKek({new: K2}, new).unwrap(moved, subject_ref=subject) == dek


@pytest.mark.parametrize(
    ("wrapped", "to", "kek_id"),
    [
        pytest.param(WRAPPED, "k3", "k3", id="target not configured"),
        pytest.param(WrappedDek("gone", WRAPPED.blob), "k2", "gone", id="source KEK removed"),
    ],
)
def test_rewrap_with_an_unknown_kek_names_the_kek_id_only(wrapped: WrappedDek, to: str, kek_id: str) -> None:
    with pytest.raises(UnknownKek, match=f"unknown KEK id '{kek_id}'") as caught:
        ROTATED.rewrap(wrapped, subject_ref=SUBJECT, to_kek_id=to)
    assert caught.value.kek_id == kek_id
    assert SUBJECT not in str(caught.value)


def test_rewrap_refuses_a_blob_that_does_not_authenticate() -> None:
    with pytest.raises(RecordTampered):
        ROTATED.rewrap(WrappedDek("k2", flip(WRAPPED.blob, 20)), subject_ref=SUBJECT, to_kek_id="k1")


@pytest.mark.parametrize(
    ("wrapped", "subject"),
    [
        pytest.param(WRAPPED, "cd" * 32, id="wrapped DEK moved to another subject"),
        pytest.param(WrappedDek("k1", WRAPPED.blob), SUBJECT, id="relabelled with another KEK id"),
        pytest.param(WrappedDek("k2", flip(WRAPPED.blob, 0)), SUBJECT, id="flipped bit in the nonce"),
        pytest.param(WrappedDek("k2", flip(WRAPPED.blob, 20)), SUBJECT, id="flipped bit in the wrapped key"),
        pytest.param(WrappedDek("k2", flip(WRAPPED.blob, 59)), SUBJECT, id="flipped bit in the tag"),
        pytest.param(WrappedDek("k2", WRAPPED.blob[:-1]), SUBJECT, id="truncated"),
        pytest.param(WrappedDek("k2", b"short"), SUBJECT, id="shorter than nonce and tag"),
    ],
)
def test_bad_wrapped_keys_are_refused(wrapped: WrappedDek, subject: str) -> None:
    with pytest.raises(RecordTampered):
        ROTATED.unwrap(wrapped, subject_ref=subject)


def test_wrap_refuses_a_dek_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        ROTATED.wrap(DEK[:16], subject_ref=SUBJECT)


@pytest.mark.parametrize(
    ("keys", "current", "message"),
    [
        pytest.param({}, "k", "at least one KEK", id="no key"),
        pytest.param({"k": b"short"}, "k", "'k' must be exactly 32 bytes, got 5", id="key too short"),
        pytest.param({"k": b"\x00" * 16}, "k", "exactly 32 bytes, got 16", id="AES-128 key"),
        pytest.param({"k": b"\x00" * 33}, "k", "exactly 32 bytes, got 33", id="key too long"),
        pytest.param({"k1": K1, "k2": b""}, "k1", "'k2' must be exactly 32 bytes", id="one bad among good"),
        pytest.param({"": K1}, "", "must not be empty", id="empty key id"),
        pytest.param({"k\x00": K1}, "k\x00", "NUL", id="NUL in the key id"),
        pytest.param({"k": K1}, "other", "'other' is not one of the configured ids", id="unknown current id"),
    ],
)
def test_bad_keks_are_refused(keys: dict[str, bytes], current: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LocalKek(keys, current)


def test_kek_from_base64() -> None:
    kek = LocalKek.from_base64({"k1": base64.b64encode(K1).decode()}, "k1")
    wrapped = kek.wrap(DEK, subject_ref=SUBJECT)
    assert LocalKek({"k1": K1}, "k1").unwrap(wrapped, subject_ref=SUBJECT) == DEK


@pytest.mark.parametrize(
    ("value", "message"),
    [
        pytest.param("not base64!", "'k1' is not valid base64", id="not base64"),
        pytest.param(base64.b64encode(b"\x00" * 16).decode(), "exactly 32 bytes, got 16", id="16 bytes"),
    ],
)
def test_kek_from_bad_base64_is_refused_without_echoing_the_value(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as caught:
        LocalKek.from_base64({"k1": value}, "k1")
    assert value not in str(caught.value)


# --- DEK cache ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("capacity", "operations", "cached"),
    [
        pytest.param(2, ["put a", "put b", "put c"], ["b", "c"], id="oldest evicted first"),
        pytest.param(2, ["put a", "put b", "get a", "put c"], ["a", "c"], id="a read refreshes recency"),
        pytest.param(2, ["put a", "put b", "put a", "put c"], ["a", "c"], id="a rewrite refreshes recency"),
        pytest.param(2, ["put a", "put b", "get x", "put c"], ["b", "c"], id="a miss changes nothing"),
        pytest.param(1, ["put a", "put b"], ["b"], id="capacity one"),
        pytest.param(3, ["put a", "put b", "drop a", "put c", "put d"], ["b", "c", "d"], id="drop frees"),
        pytest.param(3, ["put a", "drop x"], ["a"], id="dropping a stranger is a no-op"),
    ],
)
def test_cache_is_a_bounded_lru(capacity: int, operations: list[str], cached: list[str]) -> None:
    cache = DekCache(capacity)
    for operation in operations:
        verb, ref = operation.split()
        if verb == "put":
            cache.put(ref, f"dek-{ref}", new_dek())
        elif verb == "get":
            cache.get(ref)
        else:
            cache.discard(ref)
    assert len(cache) == len(cached)
    assert sorted(ref for ref in "abcdx" if ref in cache) == cached


@pytest.mark.parametrize("capacity", [pytest.param(0, id="zero"), pytest.param(-1, id="negative")])
def test_cache_capacity_is_at_least_one(capacity: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        DekCache(capacity)


def test_cached_entry_keeps_the_key_only_and_makes_its_aead_on_demand() -> None:
    cache = DekCache(4)
    entry = cache.put("s", "d1", DEK)
    assert cache.get("s") is entry
    assert cache.put("s", "d1", DEK) is entry  # same key again: the entry is reused
    # no AES-GCM object (≈3 KiB of OpenSSL state each) lives in the cache
    assert not any(isinstance(getattr(entry, name), AESGCM) for name in CachedDek.__slots__)
    with pytest.raises(ValueError, match="32 bytes"):
        cache.put("t", "d2", DEK[:16])
    sealed = seal_record(PLAINTEXT, entry.aead(), event_id=EVENT, subject_ref="s")
    assert open_record(sealed, DEK, event_id=EVENT, subject_ref="s") == PLAINTEXT
    assert DEK.hex() not in repr(entry)
    assert repr(DEK) not in repr(entry)


def test_cache_never_resurrects_a_shredded_key() -> None:
    cache = DekCache(10)
    cache.put("s", "old-key", DEK)
    cache.mark_shredded("s", "old-key")
    assert cache.get("s") is None
    assert cache.is_shredded("old-key")
    with pytest.raises(KeyRingError, match="key was shredded"):
        cache.put("s", "old-key", DEK)  # a stale copy read before the erasure
    with pytest.raises(KeyRingError, match="key was shredded"):
        cache.put("t", "old-key", DEK)  # nor under another subject
    fresh = cache.put("s", "new-key", OTHER_DEK)  # the person writes again after erasure: a new key is fine
    assert cache.get("s") == fresh


def test_shredding_an_old_key_keeps_the_newer_one() -> None:
    cache = DekCache(10)
    newer = cache.put("s", "new-key", OTHER_DEK)
    cache.mark_shredded("s", "old-key")  # a shredding noticed late, after the subject got a new key
    assert cache.get("s") is newer


def test_shredding_a_key_that_was_never_cached_still_refuses_it() -> None:
    cache = DekCache(10)
    cache.mark_shredded("s", "d1")
    with pytest.raises(KeyRingError):
        cache.put("s", "d1", DEK)


def test_forget_dek_drops_it_but_does_not_refuse_it() -> None:
    cache = DekCache(10)
    cache.put("a", "d1", DEK)
    cache.put("b", "d2", OTHER_DEK)
    cache.forget_dek("d1")
    cache.forget_dek("unknown")
    assert "a" not in cache
    assert "b" in cache
    assert cache.put("a", "d1", DEK).dek_id == "d1"


def test_replacing_a_subjects_key_unlinks_the_old_one() -> None:
    cache = DekCache(10)
    cache.put("s", "d1", DEK)
    cache.put("s", "d2", OTHER_DEK)
    cache.forget_dek("d1")  # must not drop the subject's current key
    entry = cache.get("s")
    assert entry is not None
    assert entry.dek_id == "d2"


# --- pseudonyms --------------------------------------------------------------------------------------------

PEPPER, OTHER_PEPPER = bytes(range(32)), b"q" * 32
PHONE_NUMBER_ID, WA_ID = "106540352242922", "16505551234"
WAMID = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQzQTdCNUM3RjNBQkI0RUNGMUQ1MwA="


def test_pseudonyms_have_fixed_values() -> None:
    # Known answers: a change to either function would orphan every index row and erasure request.
    assert subject_ref(PEPPER, PHONE_NUMBER_ID, WA_ID) == (
        "2c74b04845668992100a930b87e4f5194f154313ddd25b516088ac7f6b5841db"
    )
    assert message_ref(PEPPER, WAMID) == "ef56ce4f54b2bacaef314d46b9bc9721e80ed87c4f4882a512abebde31432153"


@pytest.mark.parametrize(
    ("one", "other"),
    [
        pytest.param(
            subject_ref(PEPPER, PHONE_NUMBER_ID, WA_ID),
            subject_ref(PEPPER, "106540352242923", WA_ID),
            id="same person, another business number",
        ),
        pytest.param(
            subject_ref(PEPPER, PHONE_NUMBER_ID, WA_ID),
            subject_ref(OTHER_PEPPER, PHONE_NUMBER_ID, WA_ID),
            id="subject under another pepper",
        ),
        pytest.param(
            subject_ref(PEPPER, PHONE_NUMBER_ID, WA_ID),
            subject_ref(PEPPER, PHONE_NUMBER_ID, "16505551235"),
            id="another person",
        ),
        pytest.param(message_ref(PEPPER, WAMID), message_ref(OTHER_PEPPER, WAMID), id="message, pepper"),
        pytest.param(
            message_ref(PEPPER, f"{PHONE_NUMBER_ID}:{WA_ID}"),
            subject_ref(PEPPER, PHONE_NUMBER_ID, WA_ID),
            id="message and subject domains are separate",
        ),
    ],
)
def test_pseudonyms_are_distinct(one: str, other: str) -> None:
    assert one != other


@pytest.mark.parametrize(
    "ref",
    [
        pytest.param(subject_ref(PEPPER, PHONE_NUMBER_ID, WA_ID), id="subject_ref"),
        pytest.param(message_ref(PEPPER, WAMID), id="message_ref"),
    ],
)
def test_pseudonyms_are_hex_and_reveal_nothing(ref: str) -> None:
    assert len(ref) == 64
    assert int(ref, 16) >= 0
    assert ref == ref.lower()
    for secret in (WA_ID, PHONE_NUMBER_ID, WAMID, "MTY1MDU1NTEyMzQ"):
        assert secret not in ref


@pytest.mark.parametrize(
    ("make", "message"),
    [
        pytest.param(lambda: subject_ref(PEPPER, PHONE_NUMBER_ID, ""), "person id", id="empty person id"),
        pytest.param(lambda: subject_ref(b"", PHONE_NUMBER_ID, WA_ID), "pepper", id="subject, empty pepper"),
        pytest.param(lambda: message_ref(PEPPER, ""), "message id", id="empty message id"),
        pytest.param(lambda: message_ref(b"", WAMID), "pepper", id="message, empty pepper"),
    ],
)
def test_pseudonyms_refuse_empty_inputs(make: Callable[[], str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make()
