"""A case exported as evidence: a folder of signed bags, and ``case.json`` listing them.

Which bags (:func:`plan_case_bags`, pure): one per person custodian (their conversation), one per group custodian
(the group's timeline: every participant's records), and, for a business-number custodian, one per conversation
of that number; a conversation of more than ``bag_records`` records within the period is split into volumes of
at most that many, one bag each, so that no bag, and no process writing one, holds more than that (the PDF inside
is split further, services/evidence/pdf.py). A custodian with nothing to export is listed as not exported, with why.

``case.json`` names the case, each bag's folder with the SHA-256 of its ``tagmanifest-sha256.txt`` (the file each
bag's own signature covers, which covers every other file) and whose it is (custodian, kind, conversation and volume),
and the custodians that were not exported and why; it is
signed with the same Ed25519 key as the bags (``case.json.sig``, the raw signature). :func:`verify_case` checks the
listing's signature, that every listed bag is there with that digest and verifies, and that no other bag is there:
a bag left out, swapped or added is reported, as an altered file of any bag is.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.core.vocabulary import CustodianKind
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
# At most this many records per bag: a 10,000-message conversation is what the export benchmark keeps under
# 300 MB per process (docs/ARCHITECTURE.md, "Exports"); a longer conversation is split into volumes.
CASE_BAG_RECORDS: Final = 10_000
NOTHING_IN_PERIOD: Final = "the archive holds no record of this custodian within the case's period"
NO_PSEUDONYM: Final = "this person custodian names no pseudonym the archive knows"


@dataclass(frozen=True, slots=True, kw_only=True)
class CaseCustodian:
    """A custodian as the plan needs it (services/governance/cases.py Custodian has these fields)."""

    custodian_id: str
    kind: CustodianKind
    phone_number_id: str | None
    subject_refs: tuple[str, ...]
    group_ref: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class PlannedBag:
    """One bag of a case export: its folder (a sequence number and the custodian's id: no personal data), whose
    records it holds (a person's pseudonym; a group's pseudonym; one conversation of a business number, by its
    pseudonym), and, for a conversation split into volumes, which one (``part`` of ``parts``, 1-based)."""

    folder: str
    custodian_id: str
    kind: CustodianKind
    subject_ref: str | None = None
    group_ref: str | None = None
    phone_number_id: str | None = None
    conversation: int | None = None  # 1-based, among a business number's conversations
    part: int = 1
    parts: int = 1

    def to_json(self) -> dict[str, object]:
        """What ``case.json`` says of the bag (references only)."""
        return {
            "custodian_id": self.custodian_id,
            "kind": self.kind,
            "subject_ref": self.subject_ref,
            "group_ref": self.group_ref,
            "phone_number_id": self.phone_number_id,
            "conversation": self.conversation,
            "volume": f"{self.part}/{self.parts}",
        }


def volume_count(records: int, limit: int) -> int:
    """How many bags of at most ``limit`` records hold ``records`` records (one at least)."""
    if limit < 1:
        raise ValueError("a bag holds one record at least")
    return max(1, -(-records // limit))


def plan_case_bags(
    custodians: Sequence[CaseCustodian],
    conversations: Mapping[str, Sequence[tuple[str, int]]],
    *,
    group_records: Mapping[str, int],
    bag_records: int = CASE_BAG_RECORDS,
) -> tuple[list[PlannedBag], list[dict[str, str]]]:
    """The bags of a case export, in the custodians' order, and the custodians not exported with why (pure).
    ``conversations``: by business-number custodian's id, its conversations within the period as (pseudonym,
    records); ``group_records``: by group custodian's id, how many records of the group fall within the period."""
    bags: list[PlannedBag] = []
    skipped: list[dict[str, str]] = []

    def folder(custodian_id: str, suffix: str = "") -> str:
        return f"{len(bags) + 1:02d}-{custodian_id}{suffix}"

    for custodian in custodians:
        cid = custodian.custodian_id
        if custodian.kind == "person":
            if not custodian.subject_refs:
                skipped.append({"custodian_id": cid, "kind": custodian.kind, "why": NO_PSEUDONYM})
                continue
            bags.append(
                PlannedBag(folder=folder(cid), custodian_id=cid, kind="person", subject_ref=custodian.subject_refs[0])
            )
        elif custodian.kind == "group":
            if not custodian.group_ref or not group_records.get(cid):
                skipped.append({"custodian_id": cid, "kind": custodian.kind, "why": NOTHING_IN_PERIOD})
                continue
            bags.append(
                PlannedBag(
                    folder=folder(cid),
                    custodian_id=cid,
                    kind="group",
                    group_ref=custodian.group_ref,
                    phone_number_id=custodian.phone_number_id,
                )
            )
        else:
            found = [(ref, count) for ref, count in conversations.get(cid, ()) if count > 0]
            if not custodian.phone_number_id or not found:
                skipped.append({"custodian_id": cid, "kind": custodian.kind, "why": NOTHING_IN_PERIOD})
                continue
            for n, (ref, count) in enumerate(found, start=1):
                parts = volume_count(count, bag_records)
                for part in range(1, parts + 1):
                    volume = f"-v{part}" if parts > 1 else ""
                    bags.append(
                        PlannedBag(
                            folder=folder(cid, f"-c{n:04d}{volume}"),
                            custodian_id=cid,
                            kind="phone_number",
                            subject_ref=ref,
                            phone_number_id=custodian.phone_number_id,
                            conversation=n,
                            part=part,
                            parts=parts,
                        )
                    )
    return bags, skipped


def is_case_export(root: Path) -> bool:
    return (root / CASE_MANIFEST).is_file()


def write_case_manifest(
    out: Path,
    case_ref: str,
    bags: Sequence[WrittenPackage],
    skipped: Sequence[dict[str, str]],
    key: Ed25519PrivateKey,
    about: Mapping[str, Mapping[str, object]] | None = None,
) -> Path:
    """Write and sign ``case.json`` in ``out`` (see the module docstring); returns its path. ``about``: what each
    bag holds (:meth:`PlannedBag.to_json`), by folder."""
    entries = []
    for package in bags:
        assert package.bag is not None
        signed = package.bag.path / SIGNED_MANIFEST
        entries.append(
            {
                "folder": package.bag.path.name,
                "tagmanifest_sha256": hashlib.sha256(signed.read_bytes()).hexdigest(),
                "payload_files": package.bag.payload_files,
                **(about or {}).get(package.bag.path.name, {}),
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
