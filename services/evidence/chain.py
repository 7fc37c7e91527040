"""The hash chain of archived objects: what was written (the SHA-256 of each object's stored bytes), what was
deleted and why (retention, erasure), and which keys an erasure destroyed, in append-only streams of entries linked
by hashes, with signed checkpoints of their heads.

Where it lives (docs/ARCHIVE_FORMAT.md, "The hash chain"): every entry is one small object of the bucket,
``chain/<prefix>/streams/<stream>/<seq:012d>.json``, whose ``prev`` is the SHA-256 of the previous entry's object in
its stream; a checkpoint, ``chain/<prefix>/checkpoints/<time>.json``, is the heads of every stream (sequence number
and hash) signed with Ed25519. The chain is in the bucket, not in PostgreSQL, so a database restore cannot rewrite
it; PostgreSQL keeps each stream's head (``chain_heads``) only so that an append needs no read of the bucket.

Streams, and why there are several: an append must know its stream's head, so two writers must never append to
one stream at once. Each archived Kafka partition has its stream (``archive/<topic>/<partition>``: the archiver
that owns the partition is the only writer in normal operation), the media sweep has one (``media-sweep``), and
retention and erasure share one (``governance``). Writers of the same stream (a partition moving between archivers,
two sweeps) are serialised by a row lock on the stream's head, taken in the same transaction that indexes what the
entry records: the entry is durable before the index says the object exists.

The pure parts here (entries, their encoding and links, checkpoints, what the chain expects the bucket to hold)
are what :mod:`services.evidence.verify` checks the bucket against; :class:`Chain` is the I/O.
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Final, Literal, get_args

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from services.core.bucket import ArchiveBucket
from services.core.db import Connection, ConnectionOrPool
from services.evidence.signing import fingerprint, sign, verify

log = logging.getLogger("wa_archive.chain")

ENTRY_FORMAT: Final = "wa-archive chain 1"
CHECKPOINT_FORMAT: Final = "wa-archive chain checkpoint 1"
CHAIN_ROOT: Final = "chain"
GENESIS: Final = "0" * 64  # the ``prev`` of a stream's first entry
GOVERNANCE_STREAM: Final = "governance"
MEDIA_SWEEP_STREAM: Final = "media-sweep"
# Objects written before the chain existed, entered once by `wa-archive chain baseline` (services/evidence/verify.py)
BASELINE_STREAM: Final = "baseline"

DeletionCause = Literal["retention", "erasure"]
DELETION_CAUSES: Final = frozenset(get_args(DeletionCause))


class UnreadableEntry(ValueError):
    """Bytes under the chain's folder that are not an entry (or checkpoint) this version can read."""


def archive_stream(topic: str, partition: int) -> str:
    """The stream of the objects archived from one Kafka partition."""
    return f"archive/{topic}/{partition:05d}"


def chain_root(prefix: str) -> str:
    return f"{CHAIN_ROOT}/{prefix}/"


def streams_root(prefix: str) -> str:
    return f"{chain_root(prefix)}streams/"


def checkpoints_root(prefix: str) -> str:
    return f"{chain_root(prefix)}checkpoints/"


def segment_key(prefix: str, stream: str, seq: int) -> str:
    """The object of entry ``seq`` of ``stream``: zero-padded, so a listing is in sequence order."""
    return f"{streams_root(prefix)}{stream}/{seq:012d}.json"


def stream_of_key(prefix: str, key: str) -> tuple[str, int] | None:
    """(stream, seq) of a segment key, or None if ``key`` is not one."""
    root = streams_root(prefix)
    if not key.startswith(root) or not key.endswith(".json"):
        return None
    stream, _, name = key[len(root) :].rpartition("/")
    digits = name.removesuffix(".json")
    if not stream or len(digits) != 12 or not digits.isdigit():
        return None
    return stream, int(digits)


