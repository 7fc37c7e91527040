"""The hash chain's pure parts (services/evidence/chain.py) and the signing helper (services/evidence/signing.py):
entries encode and decode, link, and any reordering, removal or alteration of stored entries is found; the bucket
is compared with what the chain says; checkpoints verify only under a trusted key and unchanged."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives import serialization
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError

from services.core.settings import SigningSettings
from services.evidence.chain import (
    EMPTY_HEAD,
    BadCheckpoint,
    ChainEntry,
    Change,
    Checkpoint,
    Deletion,
    Expectation,
    Found,
    KeysDestroyed,
    ObjectDigest,
    check_against,
    check_stream,
    compare,
    digest_of,
    expected_objects,
    next_entry,
    open_checkpoint,
    pre_chain,
    seal_checkpoint,
    segment_key,
    stream_of_key,
    to_read,
)
from services.evidence.signing import (
    KeyUnreadable,
    fingerprint,
    load_private_key,
    load_public_key,
    new_private_key_text,
    public_text,
    sign,
    verify,
)

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)
PREFIX, STREAM = "v1", "archive/wa.events.v1/00003"


def build(changes: list[Change], stream: str = STREAM) -> list[tuple[int, bytes]]:
    head, stored = EMPTY_HEAD, []
    for n, change in enumerate(changes):
        entry, body, head = next_entry(PREFIX, stream, head, change, T0 + timedelta(seconds=n))
        stored.append((entry.seq, body))
    return stored


def written(n: int) -> Change:
    return Change(written=(ObjectDigest.of(f"v1/t/00003/{n:020d}.waarc", f"object {n}".encode()),))


def test_an_entry_reads_back_as_written() -> None:
    change = Change(
        written=(ObjectDigest("v1/a", "ab" * 32, 10),),
        deleted=(
            Deletion(
                key="v1/b", cause="retention", retention_classes=("chat",), expired_at="2026-01-01T00:00:00+00:00"
            ),
            Deletion(key="v1/c", cause="erasure", request_ref="REQ-1"),
        ),
        erasure=KeysDestroyed(request_ref="REQ-1", keys=(("ref", "dek"),), erased_at="2026-12-01T00:00:00+00:00"),
    )
    entry, body, head = next_entry(PREFIX, STREAM, EMPTY_HEAD, change, T0)
    assert ChainEntry.decode(body) == entry
    assert (entry.seq, entry.prev, head.seq) == (0, "0" * 64, 0)
    assert stream_of_key(PREFIX, segment_key(PREFIX, STREAM, 7)) == (STREAM, 7)


def test_a_baseline_entry_reads_back_marked_and_an_ordinary_entry_has_no_mark() -> None:
    entry, body, _head = next_entry(
        PREFIX, "baseline", EMPTY_HEAD, Change(written=written(1).written, baseline=True), T0
    )
    assert ChainEntry.decode(body) == entry
    assert entry.change.baseline
    assert b"baseline" not in next_entry(PREFIX, STREAM, EMPTY_HEAD, written(1), T0)[1]


@settings(max_examples=80, deadline=None)
@given(
    listed=st.dictionaries(
        st.sampled_from([f"v1/o{n}" for n in range(12)]), st.integers(min_value=-600, max_value=600), max_size=12
    ),
    named=st.sets(st.sampled_from([f"v1/o{n}" for n in range(12)])),
    began=st.one_of(st.none(), st.integers(min_value=-300, max_value=300)),
    settled=st.integers(min_value=-300, max_value=300),
)
def test_a_baseline_takes_only_unnamed_objects_changed_a_second_before_the_chain_and_the_settling_time(
    listed: dict[str, int], named: set[str], began: int | None, settled: int
) -> None:
    expected = {key: Expectation("2026-12-06T12:00:00.000000Z", ObjectDigest(key, "0" * 64, 1), None) for key in named}
    changed = {key: T0 + timedelta(seconds=s) for key, s in listed.items()}
    chosen = pre_chain(
        expected, changed, None if began is None else T0 + timedelta(seconds=began), T0 + timedelta(seconds=settled)
    )
    for key, s in listed.items():
        older = s < settled and (began is None or s < began - 1)
        assert (key in chosen) == (key not in named and older), key
    assert chosen == sorted(chosen)


def test_a_sound_stream_has_no_fault_and_its_head_is_the_last_entry() -> None:
    stored = build([written(n) for n in range(5)])
    checked = check_stream(PREFIX, STREAM, stored)
    assert checked.faults == []
    assert checked.head.seq == 4
    assert [e.seq for e in checked.entries] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize(
    ("tamper", "kinds"),
    [
        pytest.param(lambda s: s[:2] + s[3:], {"gap"}, id="an entry removed"),
        pytest.param(lambda s: [(0, s[0][1]), (1, s[2][1]), (2, s[1][1]), *s[3:]], {"misplaced"}, id="two swapped"),
        pytest.param(
            lambda s: [*s[:2], (2, s[2][1].replace(b"v1/t/", b"v1/u/")), *s[3:]], {"broken link"}, id="one altered"
        ),
        pytest.param(lambda s: [*s[:2], (2, s[2][1][:-1])], {"unreadable"}, id="the last entry truncated"),
    ],
)
def test_tampering_is_a_fault(tamper: object, kinds: set[str]) -> None:
    stored = build([written(n) for n in range(5)])
    assert callable(tamper)
    checked = check_stream(PREFIX, STREAM, tamper(stored))
    assert {f.kind for f in checked.faults} >= kinds


@settings(max_examples=60, deadline=None)
@given(
    count=st.integers(min_value=2, max_value=8),
    data=st.data(),
)
def test_any_reordering_removal_or_alteration_is_detected(count: int, data: st.DataObject) -> None:
    """Against a checkpoint of the head: what a writer stored, tampered with in any one way, never checks clean."""
    stored = build([written(n) for n in range(count)])
    signed = check_stream(PREFIX, STREAM, stored).head
    how = data.draw(st.sampled_from(["remove", "reorder", "alter"]))
    tampered = list(stored)
    if how == "remove":
        del tampered[data.draw(st.integers(0, count - 1))]
    elif how == "reorder":
        order = data.draw(st.permutations(range(count)).filter(lambda p: list(p) != list(range(count))))
        tampered = [(seq, stored[i][1]) for seq, i in zip(range(count), order, strict=True)]
    else:
        index = data.draw(st.integers(0, count - 1))
        body = bytearray(stored[index][1])
        at = data.draw(st.integers(0, len(body) - 1))
        body[at] = (body[at] + data.draw(st.integers(1, 255))) % 256
        tampered[index] = (stored[index][0], bytes(body))
    checked = check_stream(PREFIX, STREAM, tampered)
    hashes = {seq: digest_of(body) for seq, body in tampered}
    faults = [*checked.faults, *filter(None, [check_against(STREAM, hashes, signed)])]
    assert faults, f"{how} went unnoticed"


def test_the_bucket_is_compared_with_the_last_word_of_the_chain() -> None:
    a, b, c = (ObjectDigest.of(f"v1/{k}", k.encode()) for k in "abc")
    entries = [
        ChainEntry.decode(body)
        for _, body in build(
            [
                Change(written=(a, b, c)),
                Change(deleted=(Deletion(key="v1/b", cause="retention"),)),
                Change(written=(ObjectDigest.of("v1/a", b"rewritten"),)),  # a batch consumed again
            ]
        )
    ]
    expected = expected_objects(entries)
    assert isinstance(expected["v1/b"], Expectation)
    assert expected["v1/b"].deleted is not None
    listed = {"v1/a": len(b"rewritten"), "v1/c": 1, "v1/x": 3}
    assert to_read(expected, listed) == ["v1/a", "v1/c"]
    clean = compare(
        expected, {"v1/a": Found(9, ObjectDigest.of("v1/a", b"rewritten").sha256), "v1/c": Found(1, c.sha256)}
    )
    assert clean == []
    found = compare(
        expected,
        {"v1/a": Found(9, "00" * 32), "v1/b": Found(1), "v1/x": Found(3)},
    )
    assert [(f.kind, f.key) for f in found] == [
        ("altered", "v1/a"),
        ("missing", "v1/c"),
        ("unexpected", "v1/b"),
        ("unexpected", "v1/x"),
    ]


def test_a_checkpoint_verifies_only_unchanged_and_under_a_trusted_key() -> None:
    key, other = load_private_key(new_private_key_text()), load_private_key(new_private_key_text())
    trusted = {fingerprint(key.public_key()): key.public_key()}
    stored = build([written(0)])
    head = check_stream(PREFIX, STREAM, stored).head
    raw = seal_checkpoint(Checkpoint(prefix=PREFIX, at="2026-12-06T12:00:00.000000Z", heads={STREAM: head}), key)
    checkpoint, signer = open_checkpoint(raw, trusted)
    assert checkpoint.heads == {STREAM: head}
    assert signer == fingerprint(key.public_key())
    with pytest.raises(BadCheckpoint, match="does not match"):
        open_checkpoint(raw.replace(head.hash.encode(), b"f" * 64), trusted)
    with pytest.raises(BadCheckpoint, match="not a trusted key"):
        open_checkpoint(seal_checkpoint(checkpoint, other), trusted)
    with pytest.raises(BadCheckpoint, match="unreadable"):
        open_checkpoint(b"{}", trusted)


def test_signing_keys_load_from_pem_or_base64_and_never_quote_the_key() -> None:
    text = new_private_key_text()
    key = load_private_key(text)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    assert fingerprint(load_private_key(pem).public_key()) == fingerprint(key.public_key())
    public = load_public_key(public_text(key.public_key()))
    assert verify(public, b"data", sign(key, b"data"))
    assert not verify(public, b"date", sign(key, b"data"))
    assert fingerprint(public).startswith("ed25519:sha256:")
    assert len(fingerprint(public)) == 15 + 64
    with pytest.raises(KeyUnreadable) as refused:
        load_private_key("bm90IGEga2V5")  # base64 of "not a key"
    assert "bm90IGEga2V5" not in str(refused.value)


def test_an_unreadable_signing_key_stops_the_start_naming_the_setting_not_the_key() -> None:
    with pytest.raises(ValidationError) as refused:
        SigningSettings(private_key=SecretStr("c2VjcmV0LWJ1dC10b28tc2hvcnQ="))
    assert "c2VjcmV0" not in str(refused.value)
    assert "32 bytes" in str(refused.value)
    assert SigningSettings(private_key=SecretStr(new_private_key_text())).private_key is not None
