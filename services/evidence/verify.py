"""``wa-archive verify``: walk the hash chain and the bucket, and report every archived object that is missing,
altered or unexpected, every fault of the chain itself, and every checkpoint that does not verify.

What it reads: every entry of every stream (``chain/<prefix>/streams/``), every checkpoint, the listing of the
archive's objects (``<prefix>/``) and the bytes of each object the chain expects with the size it has (hashed as
they stream in, never held whole). No key: the chain holds digests of the stored ciphertext. What it decides is
:mod:`services.evidence.chain`'s pure functions; this module is the I/O. A store outage raises (the run failed and
proves nothing); whatever the bucket holds is a finding, never an exception.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from services.core.bucket import ArchiveBucket
from services.evidence.chain import (
    BASELINE_STREAM,
    BadCheckpoint,
    Chain,
    ChainEntry,
    ChainFault,
    Change,
    Finding,
    Found,
    ObjectDigest,
    check_against,
    check_stream,
    checkpoints_root,
    compare,
    digest_of,
    expected_objects,
    open_checkpoint,
    pre_chain,
    stream_of_key,
    streams_root,
    to_read,
)

# Objects read at once: each is one GET hashed in a worker thread of the bucket's pool.
READ_CONCURRENCY = 8
# An object is written before its entry (the entry is appended in the transaction that indexes it, and a batch
# consumed again after a crash rewrites its object before its new entry): an object changed this little before the
# chain was read, or since, is judged by the next run, not reported as altered or unexpected by this one.
SETTLE_S = 300.0


@dataclass(kw_only=True)
class VerifyReport:
    prefix: str
    started_at: datetime
    trusted_keys: list[str]  # fingerprints of the keys checkpoints may be signed with
    streams: int = 0
    entries: int = 0
    objects: int = 0  # listed under the prefix
    objects_read: int = 0
    bytes_read: int = 0
    recent: int = 0  # objects changed too recently to judge (SETTLE_S): the next run does
    baselined: int = 0  # objects the chain knows only from a baseline (found, not seen written)
    checkpoints: int = 0  # that verified
    latest_checkpoint: str | None = None  # its time
    seconds: float = 0.0
    findings: list[Finding] = field(default_factory=list)
    chain_faults: list[ChainFault] = field(default_factory=list)
    checkpoint_faults: list[str] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        return not (self.findings or self.chain_faults or self.checkpoint_faults)

    def count(self, kind: str) -> int:
        return sum(1 for f in self.findings if f.kind == kind)

    def to_json(self) -> dict[str, object]:
        return {
            "prefix": self.prefix,
            "started_at": self.started_at.isoformat(),
            "trusted_keys": self.trusted_keys,
            "streams": self.streams,
            "entries": self.entries,
            "objects": self.objects,
            "objects_read": self.objects_read,
            "recent": self.recent,
            "baselined": self.baselined,
            "bytes_read": self.bytes_read,
            "checkpoints": self.checkpoints,
            "latest_checkpoint": self.latest_checkpoint,
            "seconds": round(self.seconds, 3),
            "clean": self.clean,
            "missing": self.count("missing"),
            "altered": self.count("altered"),
            "unexpected": self.count("unexpected"),
            "findings": [{"kind": f.kind, "key": f.key, "detail": f.detail} for f in self.findings],
            "chain_faults": [
                {"stream": f.stream, "seq": f.seq, "kind": f.kind, "detail": f.detail} for f in self.chain_faults
            ],
            "checkpoint_faults": self.checkpoint_faults,
        }


async def _read_all(bucket: ArchiveBucket, keys: list[str]) -> dict[str, bytes]:
    limit = asyncio.Semaphore(READ_CONCURRENCY)

    async def one(key: str) -> tuple[str, bytes]:
        async with limit:
            return key, await bucket.get(key)

    return dict(await asyncio.gather(*(one(key) for key in keys)))


@dataclass(frozen=True, slots=True)
class ReadChain:
    entries: list[ChainEntry]
    faults: list[ChainFault]
    hashes: dict[str, dict[int, str]]  # stream -> seq -> SHA-256 of the entry's object
    streams: int

    def began(self) -> datetime | None:
        """When the chain's first entry was written (None: it has none)."""
        first = min((e.at for e in self.entries), default=None)
        return None if first is None else datetime.strptime(first, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


async def read_chain(bucket: ArchiveBucket) -> ReadChain:
    """Every entry of every stream under the bucket's prefix, checked for its links, with the faults found."""
    prefix = bucket.settings.prefix
    faults: list[ChainFault] = []
    segment_keys: dict[str, list[tuple[int, str]]] = {}
    async for stored in bucket.list_objects(streams_root(prefix)):
        place = stream_of_key(prefix, stored.key)
        if place is None:
            faults.append(ChainFault("?", -1, "misplaced", f"{stored.key} is not an entry's key"))
            continue
        segment_keys.setdefault(place[0], []).append((place[1], stored.key))
    bodies = await _read_all(bucket, [key for keys in segment_keys.values() for _, key in keys])
    entries: list[ChainEntry] = []
    hashes: dict[str, dict[int, str]] = {}
    for stream, keys in sorted(segment_keys.items()):
        checked = check_stream(prefix, stream, [(seq, bodies[key]) for seq, key in keys])
        entries += checked.entries
        faults += checked.faults
        hashes[stream] = {seq: digest_of(bodies[key]) for seq, key in keys}
    return ReadChain(entries, faults, hashes, len(segment_keys))


async def verify_archive(
    bucket: ArchiveBucket,
    *,
    trusted: Mapping[str, Ed25519PublicKey],
    progress: Callable[[int, int], None] | None = None,
    settle_s: float = SETTLE_S,
) -> VerifyReport:
    """Verify the archive under the bucket's prefix against its chain and checkpoints (module docstring).
    ``trusted`` maps fingerprints to the public keys a checkpoint may be signed with; ``progress`` is told
    (objects hashed, objects to hash) as the walk goes; an object changed less than ``settle_s`` before the chain
    was read is left to the next run when it is not as the chain says (it may be waiting for its entry)."""
    prefix = bucket.settings.prefix
    started = time.monotonic()
    report = VerifyReport(prefix=prefix, started_at=datetime.now(UTC), trusted_keys=sorted(trusted))
    settled_before = report.started_at - timedelta(seconds=settle_s)

    # 1. The chain: every stream's entries, linked.
    chain = await read_chain(bucket)
    entries, hashes = chain.entries, chain.hashes
    report.chain_faults += chain.faults
    report.streams, report.entries = chain.streams, len(entries)
    report.baselined = sum(len(e.change.written) for e in entries if e.change.baseline)

    # 2. The checkpoints: signed by a trusted key, and every head they signed still in its stream.
    checkpoint_keys = [stored.key async for stored in bucket.list_objects(checkpoints_root(prefix))]
    for key, raw in sorted((await _read_all(bucket, checkpoint_keys)).items()):
        try:
            checkpoint, _signer = open_checkpoint(raw, trusted)
        except BadCheckpoint as exc:
            report.checkpoint_faults.append(f"{key}: {exc}")
            continue
        if checkpoint.prefix != prefix:
            report.checkpoint_faults.append(f"{key}: signed for the prefix {checkpoint.prefix!r}")
            continue
        report.checkpoints += 1
        report.latest_checkpoint = max(report.latest_checkpoint or "", checkpoint.at)
        for stream, head in checkpoint.heads.items():
            fault = check_against(stream, hashes.get(stream, {}), head)
            if fault is not None and fault not in report.chain_faults:
                report.chain_faults.append(fault)

    # 3. The bucket against what the chain expects: listed sizes first, then the bytes of those that match.
    expected = expected_objects(entries)
    listed: dict[str, int] = {}
    recent: set[str] = set()
    async for stored in bucket.list_objects(f"{prefix}/"):
        listed[stored.key] = stored.size
        if stored.last_modified >= settled_before:
            recent.add(stored.key)
    report.objects = len(listed)
    reading = to_read(expected, listed)
    found = {key: Found(size) for key, size in listed.items()}
    limit = asyncio.Semaphore(READ_CONCURRENCY)
    done = 0

    async def hash_one(key: str) -> None:
        nonlocal done
        async with limit:
            size, sha256 = await bucket.sha256(key)
        found[key] = Found(size, sha256)
        report.bytes_read += size
        done += 1
        if progress is not None:
            progress(done, len(reading))

    if progress is not None:
        progress(0, len(reading))
    await asyncio.gather(*(hash_one(key) for key in reading))
    report.objects_read = done
    findings = compare(expected, found)
    report.findings = [f for f in findings if f.kind == "missing" or f.key not in recent]
    report.recent = len(findings) - len(report.findings)
    report.seconds = time.monotonic() - started
    return report


# Digests per baseline entry: an entry is one small object; a baseline of a million objects is a thousand of them.
BASELINE_ENTRY_OBJECTS = 1_000


class ChainFaulty(RuntimeError):
    """The chain has faults: a baseline is not written over a chain that does not verify."""


@dataclass(kw_only=True)
class BaselineReport:
    prefix: str
    chain_began: str | None  # the chain's first entry (None: none before this baseline)
    objects: int = 0  # listed under the prefix
    entered: int = 0  # objects the baseline entered (never named by the chain, changed before it began)
    bytes_read: int = 0
    left: int = 0  # objects the chain does not name that changed after it began: findings, not baselined
    entries: int = 0  # baseline entries appended

    def to_json(self) -> dict[str, object]:
        return dataclasses.asdict(self)


async def baseline_archive(
    bucket: ArchiveBucket,
    pool: asyncpg.Pool,
    *,
    progress: Callable[[int, int], None] | None = None,
    settle_s: float = SETTLE_S,
) -> BaselineReport:
    """Enter in the chain (stream :data:`~services.evidence.chain.BASELINE_STREAM`, entries marked ``baseline``)
    the digests of the objects that were in the bucket before the chain began: never named by an entry, last changed
    before the chain's first entry and more than ``settle_s`` ago. An upgrade from a release without the chain runs
    it once; a second run enters only what the first left (nothing, normally). An object the chain does not name
    that changed after the chain began is left out: ``wa-archive verify`` goes on reporting it.
    Raises :class:`ChainFaulty` when the chain does not verify, and what the store or the database raised (the
    entries appended before stay: each is complete)."""
    prefix = bucket.settings.prefix
    chain = await read_chain(bucket)
    if chain.faults:
        raise ChainFaulty(f"the chain has {len(chain.faults)} fault(s): run `wa-archive verify` and resolve them first")
    began = chain.began()
    report = BaselineReport(prefix=prefix, chain_began=None if began is None else began.isoformat())
    expected = expected_objects(chain.entries)
    listed: dict[str, datetime] = {}
    async for stored in bucket.list_objects(f"{prefix}/"):
        listed[stored.key] = stored.last_modified
    report.objects = len(listed)
    keys = pre_chain(expected, listed, began, datetime.now(UTC) - timedelta(seconds=settle_s))
    report.left = sum(1 for key in listed if key not in expected) - len(keys)
    appender = Chain(bucket, can_list=True)
    limit = asyncio.Semaphore(READ_CONCURRENCY)

    async def digest(key: str) -> ObjectDigest:
        async with limit:
            size, sha256 = await bucket.sha256(key)
        return ObjectDigest(key, sha256, size)

    if progress is not None:
        progress(0, len(keys))
    for start in range(0, len(keys), BASELINE_ENTRY_OBJECTS):
        written = tuple(await asyncio.gather(*(digest(k) for k in keys[start : start + BASELINE_ENTRY_OBJECTS])))
        async with pool.acquire() as conn, conn.transaction():
            await appender.append(conn, BASELINE_STREAM, Change(written=written, baseline=True))
        report.entries += 1
        report.entered += len(written)
        report.bytes_read += sum(d.size for d in written)
        if progress is not None:
            progress(report.entered, len(keys))
    return report
