"""Where the key that signs exported bags comes from (a Kubernetes Secret), nested in the settings of whatever
writes exports (``WA_RETENTION_EXPORT_SIGNING__KEY`` or ``…__KEY_FILE`` for the CLI)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel, SecretStr, model_validator

from services.evidence.bag import SigningKeyError, load_private_key


class ExportSigningSettings(BaseModel):
    """The Ed25519 private key that signs exported bags: ``key`` (PEM, or the base64 of the raw 32-byte seed: the
    Secret as an environment variable) or ``key_file`` (a file holding either: the Secret mounted as a volume), not
    both. Unset: exports that need a signature are refused with a message saying so; nothing else needs it.

    A ``key`` given is checked at start-up; a ``key_file`` is read when a bag is signed (a mounted Secret is
    updated in place on rotation)."""

    key: SecretStr | None = None
    key_file: Path | None = None

    @model_validator(mode="after")
    def _one_readable_key(self) -> ExportSigningSettings:
        if self.key is not None and self.key_file is not None:
            raise ValueError("set key or key_file, not both")
        if self.key is not None:
            load_private_key(self.key.get_secret_value().encode())  # SigningKeyError is a ValueError: says why
        return self

    @property
    def configured(self) -> bool:
        return self.key is not None or self.key_file is not None

    def private_key(self) -> Ed25519PrivateKey:
        """The signing key; :class:`SigningKeyError` when none is configured or it cannot be read (never quoting
        it)."""
        if self.key is not None:
            return load_private_key(self.key.get_secret_value().encode())
        if self.key_file is not None:
            try:
                material = self.key_file.read_bytes()
            except OSError as exc:
                raise SigningKeyError(f"the export signing key file cannot be read: {exc.strerror}") from None
            return load_private_key(material)
        raise SigningKeyError(
            "no export signing key: set WA_RETENTION_EXPORT_SIGNING__KEY (PEM or base64) or "
            "WA_RETENTION_EXPORT_SIGNING__KEY_FILE (docs/OPERATIONS.md, 'Export signing key')"
        )
