"""The signed BagIt bag of an export (services/evidence/bag.py) and its signing key's settings: a bag written here
is valid for PyPI ``bagit`` and for ``openssl`` (what a recipient without this project has), and every alteration
(a payload file, a manifest, the tag manifest, the signature, an added or removed file, another key) is reported
by :func:`verify_bag`, each in its own words."""

from __future__ import annotations

import base64
import hashlib
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import bagit
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from services.cli import main as cli_main
from services.evidence.bag import (
    SIGNATURE_FILE,
    SigningKeyError,
    fingerprint,
    load_private_key,
    load_public_key,
    tag_file_text,
    verify_bag,
    write_bag,
)
from services.evidence.header import Custodian, ExportHeader
from services.evidence.settings import ExportSigningSettings

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
HEADER = ExportHeader(
    scope="subject_access",
    title="WhatsApp messages of 33612345678",
    export_id="SAR-7",
    custodians=(Custodian(kind="person", label="33612345678", ref="b" * 64),),
    period_start=datetime(2026, 11, 1, tzinfo=UTC),
    period_end=datetime(2026, 11, 25, tzinfo=UTC),
    time_zone="UTC",
    language="fr",
    requested_by="dpo-léa",
    reason="Art. 15 request\nreceived by post",
    generated_at=datetime(2026, 11, 25, 10, 0, tzinfo=UTC),
)


@pytest.fixture
def bag(tmp_path: Path) -> Path:
    root = tmp_path / "bag"
    (root / "data" / "media").mkdir(parents=True)
    (root / "data" / "events.jsonl").write_bytes(b'{"event_id":"e1"}\n{"event_id":"e2"}\n')
    (root / "data" / "media" / "e2.png").write_bytes(b"\x89PNG" + bytes(5000))
    (root / "data" / "a name with spaces.txt").write_text("a file whose name has spaces")
    write_bag(root, HEADER, KEY)
    return root


def test_a_written_bag_verifies_here_and_for_bagit(bag: Path) -> None:
    result = verify_bag(bag, expected_fingerprint=fingerprint(KEY.public_key()))
    assert result.failures == []
    assert result.trusted
    assert result.files_checked == 3 + 6  # the payload; bagit.txt, bag-info, two manifests, the key, the signature
    checked = bagit.Bag(str(bag))
    checked.validate()  # an independent reader: every payload and tag hash, completeness, Payload-Oxum
    assert checked.info["External-Identifier"] == "SAR-7"
    assert checked.info["Export-Requested-By"] == "dpo-léa"
    assert checked.info["Export-Scope"] == "subject_access"
    assert checked.info["Export-Signing-Key-SHA256"] == fingerprint(KEY.public_key())
    assert checked.info["Payload-Oxum"] == f"{36 + 5004 + 28}.3"
    assert sorted(checked.algorithms) == ["sha256", "sha512"]
    signature_listed = (bag / "tagmanifest-sha512.txt").read_text()
    assert SIGNATURE_FILE in signature_listed
    assert SIGNATURE_FILE not in (bag / "tagmanifest-sha256.txt").read_text()  # it signs that one


