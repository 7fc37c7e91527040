"""Ed25519 signatures of what the archive vouches for (the hash chain's checkpoints, export bags): load a key, sign,
verify, and name a public key by its fingerprint.

Keys are given as text, as a Kubernetes Secret or an environment variable carries them: PEM (``openssl genpkey
-algorithm ed25519`` for a private key, ``openssl pkey -pubout`` for its public key), or the base64 of the 32 raw
key bytes (``python -m services.evidence.signing`` prints a new private key in that form). A key that cannot be
read raises :class:`KeyUnreadable`, whose message never quotes the key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

RAW_KEY_BYTES = 32
FINGERPRINT_PREFIX = "ed25519:sha256:"


class KeyUnreadable(ValueError):
    """The text is not an Ed25519 key in a form this module reads."""


def _raw(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyUnreadable(f"{what} is neither PEM nor base64") from None
    if len(raw) != RAW_KEY_BYTES:
        raise KeyUnreadable(f"{what} must be PEM or the base64 of {RAW_KEY_BYTES} bytes, got {len(raw)} bytes")
    return raw


def load_private_key(text: str) -> Ed25519PrivateKey:
    """The private key in ``text`` (PEM PKCS#8, or base64 of the 32-byte seed)."""
    if text.lstrip().startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_private_key(text.encode(), password=None)
        except (ValueError, TypeError):
            raise KeyUnreadable("the signing key is not a readable unencrypted PEM private key") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise KeyUnreadable(f"the signing key is a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PrivateKey.from_private_bytes(_raw(text, "the signing key"))


def load_public_key(text: str) -> Ed25519PublicKey:
    """The public key in ``text`` (PEM SubjectPublicKeyInfo, or base64 of the 32 raw bytes)."""
    if text.lstrip().startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError):
            raise KeyUnreadable("the public key is not a readable PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise KeyUnreadable(f"the public key is a {type(key).__name__}, not an Ed25519 key")
        return key
    return Ed25519PublicKey.from_public_bytes(_raw(text, "the public key"))


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def public_text(key: Ed25519PublicKey) -> str:
    """The public key as base64 of its raw bytes: what :func:`load_public_key` reads back."""
    return base64.b64encode(public_bytes(key)).decode()


def fingerprint(key: Ed25519PublicKey) -> str:
    """``ed25519:sha256:`` and the hex SHA-256 of the raw public key: how a person compares the key a document
    was signed with to the one they were given, and how a signed document names its key."""
    return FINGERPRINT_PREFIX + hashlib.sha256(public_bytes(key)).hexdigest()


def sign(key: Ed25519PrivateKey, data: bytes) -> bytes:
    return key.sign(data)


def verify(key: Ed25519PublicKey, data: bytes, signature: bytes) -> bool:
    """True when ``signature`` is ``key``'s signature of ``data``; False for any other signature (never raises)."""
    try:
        key.verify(signature, data)
    except InvalidSignature:
        return False
    return True


def new_private_key_text() -> str:
    """A fresh private key, as the base64 of its seed (for a Secret)."""
    seed = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return base64.b64encode(seed).decode()


if __name__ == "__main__":
    import sys

    private = new_private_key_text()
    print(private)  # for the Secret, and nowhere else
    print(f"public key {public_text(load_private_key(private).public_key())}", file=sys.stderr)
    print(fingerprint(load_private_key(private).public_key()), file=sys.stderr)
