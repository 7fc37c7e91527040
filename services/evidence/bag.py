"""A BagIt bag (RFC 8493) of an export, its tag manifest signed with Ed25519, and its verification.

Layout of a bag written by :func:`write_bag` over a folder whose ``data/`` already holds the payload::

    bagit.txt                      BagIt-Version 1.0, UTF-8
    bag-info.txt                   what the export is: scope, who asked, why, when, its id, the period, the
                                   custodians, the signing key's fingerprint, Payload-Oxum…
    manifest-sha256.txt            every payload file's SHA-256 …
    manifest-sha512.txt            … and SHA-512
    export-signing-key.pub         the public key (PEM, SubjectPublicKeyInfo) that signs the bag
    tagmanifest-sha256.txt         the SHA-256 of every tag file above: what the signature signs
    tagmanifest-sha256.txt.sig     the Ed25519 signature (64 raw bytes) of tagmanifest-sha256.txt
    tagmanifest-sha512.txt         the SHA-512 of every tag file, the signature included
    data/…                         the payload

The signature covers the whole bag: it signs the tag manifest, which holds the hashes of the payload manifests,
which hold the hashes of every payload file. A tag manifest lists no tag manifest (RFC 8493 §2.2.1), so the
SHA-256 one cannot list the signature that signs it; the SHA-512 one lists it, where the RFC allows. The bag
carries its public key so that anyone can check the hashes and the signature; *whose* key it is, the recipient
learns out of band: the fingerprint (SHA-256 of the raw 32-byte public key, hex) is printed by the CLI when the
bag is written, written into bag-info, and checked by ``wa-archive verify-export --fingerprint HEX`` (or
``--public-key FILE``).

:func:`verify_bag` reads the bag with the standard library alone and reports every failure it finds (a payload
file altered, missing or unlisted; a manifest or tag file altered; a signature that does not verify; a key that is
not the expected one), never stopping at the first. The bag is written without ``bagit.make_bag`` (it moves files
and changes the process's working directory, which a server running exports cannot allow); the tests check the
bags with PyPI ``bagit`` too.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.evidence import signing
from services.evidence.header import ExportHeader

ALGORITHMS: Final = ("sha256", "sha512")
PAYLOAD_DIR: Final = "data"
SIGNED_MANIFEST: Final = "tagmanifest-sha256.txt"
SIGNATURE_FILE: Final = "tagmanifest-sha256.txt.sig"
PUBLIC_KEY_FILE: Final = "export-signing-key.pub"
BAGIT_TXT: Final = b"BagIt-Version: 1.0\nTag-File-Character-Encoding: UTF-8\n"
SOFTWARE_AGENT: Final = "wa-archive (services/evidence/bag.py)"
_READ: Final = 1 << 20
_HEX: Final = re.compile(r"[0-9a-f]+")


class SigningKeyError(ValueError):
    """The signing key is missing or is not an Ed25519 key (the message never quotes it)."""


def load_private_key(material: bytes) -> Ed25519PrivateKey:
    """An Ed25519 private key from PEM (PKCS#8, ``-----BEGIN PRIVATE KEY-----``) or the base64 of its 32-byte raw
    seed (``openssl genpkey -algorithm ed25519`` gives the first), read as services/evidence/signing.py reads the
    chain's key. :class:`SigningKeyError` otherwise (never quoting it)."""
    try:
        return signing.load_private_key(material.decode("ascii"))
    except UnicodeDecodeError:
        raise SigningKeyError("the export signing key is neither PEM nor base64") from None
    except signing.KeyUnreadable as exc:
        raise SigningKeyError(str(exc).replace("the signing key", "the export signing key")) from None


def load_public_key(material: bytes) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo) or the base64 of its 32 raw bytes."""
    try:
        return signing.load_public_key(material.decode("ascii"))
    except UnicodeDecodeError:
        raise SigningKeyError("the public key is neither PEM nor base64") from None
    except signing.KeyUnreadable as exc:
        raise SigningKeyError(str(exc)) from None


def fingerprint(key: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, lowercase hex: what a recipient is told to expect."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def file_digests(path: Path) -> dict[str, str]:
    """The SHA-256 and SHA-512 of a file, read once, in pieces."""
    hashers = {name: hashlib.new(name) for name in ALGORITHMS}
    with path.open("rb") as source:
        while chunk := source.read(_READ):
            for hasher in hashers.values():
                hasher.update(chunk)
    return {name: hasher.hexdigest() for name, hasher in hashers.items()}


def bag_info(
    header: ExportHeader, *, key_fingerprint: str, payload_bytes: int, payload_files: int
) -> list[tuple[str, str]]:
    """bag-info.txt's labels and values, in order: the RFC's reserved labels and the export's own."""
    info = [
        ("Source-Organization", next((c.label for c in header.custodians if c.kind == "business"), "") or "wa-archive"),
        ("External-Identifier", header.export_id),
        ("External-Description", header.title),
        ("Bagging-Date", header.generated_at.date().isoformat()),
        ("Bag-Software-Agent", SOFTWARE_AGENT),
        ("Payload-Oxum", f"{payload_bytes}.{payload_files}"),
        ("Export-Scope", header.scope),
        ("Export-Requested-By", header.requested_by),
        ("Export-Reason", header.reason),
        ("Export-Generated-At", header.generated_at.isoformat()),
        ("Export-Time-Zone", header.time_zone),
        ("Export-Language", header.language),
    ]
    if header.case_ref:
        info.append(("Export-Case-Reference", header.case_ref))
    if header.checkpoint:
        info.append(("Archive-Chain-Checkpoint", header.checkpoint))
    if header.period_start is not None:
        info.append(("Export-Period-Start", header.period_start.isoformat()))
    if header.period_end is not None:
        info.append(("Export-Period-End", header.period_end.isoformat()))
    info.extend(("Export-Custodian", f"{c.kind}: {c.label} ({c.ref})") for c in header.custodians)
    info.extend(header.scope_details)
    info.append(("Export-Signing-Key-SHA256", key_fingerprint))
    return info