def test_the_fingerprint_is_the_sha256_of_the_raw_public_key() -> None:
    raw = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fingerprint(KEY.public_key()) == hashlib.sha256(raw).hexdigest()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_a_recipient_checks_the_signature_with_openssl(bag: Path) -> None:
    """What docs/OPERATIONS.md tells a recipient without this project to run."""
    command = ["openssl", "pkeyutl", "-verify", "-pubin", "-inkey", "export-signing-key.pub", "-rawin"]
    command += ["-in", "tagmanifest-sha256.txt", "-sigfile", SIGNATURE_FILE]
    assert subprocess.run(command, cwd=bag, capture_output=True, check=False).returncode == 0
    (bag / "tagmanifest-sha256.txt").write_text((bag / "tagmanifest-sha256.txt").read_text() + "\n")
    assert subprocess.run(command, cwd=bag, capture_output=True, check=False).returncode != 0


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("alter", "expected"),
    [
        pytest.param(
            lambda b: flip_last_byte(b / "data" / "media" / "e2.png"),
            ["data/media/e2.png: sha256 mismatch", "data/media/e2.png: sha512 mismatch"],
            id="a payload file altered",
        ),
        pytest.param(
            lambda b: (b / "data" / "events.jsonl").write_bytes(b'{"event_id":"e1"}\n'),
            ["data/events.jsonl: sha256 mismatch", "data/events.jsonl: sha512 mismatch"],
            id="a payload file truncated",
        ),
        pytest.param(
            lambda b: (b / "data" / "media" / "e2.png").unlink(),
            ["data/media/e2.png: listed in a manifest but missing"],
            id="a payload file removed",
        ),
        pytest.param(
            lambda b: (b / "data" / "added.txt").write_text("x"),
            [
                "data/added.txt: in the payload but not in manifest-sha256.txt",
                "data/added.txt: in the payload but not in manifest-sha512.txt",
            ],
            id="a payload file added",
        ),
        pytest.param(
            lambda b: (b / "manifest-sha256.txt").write_text(
                (b / "manifest-sha256.txt").read_text().replace("events.jsonl", "events.json")
            ),
            [
                "data/events.json: listed in a manifest but missing",
                "manifest-sha256.txt: sha256 mismatch",
                "manifest-sha256.txt: sha512 mismatch",
                "data/events.jsonl: in the payload but not in manifest-sha256.txt",
            ],
            id="a manifest altered",
        ),
        pytest.param(
            lambda b: flip_last_byte(b / "bag-info.txt"),
            ["bag-info.txt: sha256 mismatch", "bag-info.txt: sha512 mismatch"],
            id="bag-info altered",
        ),
        pytest.param(
            lambda b: (b / "tagmanifest-sha256.txt").write_text(
                (b / "tagmanifest-sha256.txt").read_text().replace("bag-info", "bag-inf0")
            ),
            ["bag-inf0.txt: listed in a manifest but missing", "does not verify"],
            id="the signed tag manifest altered",
        ),
        pytest.param(
            lambda b: flip_last_byte(b / SIGNATURE_FILE),
            [f"{SIGNATURE_FILE}: sha512 mismatch", "does not verify"],
            id="the signature altered",
        ),
        pytest.param(
            lambda b: (b / SIGNATURE_FILE).unlink(),
            [f"{SIGNATURE_FILE}: listed in a manifest but missing", "signature cannot be checked"],
            id="the signature removed",
        ),
    ],
)
def test_every_alteration_is_reported(bag: Path, alter: object, expected: list[str]) -> None:
    assert callable(alter)
    alter(bag)
    result = verify_bag(bag)
    assert not result.ok
    for words in expected:
        assert any(words in failure for failure in result.failures), (words, result.failures)
    assert len(result.failures) == len(expected)


def test_a_bag_resigned_by_another_key_fails_against_the_expected_one(bag: Path) -> None:
    other = Ed25519PrivateKey.generate()
    write_bag(bag, HEADER, other)  # e.g. someone who altered the payload and signed it again
    assert verify_bag(bag).ok  # consistent in itself …
    assert not verify_bag(bag).trusted
    result = verify_bag(bag, expected_fingerprint=fingerprint(KEY.public_key()))  # … but not ours
    ours, theirs = fingerprint(KEY.public_key()), fingerprint(other.public_key())
    assert result.failures == [f"the bag is signed by key {theirs}, not by the expected {ours}"]
    result = verify_bag(bag, public_key=KEY.public_key())
    assert any("does not verify" in failure for failure in result.failures)


def test_a_percent_sign_or_line_break_in_a_path_is_percent_encoded(tmp_path: Path) -> None:
    """RFC 8493 §2.1.3 (bagit 1.9 reads BagIt 0.97, which did not encode: the exports' own names never need it)."""
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "100%\nsure.txt").write_text("x")
    write_bag(tmp_path, HEADER, KEY)
    assert "data/100%25%0Asure.txt" in (tmp_path / "manifest-sha256.txt").read_text()
    assert verify_bag(tmp_path).failures == []


def test_not_a_bag(tmp_path: Path) -> None:
    assert verify_bag(tmp_path).failures == ["bagit.txt is missing: not a bag"]


def test_bag_info_values_keep_their_line_breaks_as_continuation_lines() -> None:
    assert tag_file_text([("Export-Reason", "first\nsecond"), ("Empty", "")]) == (
        b"Export-Reason: first\n  second\nEmpty: \n"
    )


PEM = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
RAW_B64 = base64.b64encode(bytes(range(32)))


@pytest.mark.parametrize("material", [PEM, RAW_B64, b"  " + RAW_B64 + b"\n"], ids=["pem", "base64", "padded"])
def test_a_signing_key_reads_from_pem_or_base64(material: bytes) -> None:
    assert fingerprint(load_private_key(material).public_key()) == fingerprint(KEY.public_key())


