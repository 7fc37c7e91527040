"""A case exported as evidence: a folder of signed bags, one per person custodian, and ``case.json`` listing them.

``case.json`` names the case, each bag's folder with the SHA-256 of its ``tagmanifest-sha256.txt`` (the file each
bag's own signature covers, which covers every other file) and the custodians that were not exported and why; it is
signed with the same Ed25519 key as the bags (``case.json.sig``, the raw signature). :func:`verify_case` checks the
listing's signature, that every listed bag is there with that digest and verifies, and that no other bag is there:
a bag left out, swapped or added is reported, as an altered file of any bag is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.evidence.bag import (
    PUBLIC_KEY_FILE,
    SIGNED_MANIFEST,
    SigningKeyError,
    Verification,
    fingerprint,
    load_public_key,
    verify_bag,
)
from services.evidence.package import WrittenPackage

CASE_MANIFEST = "case.json"
CASE_SIGNATURE = "case.json.sig"
CASE_FORMAT = "wa-archive case export 1"


def is_case_export(root: Path) -> bool:
    return (root / CASE_MANIFEST).is_file()


def write_case_manifest(
    out: Path,
    case_ref: str,
    bags: Sequence[WrittenPackage],
    skipped: Sequence[dict[str, str]],
    key: Ed25519PrivateKey,
) -> Path:
    """Write and sign ``case.json`` in ``out`` (see the module docstring); returns its path."""
    entries = []
    for package in bags:
        assert package.bag is not None
        signed = package.bag.path / SIGNED_MANIFEST
        entries.append(
            {
                "folder": package.bag.path.name,
                "tagmanifest_sha256": hashlib.sha256(signed.read_bytes()).hexdigest(),
                "payload_files": package.bag.payload_files,
            }
        )
    body = orjson.dumps(
        {
            "format": CASE_FORMAT,
            "case_ref": case_ref,
            "generated_at": datetime.now(UTC).isoformat(),
            "signing_key_fingerprint": fingerprint(key.public_key()),
            "bags": entries,
            "not_exported": list(skipped),
        },
        option=orjson.OPT_INDENT_2,
    )
    path = out / CASE_MANIFEST
    path.write_bytes(body)
    (out / CASE_SIGNATURE).write_bytes(key.sign(body))
    return path


def verify_case(
    root: Path, *, public_key: Ed25519PublicKey | None = None, expected_fingerprint: str | None = None
) -> Verification:
    """Check a case export (see the module docstring): every failure in the result, prefixed by the bag's folder;
    never raises for a bad export. Without ``public_key``, the key of the first listed bag that has one is checked
    (``trusted`` stays False unless ``expected_fingerprint`` is given)."""
    result = Verification()
    failures = result.failures
    try:
        body = (root / CASE_MANIFEST).read_bytes()
        listing = orjson.loads(body)
        entries = [(str(e["folder"]), str(e["tagmanifest_sha256"])) for e in listing["bags"]]
    except (OSError, orjson.JSONDecodeError, KeyError, TypeError) as exc:
        failures.append(f"{CASE_MANIFEST} cannot be read: {type(exc).__name__}")
        return result
    trusted_key = public_key
    for folder, _ in entries if trusted_key is None else ():
        try:
            trusted_key = load_public_key((root / folder / PUBLIC_KEY_FILE).read_bytes())
            break
        except (OSError, SigningKeyError):
            continue
    if trusted_key is None:
        failures.append(f"no key was given and no listed bag holds a readable one: {CASE_MANIFEST} cannot be checked")
        return result
    result.fingerprint = fingerprint(trusted_key)
    result.trusted = public_key is not None or expected_fingerprint is not None
    if expected_fingerprint is not None and result.fingerprint != expected_fingerprint.strip().lower():
        failures.append(f"signed by key {result.fingerprint}, not by the expected {expected_fingerprint.strip()}")
    try:
        trusted_key.verify((root / CASE_SIGNATURE).read_bytes(), body)
    except OSError:
        failures.append(f"{CASE_SIGNATURE} is missing")
    except InvalidSignature:
        failures.append(f"{CASE_SIGNATURE}: the signature of {CASE_MANIFEST} does not verify")
    listed = {folder for folder, _ in entries}
    for extra in sorted(p.name for p in root.iterdir() if p.is_dir() and p.name not in listed):
        failures.append(f"{extra}: a folder the case export does not list")
    for folder, digest in entries:
        bag = root / folder
        if "/" in folder or folder in ("", ".", "..") or not bag.is_dir():
            failures.append(f"{folder}: a bag the case export lists is missing")
            continue
        try:
            found = hashlib.sha256((bag / SIGNED_MANIFEST).read_bytes()).hexdigest()
        except OSError:
            found = ""
        if found != digest:
            failures.append(f"{folder}: its {SIGNED_MANIFEST} is not the one the case export lists")
        checked = verify_bag(bag, public_key=trusted_key)
        result.files_checked += checked.files_checked
        failures.extend(f"{folder}: {failure}" for failure in checked.failures)
    return result