def tag_file_text(pairs: Iterable[tuple[str, str]]) -> bytes:
    """``Label: value`` lines; a value's own line breaks become continuation lines (RFC 8493 §2.2.2)."""
    lines = []
    for label, value in pairs:
        folded = "\n  ".join(part.strip() for part in value.splitlines()) if value else ""
        lines.append(f"{label}: {folded}\n")
    return "".join(lines).encode("utf-8")


def _manifest_path(relative: str) -> str:
    # RFC 8493 §2.1.3: a line feed, a carriage return or a percent sign in a path is percent-encoded.
    return relative.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def _manifest_text(digests: Mapping[str, Mapping[str, str]], algorithm: str) -> bytes:
    return "".join(f"{d[algorithm]}  {_manifest_path(p)}\n" for p, d in sorted(digests.items())).encode("utf-8")


@dataclass(frozen=True, slots=True)
class SignedBag:
    path: Path
    fingerprint: str
    payload_files: int
    payload_bytes: int


def write_bag(root: Path, header: ExportHeader, key: Ed25519PrivateKey) -> SignedBag:
    """Make ``root`` (whose ``data/`` holds the payload) a signed bag: manifests, bag-info, tag manifests and the
    signature (see the module docstring). Overwrites the tag files of an earlier run; what the file system raises
    propagates."""
    payload = root / PAYLOAD_DIR
    digests: dict[str, dict[str, str]] = {}
    total = 0
    for path in sorted(p for p in payload.rglob("*") if p.is_file()):
        digests[path.relative_to(root).as_posix()] = file_digests(path)
        total += path.stat().st_size
    public = key.public_key()
    key_fingerprint = fingerprint(public)
    tags: dict[str, bytes] = {
        "bagit.txt": BAGIT_TXT,
        "bag-info.txt": tag_file_text(
            bag_info(header, key_fingerprint=key_fingerprint, payload_bytes=total, payload_files=len(digests))
        ),
        **{f"manifest-{a}.txt": _manifest_text(digests, a) for a in ALGORITHMS},
        PUBLIC_KEY_FILE: public_pem(public),
    }
    for name, content in tags.items():
        (root / name).write_bytes(content)
    tag_digests = {name: {a: hashlib.new(a, content).hexdigest() for a in ALGORITHMS} for name, content in tags.items()}
    signed = _manifest_text(tag_digests, "sha256")
    (root / SIGNED_MANIFEST).write_bytes(signed)
    signature = key.sign(signed)
    (root / SIGNATURE_FILE).write_bytes(signature)
    tag_digests[SIGNATURE_FILE] = {a: hashlib.new(a, signature).hexdigest() for a in ALGORITHMS}
    (root / "tagmanifest-sha512.txt").write_bytes(_manifest_text(tag_digests, "sha512"))
    return SignedBag(root, key_fingerprint, len(digests), total)


@dataclass
class Verification:
    """What :func:`verify_bag` found: every failure in words a person can act on, and the signing key's
    fingerprint (None when the bag holds no readable key)."""

    failures: list[str] = field(default_factory=list)
    fingerprint: str | None = None
    files_checked: int = 0
    trusted: bool = False  # the key was checked against a fingerprint or public key given by the recipient

    @property
    def ok(self) -> bool:
        return not self.failures