def digest_of(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def _moment(at: datetime) -> str:
    if at.tzinfo is None:
        raise ValueError("a naive datetime is not a moment: give it a time zone")
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True, order=True)
class ObjectDigest:
    """An object as written: its key, the SHA-256 (hex) of its stored bytes (ciphertext: no key is needed to check
    it) and its size."""

    key: str
    sha256: str
    size: int

    @classmethod
    def of(cls, key: str, body: bytes) -> ObjectDigest:
        return cls(key, digest_of(body), len(body))


@dataclass(frozen=True, slots=True, kw_only=True, order=True)
class Deletion:
    """An object deleted on purpose, and why: by a retention run (its records' classes and when the object expired)
    or by an erasure (the request)."""

    key: str
    cause: DeletionCause
    retention_classes: tuple[str, ...] = ()
    expired_at: str | None = None
    request_ref: str | None = None

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {"key": self.key, "cause": self.cause}
        if self.cause == "retention":
            out["retention_classes"] = list(self.retention_classes)
            out["expired_at"] = self.expired_at
        else:
            out["request_ref"] = self.request_ref
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class KeysDestroyed:
    """An erasure's crypto-shredding: its ciphertext stays where it is, unreadable; these keys are what it destroyed
    (pseudonym, key id). No personal data: pseudonyms and ids only, as in the erasure log."""

    request_ref: str
    keys: tuple[tuple[str, str], ...]
    erased_at: str

    def to_json(self) -> dict[str, object]:
        return {
            "request_ref": self.request_ref,
            "keys": [list(k) for k in sorted(self.keys)],
            "erased_at": self.erased_at,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """What one entry records: objects written, objects deleted, an erasure's destroyed keys. ``baseline``: the
    ``written`` objects were not seen written; they were found in the bucket, as they are, when the chain began
    (``wa-archive chain baseline``), which proves what they held from then on, not before."""

    written: tuple[ObjectDigest, ...] = ()
    deleted: tuple[Deletion, ...] = ()
    erasure: KeysDestroyed | None = None
    baseline: bool = False

    def __bool__(self) -> bool:
        return bool(self.written or self.deleted or self.erasure)


@dataclass(frozen=True, slots=True)
class Head:
    """A stream's last entry: its sequence number (-1: none yet) and hash."""

    seq: int
    hash: str


EMPTY_HEAD: Final = Head(-1, GENESIS)


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainEntry:
    prefix: str
    stream: str
    seq: int
    prev: str
    at: str  # UTC, microseconds: orders entries of different streams
    change: Change

    def encode(self) -> bytes:
        """The entry's stored bytes (JSON, keys sorted): what its hash and the next entry's ``prev`` are of."""
        body: dict[str, object] = {
            "format": ENTRY_FORMAT,
            "prefix": self.prefix,
            "stream": self.stream,
            "seq": self.seq,
            "prev": self.prev,
            "at": self.at,
            "written": [[d.key, d.sha256, d.size] for d in self.change.written],
            "deleted": [d.to_json() for d in self.change.deleted],
        }
        if self.change.erasure is not None:
            body["erasure"] = self.change.erasure.to_json()
        if self.change.baseline:
            body["baseline"] = True
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    @classmethod
    def decode(cls, raw: bytes) -> ChainEntry:
        try:
            fields = orjson.loads(raw)
            if not isinstance(fields, dict) or fields.get("format") != ENTRY_FORMAT:
                raise UnreadableEntry(f"not a chain entry of format {ENTRY_FORMAT!r}")
            written = tuple(ObjectDigest(str(k), str(h), int(n)) for k, h, n in fields["written"])
            deleted = tuple(_deletion(d) for d in fields["deleted"])
            erasure = fields.get("erasure")
            return cls(
                prefix=str(fields["prefix"]),
                stream=str(fields["stream"]),
                seq=int(fields["seq"]),
                prev=str(fields["prev"]),
                at=str(fields["at"]),
                change=Change(
                    written=written,
                    deleted=deleted,
                    erasure=None
                    if erasure is None
                    else KeysDestroyed(
                        request_ref=str(erasure["request_ref"]),
                        keys=tuple((str(r), str(d)) for r, d in erasure["keys"]),
                        erased_at=str(erasure["erased_at"]),
                    ),
                    baseline=fields.get("baseline") is True,
                ),
            )
        except UnreadableEntry:
            raise
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            raise UnreadableEntry(f"unreadable chain entry: {type(exc).__name__}") from None


def _deletion(fields: Mapping[str, object]) -> Deletion:
    cause = fields["cause"]
    if cause not in DELETION_CAUSES:
        raise ValueError("unknown deletion cause")
    classes = fields.get("retention_classes") or []
    expired, request = fields.get("expired_at"), fields.get("request_ref")
    return Deletion(
        key=str(fields["key"]),
        cause="retention" if cause == "retention" else "erasure",
        retention_classes=tuple(str(c) for c in classes) if isinstance(classes, list) else (),
        expired_at=None if expired is None else str(expired),
        request_ref=None if request is None else str(request),
    )


def next_entry(prefix: str, stream: str, head: Head, change: Change, at: datetime) -> tuple[ChainEntry, bytes, Head]:
    """The entry that follows ``head`` in ``stream``, its bytes, and the stream's new head."""
    entry = ChainEntry(prefix=prefix, stream=stream, seq=head.seq + 1, prev=head.hash, at=_moment(at), change=change)
    body = entry.encode()
    return entry, body, Head(entry.seq, digest_of(body))


# ---- checking a stream ------------------------------------------------------------------------------------------


ChainFaultKind = Literal["unreadable", "gap", "broken link", "misplaced", "behind checkpoint", "head altered"]


@dataclass(frozen=True, slots=True)
class ChainFault:
    """Something wrong with the chain itself: an entry missing, altered, moved or unreadable (each means the chain
    was tampered with, or a writer misbehaved), or a stream shorter than a signed checkpoint says it was."""

    stream: str
    seq: int
    kind: ChainFaultKind
    detail: str


@dataclass(frozen=True, slots=True)
class CheckedStream:
    entries: list[ChainEntry]  # those that could be read, in sequence order
    faults: list[ChainFault]
    head: Head  # as the bucket holds it (the last readable entry)


def check_stream(prefix: str, stream: str, segments: Sequence[tuple[int, bytes]]) -> CheckedStream:
    """Check one stream's entries (``segments``: (seq from the object key, stored bytes), any order): numbered from 0
    without a gap, each where its key says, each linked to the one before. Every fault is reported and checking goes
    on past it, so one altered entry is one fault, not a cascade."""
    entries: list[ChainEntry] = []
    faults: list[ChainFault] = []
    expected_seq, prev_hash = 0, GENESIS
    for seq, body in sorted(segments, key=lambda s: s[0]):
        if seq != expected_seq:
            faults.append(ChainFault(stream, expected_seq, "gap", f"entries {expected_seq}-{seq - 1} are missing"))
        try:
            entry = ChainEntry.decode(body)
        except UnreadableEntry as exc:
            faults.append(ChainFault(stream, seq, "unreadable", str(exc)))
            expected_seq, prev_hash = seq + 1, digest_of(body)
            continue
        if (entry.prefix, entry.stream, entry.seq) != (prefix, stream, seq):
            faults.append(
                ChainFault(stream, seq, "misplaced", f"the object holds entry {entry.seq} of stream {entry.stream!r}")
            )
        elif seq == expected_seq and entry.prev != prev_hash:
            faults.append(
                ChainFault(stream, seq, "broken link", f"does not follow entry {seq - 1}: one of them was altered")
            )
        entries.append(entry)
        expected_seq, prev_hash = seq + 1, digest_of(body)
    return CheckedStream(entries, faults, Head(expected_seq - 1, prev_hash) if segments else EMPTY_HEAD)


def check_against(stream: str, checked: Mapping[int, str], signed: Head) -> ChainFault | None:
    """A fault when the stream (``checked``: seq -> hash of each stored entry) no longer holds the head a checkpoint
    signed: truncated (entries removed after it was signed) or the entry altered."""
    found = checked.get(signed.seq)
    if found is None:
        return ChainFault(stream, signed.seq, "behind checkpoint", "a signed checkpoint has this entry; it is gone")
    if found != signed.hash:
        return ChainFault(stream, signed.seq, "head altered", "differs from the entry a signed checkpoint has")
    return None


# ---- what the chain says the bucket holds -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expectation:
    """What the chain says of one key: written with this digest, or deleted (and why), at ``at``."""

    at: str
    written: ObjectDigest | None
    deleted: Deletion | None


def expected_objects(entries: Iterable[ChainEntry]) -> dict[str, Expectation]:
    """For every key the chain names, its last word: the last write or deletion, entries taken in time order (then
    stream and sequence). A key written again (a batch consumed again after a crash overwrites its object) takes its
    newest digest."""
    expected: dict[str, Expectation] = {}
    for entry in sorted(entries, key=lambda e: (e.at, e.stream, e.seq)):
        for written in entry.change.written:
            expected[written.key] = Expectation(entry.at, written, None)
        for deleted in entry.change.deleted:
            expected[deleted.key] = Expectation(entry.at, None, deleted)
    return expected


FindingKind = Literal["missing", "altered", "unexpected"]
FINDING_KINDS: Final[tuple[FindingKind, ...]] = get_args(FindingKind)


@dataclass(frozen=True, slots=True, order=True)
class Finding:
    """An object the bucket does not hold as the chain says: ``missing`` (written, not deleted, not there),
    ``altered`` (there, other bytes) or ``unexpected`` (there, never written, or deleted)."""

    kind: FindingKind
    key: str
    detail: str


@dataclass(frozen=True, slots=True)
class Found:
    """An object of the bucket: its size from the listing and, once read, its SHA-256 (None: not read)."""

    size: int
    sha256: str | None = None


def pre_chain(
    expected: Mapping[str, Expectation], listed: Mapping[str, datetime], began: datetime | None, settled: datetime
) -> list[str]:
    """The listed objects a baseline may enter: never named by the chain, and last changed before the chain began
    (``began``: its first entry; None: no entry yet) and before ``settled`` (an object is written before its entry).
    An object the chain does not name that changed after the chain began is a finding, never baselined."""
    # A store's Last-Modified counts whole seconds: an object changed in the second the chain began is left out.
    cutoff = settled if began is None else min(began - timedelta(seconds=1), settled)
    return sorted(key for key, changed in listed.items() if key not in expected and changed < cutoff)


def to_read(expected: Mapping[str, Expectation], listed: Mapping[str, int]) -> list[str]:
    """The listed keys whose bytes must be hashed: those the chain expects with the size they have (a different size
    is already an alteration, and an unexpected object needs no reading)."""
    return sorted(
        key
        for key, size in listed.items()
        if (want := expected.get(key)) is not None and want.written is not None and want.written.size == size
    )


def compare(expected: Mapping[str, Expectation], found: Mapping[str, Found]) -> list[Finding]:
    """Every object the bucket (``found``) does not hold as the chain (``expected``) says."""
    findings: list[Finding] = []
    for key, want in expected.items():
        have = found.get(key)
        if want.written is not None:
            if have is None:
                findings.append(Finding("missing", key, f"written {want.at}, not deleted since"))
            elif have.size != want.written.size:
                findings.append(Finding("altered", key, f"{have.size} bytes, written with {want.written.size}"))
            elif have.sha256 is not None and have.sha256 != want.written.sha256:
                findings.append(Finding("altered", key, "its bytes differ from those written"))
        elif have is not None and want.deleted is not None:
            findings.append(Finding("unexpected", key, f"deleted by {want.deleted.cause} {want.at}, present again"))
    for key in found:
        if key not in expected:
            findings.append(Finding("unexpected", key, "no entry of the chain wrote it"))
    return sorted(findings)


# ---- checkpoints ------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """The heads of every stream at ``at``, signed: what a later rewrite of the chain cannot match."""

    prefix: str
    at: str
    heads: Mapping[str, Head] = field(default_factory=dict)

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "format": CHECKPOINT_FORMAT,
                "prefix": self.prefix,
                "at": self.at,
                "heads": {s: [h.seq, h.hash] for s, h in sorted(self.heads.items())},
            },
            option=orjson.OPT_SORT_KEYS,
        )