@pytest.mark.parametrize(
    ("material", "words"),
    [
        pytest.param(b"not a key", "neither PEM nor base64", id="garbage"),
        pytest.param(base64.b64encode(bytes(31)), "32 bytes, got 31", id="short"),
        pytest.param(b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not a readable", id="bad pem"),
    ],
)
def test_a_bad_signing_key_is_refused_without_quoting_it(material: bytes, words: str) -> None:
    with pytest.raises(SigningKeyError, match=words) as refused:
        load_private_key(material)
    assert material.decode() not in str(refused.value)


def test_public_keys_read_from_pem_or_base64() -> None:
    public = KEY.public_key()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert fingerprint(load_public_key(pem)) == fingerprint(load_public_key(base64.b64encode(raw)))
    with pytest.raises(SigningKeyError):
        load_public_key(b"nope")


def test_signing_settings(tmp_path: Path) -> None:
    assert not ExportSigningSettings().configured
    with pytest.raises(SigningKeyError, match="no export signing key"):
        ExportSigningSettings().private_key()
    assert fingerprint(ExportSigningSettings(key=RAW_B64.decode()).private_key().public_key()) == fingerprint(
        KEY.public_key()
    )
    key_file = tmp_path / "signing.pem"
    key_file.write_bytes(PEM)
    assert ExportSigningSettings(key_file=key_file).private_key().private_bytes_raw() == bytes(range(32))
    with pytest.raises(ValidationError, match="not both"):
        ExportSigningSettings(key=RAW_B64.decode(), key_file=key_file)
    with pytest.raises(ValidationError, match="neither PEM nor base64") as refused:
        ExportSigningSettings(key="secret-words")
    assert "secret-words" not in str(refused.value).split("input_value")[0]
    with pytest.raises(SigningKeyError, match="cannot be read"):
        ExportSigningSettings(key_file=tmp_path / "missing.pem").private_key()


file_names = st.text(alphabet="abcXYZ019 -_.%\n", min_size=1, max_size=12).filter(
    lambda name: name.strip(" \n") == name and name not in (".", "..")
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    files=st.dictionaries(file_names, st.binary(max_size=64), min_size=1, max_size=5),
    victim=st.integers(min_value=0),
    offset=st.integers(min_value=0),
)
def test_any_payload_verifies_and_any_flipped_bit_is_found(
    tmp_path_factory: pytest.TempPathFactory, files: dict[str, bytes], victim: int, offset: int
) -> None:
    """Whatever the payload's names and bytes, the bag verifies; one bit flipped in any file of the bag (payload,
    manifest, tag file, signature) makes it fail."""
    root = tmp_path_factory.mktemp("bag")
    (root / "data").mkdir()
    for name, content in files.items():
        (root / "data" / name).write_bytes(content)
    write_bag(root, HEADER, KEY)
    assert verify_bag(root, public_key=KEY.public_key()).failures == []
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.stat().st_size > 0)
    target = candidates[victim % len(candidates)]
    data = bytearray(target.read_bytes())
    data[offset % len(data)] ^= 0x01
    target.write_bytes(bytes(data))
    assert not verify_bag(root, public_key=KEY.public_key()).ok, target.relative_to(root)


def verify_export(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as done:
        cli_main(["verify-export", *argv])
    captured = capsys.readouterr()
    return int(done.value.code or 0), captured.out, captured.err


def test_verify_export_on_the_command_line(bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ours = tmp_path / "ours.pem"
    ours.write_bytes(
        KEY.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    code, out, err = verify_export([str(bag), "--public-key", str(ours)], capsys)
    assert (code, err) == (0, "")
    assert f"signature by key {fingerprint(KEY.public_key())}" in out
    code, out, err = verify_export([str(bag)], capsys)  # the bag's own key: said so
    assert code == 0
    assert "compare its fingerprint" in err
    theirs = tmp_path / "theirs.pem"
    theirs.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    code, out, err = verify_export([str(bag), "--public-key", str(theirs)], capsys)
    assert code == 1
    assert "FAILED: tagmanifest-sha256.txt.sig: the signature of tagmanifest-sha256.txt does not verify" in err
    code, out, err = verify_export([str(bag), "--public-key", str(tmp_path / "missing.pem")], capsys)
    assert code == 2
    flip_last_byte(bag / "data" / "events.jsonl")
    code, out, err = verify_export([str(bag), "--fingerprint", fingerprint(KEY.public_key())], capsys)
    assert code == 1
    first, second, verdict = err.splitlines()
    assert first.startswith("FAILED: data/events.jsonl: sha256 mismatch (manifest ")
    assert second.startswith("FAILED: data/events.jsonl: sha512 mismatch (manifest ")
    assert verdict == f"{bag}: NOT VERIFIED, 2 failures"