def _read_manifest(path: Path, algorithm: str, failures: list[str]) -> dict[str, str]:
    entries: dict[str, str] = {}
    width = hashlib.new(algorithm).digest_size * 2
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        failures.append(f"{path.name}: cannot be read ({type(exc).__name__})")
        return entries
    for number, line in enumerate(text.splitlines(), start=1):
        digest, _, name = line.partition(" ")
        name = name.lstrip(" ").replace("%0A", "\n").replace("%0D", "\r").replace("%25", "%")
        if len(digest) != width or not _HEX.fullmatch(digest.lower()) or not name:
            failures.append(f"{path.name} line {number}: not '<{algorithm} hex> <path>'")
            continue
        entries[name] = digest.lower()
    return entries


def _inside(root: Path, relative: str) -> bool:
    resolved = (root / relative).resolve()
    return resolved.is_relative_to(root.resolve())


def verify_bag(
    root: Path, *, public_key: Ed25519PublicKey | None = None, expected_fingerprint: str | None = None
) -> Verification:
    """Check every hash of every manifest and tag manifest, that the payload holds exactly what the manifests list,
    and the signature of the tag manifest; against ``public_key`` or ``expected_fingerprint`` when given (else the
    bag's own key, and ``trusted`` stays False). Never raises for a bad bag: every failure is in the result."""
    result = Verification()
    failures = result.failures
    if not (root / "bagit.txt").is_file():
        failures.append("bagit.txt is missing: not a bag")
        return result
    manifests = {a: root / f"manifest-{a}.txt" for a in ALGORITHMS}
    tag_manifests = {a: root / f"tagmanifest-{a}.txt" for a in ALGORITHMS}
    for path in (*manifests.values(), *tag_manifests.values()):
        if not path.is_file():
            failures.append(f"{path.name} is missing")
    listed: dict[str, dict[str, str]] = {}  # path → algorithm → digest, every manifest and tag manifest
    for algorithm, path in [*manifests.items(), *tag_manifests.items()]:
        if path.is_file():
            for name, digest in _read_manifest(path, algorithm, failures).items():
                if path.name.startswith("tagmanifest-") and name.startswith(f"{PAYLOAD_DIR}/"):
                    failures.append(f"{path.name} lists a payload file: {name}")
                    continue
                listed.setdefault(name, {})[algorithm] = digest
    for name, expected in sorted(listed.items()):
        target = root / name
        if not _inside(root, name):
            failures.append(f"{name}: a manifest names a path outside the bag")
            continue
        if not target.is_file():
            failures.append(f"{name}: listed in a manifest but missing")
            continue
        found = file_digests(target)
        result.files_checked += 1
        for algorithm, digest in sorted(expected.items()):
            if found[algorithm] != digest:
                failures.append(
                    f"{name}: {algorithm} mismatch (manifest {digest[:16]}…, file {found[algorithm][:16]}…)"
                )
    payload = root / PAYLOAD_DIR
    on_disk = {p.relative_to(root).as_posix() for p in payload.rglob("*") if p.is_file()} if payload.is_dir() else set()
    for algorithm, path in manifests.items():
        if path.is_file():
            in_manifest = {n for n, d in listed.items() if n.startswith(f"{PAYLOAD_DIR}/") and algorithm in d}
            failures.extend(f"{name}: in the payload but not in {path.name}" for name in sorted(on_disk - in_manifest))
    _check_signature(root, result, public_key, expected_fingerprint)
    return result


def _check_signature(
    root: Path, result: Verification, public_key: Ed25519PublicKey | None, expected_fingerprint: str | None
) -> None:
    failures = result.failures
    if public_key is None:
        try:
            public_key = load_public_key((root / PUBLIC_KEY_FILE).read_bytes())
        except OSError:
            failures.append(f"{PUBLIC_KEY_FILE} is missing: the signature cannot be checked")
            return
        except SigningKeyError as exc:
            failures.append(f"{PUBLIC_KEY_FILE}: {exc}")
            return
    else:
        result.trusted = True
    result.fingerprint = fingerprint(public_key)
    if expected_fingerprint is not None:
        result.trusted = True
        if result.fingerprint != expected_fingerprint.strip().lower():
            failures.append(
                f"the bag is signed by key {result.fingerprint}, not by the expected {expected_fingerprint.strip()}"
            )
    try:
        signature = (root / SIGNATURE_FILE).read_bytes()
        signed = (root / SIGNED_MANIFEST).read_bytes()
    except OSError as exc:
        failures.append(f"the signature cannot be checked: {Path(exc.filename or '').name or 'a file'} is missing")
        return
    try:
        public_key.verify(signature, signed)
    except InvalidSignature:
        failures.append(
            f"{SIGNATURE_FILE}: the signature of {SIGNED_MANIFEST} does not verify with key {result.fingerprint}"
        )
