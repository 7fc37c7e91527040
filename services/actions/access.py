"""Everything an operator action needs — database, bucket, keys, policy — opened once from the settings.

Used by the admin API and by the ``wa-archive`` CLI, so both act through the same code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.actions.decisions import DecisionPublisher
from services.core.bucket import ArchiveBucket
from services.core.crypto import DekCache, LocalKek
from services.core.key_copies import KeyCopies
from services.core.keyring import Keyring
from services.core.policy import DEFAULT_POLICY, RetentionPolicy, load_policy
from services.core.reader import ArchiveReader
from services.core.schema import SCHEMA_WAIT_S, connect_pool
from services.core.vocabulary import ReaderScope
from services.evidence.signing import fingerprint, load_private_key, load_public_key
from services.governance.erasure_log import ErasureLog
from services.governance.recovery import RECOVERY_ACTOR, reapply_erasures
from services.retention.settings import FourEyesSettings, RetentionSettings


@dataclass(kw_only=True)
class ArchiveAccess:
    pool: asyncpg.Pool
    bucket: ArchiveBucket
    keyring: Keyring
    reader: ArchiveReader
    pepper: bytes
    policy: RetentionPolicy
    # The key that signs the hash chain's checkpoints (None: not configured), and the public keys a checkpoint
    # may be signed with, by fingerprint (this key's and earlier ones'): services/evidence/signing.py.
    signing_key: Ed25519PrivateKey | None = None
    trusted_keys: dict[str, Ed25519PublicKey] = field(default_factory=dict)
    # The work bucket (unlocked, not the archive): export jobs' files, with the same identity as ``bucket``.
    work: ArchiveBucket | None = None
    # What a reader may read (RetentionSettings.reader_scope): their cases' custodians, or everything.
    reader_scope: ReaderScope = "cases"
    # How long an approved break-glass access lasts, in hours (RetentionSettings.break_glass_h).
    break_glass_h: float = 8
    # How long a request waits for its approval, and from how many messages an export is requested (four eyes).
    four_eyes: FourEyesSettings = field(default_factory=FourEyesSettings)
    # Where the decisions on held messages go (None: this process cannot decide one).
    decisions: DecisionPublisher | None = None

    async def close(self) -> None:
        if self.decisions is not None:
            await self.decisions.close()
        await self.pool.close()


async def open_access(
    settings: RetentionSettings, *, schema_wait_s: float = SCHEMA_WAIT_S, reapply_erasures_first: bool = True
) -> ArchiveAccess:
    """Open the archive; a service waits up to ``schema_wait_s`` for the migrator (SchemaNotCurrent after). Every
    erasure of the bucket's erasure log that the database does not know is re-applied first
    (services/governance/recovery.py); what the store raised meanwhile propagates, and nothing is served.
    ``reapply_erasures_first=False`` is for ``wa-archive recover`` alone, whose first step is the same, reported."""
    policy = load_policy(settings.policy_file) if settings.policy_file else DEFAULT_POLICY
    pool = await connect_pool(
        settings.pg.dsn.get_secret_value(),
        min_size=settings.pg.min_connections,
        max_size=settings.pg.max_connections,
        schema_wait_s=schema_wait_s,
    )
    bucket = ArchiveBucket(settings.s3)
    # With the key copies: a rewrap writes them again under the new KEK, and an erasure destroys them.
    kek = LocalKek(settings.keys.kek_bytes(), settings.keys.current_kek_id)
    keyring = Keyring(pool, kek, DekCache(10_000), copies=KeyCopies(bucket))
    # Before the first read: a database restored to before an erasure must not show the erased person again.
    try:
        if reapply_erasures_first:
            await reapply_erasures(pool, ErasureLog(bucket), actor=RECOVERY_ACTOR)
    except BaseException:
        await pool.close()
        raise
    signing_key = (
        load_private_key(settings.signing.private_key.get_secret_value()) if settings.signing.private_key else None
    )
    publics = [load_public_key(text) for text in settings.signing.trusted_public_keys]
    if signing_key is not None:
        publics.append(signing_key.public_key())
    trusted = {fingerprint(key): key for key in publics}
    return ArchiveAccess(
        pool=pool,
        bucket=bucket,
        keyring=keyring,
        reader=ArchiveReader(bucket, keyring),
        pepper=settings.keys.pepper_bytes(),
        policy=policy,
        signing_key=signing_key,
        trusted_keys=trusted,
        reader_scope=settings.reader_scope,
        break_glass_h=settings.break_glass_h,
        four_eyes=settings.four_eyes,
        decisions=DecisionPublisher(settings.kafka, settings.decisions_topic),
        work=ArchiveBucket(
            settings.s3.model_copy(
                update={"bucket": settings.work_bucket, "object_lock_mode": None, "object_lock_days": 0}
            )
        ),
    )