class BadCheckpoint(ValueError):
    """A checkpoint that cannot be trusted: unreadable, signed by an unknown key, or its signature does not match."""


def seal_checkpoint(checkpoint: Checkpoint, key: Ed25519PrivateKey) -> bytes:
    """The checkpoint's object: its body, the signing key's fingerprint and the Ed25519 signature of the body."""
    body = checkpoint.body()
    return orjson.dumps(
        {
            "checkpoint": orjson.Fragment(body),
            "key": fingerprint(key.public_key()),
            "signature": base64.b64encode(sign(key, body)).decode(),
        }
    )


def open_checkpoint(raw: bytes, keys: Mapping[str, Ed25519PublicKey]) -> tuple[Checkpoint, str]:
    """The checkpoint in ``raw`` and the fingerprint of the key that signed it, if one of ``keys`` (by fingerprint)
    did; :class:`BadCheckpoint` otherwise."""
    try:
        outer = orjson.loads(raw)
        inner = outer["checkpoint"]
        body = orjson.dumps(inner, option=orjson.OPT_SORT_KEYS)
        signer, signature = str(outer["key"]), base64.b64decode(str(outer["signature"]), validate=True)
        if inner.get("format") != CHECKPOINT_FORMAT:
            raise BadCheckpoint(f"not a checkpoint of format {CHECKPOINT_FORMAT!r}")
        checkpoint = Checkpoint(
            prefix=str(inner["prefix"]),
            at=str(inner["at"]),
            heads={str(s): Head(int(seq), str(h)) for s, (seq, h) in inner["heads"].items()},
        )
    except BadCheckpoint:
        raise
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise BadCheckpoint(f"unreadable checkpoint: {type(exc).__name__}") from None
    public = keys.get(signer)
    if public is None:
        raise BadCheckpoint(f"signed by {signer}, which is not a trusted key")
    if not verify(public, body, signature):
        raise BadCheckpoint(f"its signature by {signer} does not match its content")
    return checkpoint, signer


