"""KEK retirement: which KEK wraps how many data keys and may be removed (:func:`kek_uses`, pure), and the rewrap
that moves every data key under another KEK, batch by batch and resumably (:func:`rewrap_keys`).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Literal

from services.core.keyring import Keyring, RewrapRefused

KekState = Literal["current", "in use", "retirable", "missing"]


# Keys per bundle of copies written after a sweep of the rewrap.
COPY_BUNDLE_KEYS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class KekUse:
    """One KEK id: how many subject keys it wraps, and what an operator may do with it.

    ``current``: new keys are wrapped by it. ``in use``: configured and still wrapping keys: rewrap them before
    removing it. ``retirable``: configured, not current, wraps no key: it can be removed from the settings.
    ``missing``: keys are wrapped by it but it is not configured: they cannot be read until it is again.
    """

    kek_id: str
    keys: int
    configured: bool
    state: KekState

    def to_json(self) -> dict[str, object]:
        return {"kek_id": self.kek_id, "keys": self.keys, "configured": self.configured, "state": self.state}


def kek_uses(counts: Mapping[str, int], configured: Collection[str], current: str) -> list[KekUse]:
    """Every KEK id that is configured or wraps keys, the current one first, then by id."""
    uses = []
    for kek_id in sorted({*configured, *(k for k, n in counts.items() if n)}):
        keys = counts.get(kek_id, 0)
        state: KekState
        if kek_id not in configured:
            state = "missing"
        elif kek_id == current:
            state = "current"
        else:
            state = "in use" if keys else "retirable"
        uses.append(KekUse(kek_id=kek_id, keys=keys, configured=kek_id in configured, state=state))
    return sorted(uses, key=lambda use: use.kek_id != current)


@dataclass(kw_only=True)
class RewrapReport:
    """What :func:`rewrap_keys` did, filled in as it goes (a caller whose run failed or was interrupted sees how far
    it got): KEK ids and counts only, no pseudonym (it goes to the audit log as is)."""

    to_kek_id: str
    before: dict[str, int] = field(default_factory=dict)  # keys per KEK id when the run started
    after: dict[str, int] | None = None  # and when it ended (None: it did not end)
    walked: int = 0
    rewrapped: int = 0
    suppressed_dropped: int = 0
    skipped_locked: int = 0
    batches: int = 0
    sweeps: int = 0
    copy_objects_deleted: int = 0  # objects of key copies that held only copies under the KEKs left
    case_keys_rewrapped: int = 0  # the cases' own keys (services/governance/cases.py), rewrapped after the subjects'

    @property
    def remaining(self) -> int:
        """Keys still wrapped by another KEK at the end: rows that were locked by an erasure or by an archiver at
        every sweep, or that archivers kept creating under another current KEK. Run again to take them."""
        return sum(n for kek_id, n in (self.after or {}).items() if kek_id != self.to_kek_id)

    def to_json(self) -> dict[str, object]:
        """Every count; ``remaining`` and ``keys_by_kek_after`` only once the run ended."""
        ended = (
            {}
            if self.after is None
            else {
                "remaining": self.remaining,
                "keys_by_kek_after": dict(sorted(self.after.items())),
            }
        )
        return {
            "to_kek_id": self.to_kek_id,
            "rewrapped": self.rewrapped,
            "suppressed_dropped": self.suppressed_dropped,
            "skipped_locked": self.skipped_locked,
            "walked": self.walked,
            "batches": self.batches,
            "sweeps": self.sweeps,
            "copy_objects_deleted": self.copy_objects_deleted,
            "case_keys_rewrapped": self.case_keys_rewrapped,
            "keys_by_kek_before": dict(sorted(self.before.items())),
            **ended,
        }


async def rewrap_keys(
    keyring: Keyring,
    report: RewrapReport,
    *,
    batch_size: int = 1000,
    progress: Callable[[int, int], None] | None = None,
    max_sweeps: int = 3,
) -> RewrapReport:
    """Rewrap every subject key under ``report.to_kek_id``, walking the key space in pages of ``batch_size`` keys,
    each page its own transaction (:meth:`Keyring.rewrap_batch`); ``progress(keys walked, keys in total)`` after
    each. ``report`` is filled in as the run goes, and returned.

    Resumable: the rows themselves are the checkpoint. Stopped at any point (a kill, Ctrl-C, a failure), the batch
    in flight rolls back and the committed ones stay; the next run walks the key space again and rewraps only the
    keys not yet under the target. A sweep walks the key space once; another follows (at most ``max_sweeps``)
    while keys remain under other KEKs and the last sweep moved some (rows skipped because they were locked, keys
    created meanwhile under another KEK). ``report.remaining`` says what is left; 0 means every key the table
    holds is under the target.

    Raises RewrapRefused, before changing anything, when the target is not configured in ``keyring.kek`` or keys
    are wrapped by a KEK that is not (they could not be unwrapped); ValueError when ``batch_size`` < 1.
    """
    to_kek_id = report.to_kek_id
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    configured = keyring.kek.kek_ids
    if to_kek_id not in configured:
        raise RewrapRefused(
            f"KEK id {to_kek_id!r} is not configured (configured: {sorted(configured)}): add it to KEYS__KEKS "
            "of every service, beside the KEK it replaces, before rewrapping to it"
        )
    counts = report.before = await keyring.keys_by_kek()
    missing = sorted(k for k, n in counts.items() if n and k not in configured)
    if missing:
        raise RewrapRefused(
            f"keys are wrapped by KEK id(s) {missing}, which are not configured here: add them to KEYS__KEKS "
            "to rewrap their keys"
        )
    total = 0
    while any(n for kek_id, n in counts.items() if kek_id != to_kek_id) and report.sweeps < max_sweeps:
        report.sweeps += 1
        total += sum(counts.values())
        moved_before = report.rewrapped + report.suppressed_dropped
        cursor = ""  # sorts before every subject_ref
        while True:
            batch = await keyring.rewrap_batch(to_kek_id, after=cursor, limit=batch_size)
            if batch.last_ref is None:
                break
            report.batches += 1
            report.walked += batch.walked
            report.rewrapped += batch.rewrapped
            report.suppressed_dropped += batch.suppressed_dropped
            report.skipped_locked += batch.skipped_locked
            if progress:
                progress(report.walked, max(total, report.walked))
            if batch.walked < batch_size:
                break  # the end of the key space
            cursor = batch.last_ref
        if keyring.copies is not None:
            # The copies outside PostgreSQL follow the rewrap, in bundles of many keys (until they are written, the
            # copies under the old KEK, still configured, stand for them): the old KEK must go for them too.
            while await keyring.copy_pending(limit=COPY_BUNDLE_KEYS):
                pass
        if report.rewrapped + report.suppressed_dropped == moved_before:
            break  # only locked rows are left: a later run takes them
        counts = await keyring.keys_by_kek()
    if keyring.copies is not None:
        # The copies under the old KEK go once every key they hold has its copy under the new one.
        async with keyring.pool.acquire() as conn:
            report.copy_objects_deleted = await keyring.copies.collect(conn)
    report.after = await keyring.keys_by_kek()
    return report