def checkpoint_key(prefix: str, at: datetime) -> str:
    return f"{checkpoints_root(prefix)}{at.astimezone(UTC).strftime('%Y%m%dT%H%M%S.%fZ')}.json"


# ---- the I/O ----------------------------------------------------------------------------------------------------


class Chain:
    """The chain of one archive (its bucket and prefix): appends, heads, checkpoints.

    ``can_list``: the bucket identity may list and read (retention's, the CLI's; the archiver's may only write).
    Such a writer, the first time it appends to a stream, catches the database's head up with the bucket's, in case
    the database was restored to an earlier point since: appending from a stale head would overwrite entries.
    An archiver relies on ``wa-archive recover`` (:meth:`resync_heads`) for that, run before archivers start again.
    """

    def __init__(self, bucket: ArchiveBucket, *, can_list: bool = False) -> None:
        self.bucket = bucket
        self.prefix = bucket.settings.prefix
        self.can_list = can_list
        self._synced: set[str] = set()

    async def append(self, conn: Connection, stream: str, change: Change, *, now: datetime | None = None) -> Head:
        """Append ``change`` to ``stream`` inside the caller's transaction on ``conn``: lock the stream's head row,
        write the entry's object (under Object Lock when configured), move the head. The row stays locked until
        the caller commits, so appends to one stream are serialised across processes. If the transaction does not
        commit, the entry's object is overwritten by the next append (same sequence number), which is what
        recorded the object's write again. Raises what the store or the database raised."""
        head = await self._locked_head(conn, stream)
        if self.can_list and stream not in self._synced:
            head = await self._bucket_head(stream, head)
            self._synced.add(stream)
        _entry, body, new_head = next_entry(self.prefix, stream, head, change, now or datetime.now(UTC))
        await self.bucket.put(segment_key(self.prefix, stream, new_head.seq), body)
        await conn.execute(
            "UPDATE chain_heads SET seq = $3, hash = $4, appended_at = now() WHERE prefix = $1 AND stream = $2",
            self.prefix,
            stream,
            new_head.seq,
            bytes.fromhex(new_head.hash),
        )
        return new_head

    async def _locked_head(self, conn: Connection, stream: str) -> Head:
        locking = "SELECT seq, hash FROM chain_heads WHERE prefix = $1 AND stream = $2 FOR UPDATE"
        row = await conn.fetchrow(locking, self.prefix, stream)
        if row is None:  # the stream's first append (two at once: one inserts, both then lock the same row)
            await conn.execute(
                "INSERT INTO chain_heads (prefix, stream, seq, hash) VALUES ($1, $2, -1, $3) ON CONFLICT DO NOTHING",
                self.prefix,
                stream,
                bytes.fromhex(GENESIS),
            )
            row = await conn.fetchrow(locking, self.prefix, stream)
        assert row is not None  # inserted just above if it was not there
        return Head(int(row["seq"]), bytes(row["hash"]).hex())

    async def _bucket_head(self, stream: str, known: Head) -> Head:
        """The stream's last entry in the bucket if it is past ``known`` (the database is behind), else ``known``."""
        after = segment_key(self.prefix, stream, known.seq) if known.seq >= 0 else ""
        last: str | None = None
        async for stored in self.bucket.list_objects(f"{streams_root(self.prefix)}{stream}/", start_after=after):
            last = stored.key
        if last is None:
            return known
        place = stream_of_key(self.prefix, last)
        if place is None:
            return known
        body = await self.bucket.get(last)
        log.warning(
            "chain stream %s: the database's head was %d, the bucket's is %d: continuing", stream, known.seq, place[1]
        )
        return Head(place[1], digest_of(body))

    async def heads(self, conn: ConnectionOrPool) -> dict[str, Head]:
        rows = await conn.fetch(
            "SELECT stream, seq, hash FROM chain_heads WHERE prefix = $1 AND seq >= 0 ORDER BY stream", self.prefix
        )
        return {row["stream"]: Head(int(row["seq"]), bytes(row["hash"]).hex()) for row in rows}

    async def resync_heads(self, conn: ConnectionOrPool) -> dict[str, Head]:
        """Set every stream's head in the database to the bucket's (after a restore or loss of the database): what
        ``wa-archive recover`` does before archivers append again. Returns the heads."""
        last: dict[str, str] = {}
        async for stored in self.bucket.list_objects(streams_root(self.prefix)):
            place = stream_of_key(self.prefix, stored.key)
            if place is not None:
                last[place[0]] = stored.key  # listed in key order: the last one is the head
        heads: dict[str, Head] = {}
        for stream, key in last.items():
            place = stream_of_key(self.prefix, key)
            assert place is not None
            heads[stream] = Head(place[1], digest_of(await self.bucket.get(key)))
        for stream, head in heads.items():
            await conn.execute(
                "INSERT INTO chain_heads (prefix, stream, seq, hash) VALUES ($1, $2, $3, $4)"
                " ON CONFLICT (prefix, stream) DO UPDATE SET seq = excluded.seq, hash = excluded.hash,"
                " appended_at = now()",
                self.prefix,
                stream,
                head.seq,
                bytes.fromhex(head.hash),
            )
        return heads

    async def write_checkpoint(
        self, conn: ConnectionOrPool, key: Ed25519PrivateKey, *, now: datetime | None = None
    ) -> tuple[str, Checkpoint]:
        """Sign the heads of every stream as the database knows them and store the checkpoint; returns its key and
        the checkpoint. What the scheduler calls, and what an export calls to pin the archive it was made from."""
        at = now or datetime.now(UTC)
        checkpoint = Checkpoint(prefix=self.prefix, at=_moment(at), heads=await self.heads(conn))
        object_key = checkpoint_key(self.prefix, at)
        await self.bucket.put(object_key, seal_checkpoint(checkpoint, key), now=at)
        return object_key, checkpoint
