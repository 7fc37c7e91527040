"""The operators' maintenance actions: rebuilding the index from the bucket, recovery after a database loss, and
the KEKs (keys per KEK, the rewrap that retires one).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict

from services.actions.base import ActionsBase
from services.actions.operators import (
    Operator,
    ProgressCallback,
    authorize,
)
from services.archiver.rebuild import RebuildReport, RecordKeys, rebuild_index
from services.core.audit import write_audit
from services.core.kek_retirement import KekUse, RewrapReport, kek_uses, rewrap_keys
from services.core.key_copies import KeyCopies
from services.core.keyring import RewrapRefused
from services.evidence.chain import Chain
from services.evidence.verify import SETTLE_S, BaselineReport, VerifyReport, baseline_archive, verify_archive
from services.governance.cases import case_keys_by_kek, rewrap_case_keys
from services.governance.erasure_log import ErasureLog
from services.governance.recovery import RecoveryReport, reapply_erasures, restore_keys

log = logging.getLogger("wa_archive.retention")


class MaintenanceActions(ActionsBase):
    """Index rebuilds, recovery and KEK rewraps (``dpo``)."""

    async def rebuild_index(
        self, operator: Operator, *, prefix: str | None = None, progress: ProgressCallback | None = None
    ) -> RebuildReport:
        """Rebuild the index from the bucket (archiver/rebuild.py) under ``prefix`` (default: the configured one),
        opening the live records to restore group pseudonyms, keyword tokens and number changes too."""
        authorize(operator, "rebuild-index")
        prefix = prefix or self.access.bucket.settings.prefix
        try:
            report = await rebuild_index(
                self.access.pool,
                self.access.bucket,
                self.access.policy,
                prefix=prefix,
                progress=progress,
                keys=RecordKeys(self.access.keyring, self.access.pepper),
            )
        except Exception as exc:
            await self._audit_failure(operator, "index.rebuild", exc, {"prefix": prefix})
            raise
        await self._audit(operator, "index.rebuild", {"prefix": prefix, **asdict(report)})
        return report

    async def recover(self, operator: Operator, *, progress: ProgressCallback | None = None) -> RecoveryReport:
        """After PostgreSQL was lost or restored to an earlier point (services/governance/recovery.py): re-apply
        the erasures the database does not know, restore the keys it lacks from their copies, rebuild the index
        from the bucket, destroy every copy of an erased key still in the bucket, and copy any key that has no copy
        yet. Each step's seconds are in the report, which is
        audited. Restoring keys needs the schema owner's login (the CLI opens the archive with it)."""
        authorize(operator, "recover")
        report = RecoveryReport()
        copies = KeyCopies(self.access.bucket)
        steps: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            (
                "erasures",
                lambda: reapply_erasures(
                    self.access.pool, ErasureLog(self.access.bucket), actor=operator.name, report=report
                ),
            ),
            ("keys", lambda: restore_keys(self.access.pool, copies, report=report)),
            ("chain", lambda: self._resync_chain(report)),
            ("index", lambda: self._rebuild_for(report, operator, progress)),
            ("copies", lambda: self._settle_copies(copies, report)),
        ]
        try:
            for name, step in steps:
                started = time.monotonic()
                await step()
                report.seconds[name] = round(time.monotonic() - started, 3)
        except Exception as exc:
            await self._audit_failure(operator, "recover", exc, report.to_json())
            raise
        await self._audit(operator, "recover", report.to_json())
        return report

    async def _resync_chain(self, report: RecoveryReport) -> None:
        heads = await Chain(self.access.bucket, can_list=True).resync_heads(self.access.pool)
        report.chain_streams = len(heads)

    async def verify_archive(
        self, operator: Operator, *, progress: ProgressCallback | None = None, settle_s: float = SETTLE_S
    ) -> VerifyReport:
        """Walk the hash chain and the bucket (services/evidence/verify.py) and record the run and its counts in
        ``verify_runs``, which the retention service's gauges (and the tampering alert) read; audited with the
        counts (the report names objects, never people)."""
        authorize(operator, "verify")
        run_id = str(uuid.uuid4())
        prefix = self.access.bucket.settings.prefix
        await self.access.pool.execute(
            "INSERT INTO verify_runs (run_id, prefix, status) VALUES ($1::uuid, $2, 'running')", run_id, prefix
        )
        try:
            report = await verify_archive(
                self.access.bucket, trusted=self.access.trusted_keys, progress=progress, settle_s=settle_s
            )
        except Exception as exc:
            await self.access.pool.execute(
                "UPDATE verify_runs SET status = 'failed', finished_at = now() WHERE run_id = $1::uuid", run_id
            )
            await self._audit_failure(operator, "verify", exc, {"prefix": prefix})
            raise
        await self.access.pool.execute(
            "UPDATE verify_runs SET status = 'succeeded', finished_at = now(), objects = $2, missing = $3,"
            " altered = $4, unexpected = $5, chain_faults = $6, checkpoint_faults = $7 WHERE run_id = $1::uuid",
            run_id,
            report.objects,
            report.count("missing"),
            report.count("altered"),
            report.count("unexpected"),
            len(report.chain_faults),
            len(report.checkpoint_faults),
        )
        counts = {k: v for k, v in report.to_json().items() if k not in ("findings", "chain_faults", "trusted_keys")}
        await self._audit(operator, "verify", {**counts, "checkpoint_faults": len(report.checkpoint_faults)})
        return report

    async def baseline_chain(
        self, operator: Operator, reason: str, *, progress: ProgressCallback | None = None, settle_s: float = SETTLE_S
    ) -> BaselineReport:
        """Enter in the hash chain the objects written before it existed (services/evidence/verify.py
        :func:`baseline_archive`), once, after an upgrade: audited with the reason and the counts."""
        authorize(operator, "chain.baseline")
        try:
            report = await baseline_archive(self.access.bucket, self.access.pool, progress=progress, settle_s=settle_s)
        except Exception as exc:
            await self._audit_failure(operator, "chain.baseline", exc, {"reason": reason})
            raise
        await write_audit(
            self.access.pool, actor=operator.name, action="chain.baseline", reason=reason, details=report.to_json()
        )
        return report

    async def _rebuild_for(self, report: RecoveryReport, operator: Operator, progress: ProgressCallback | None) -> None:
        report.index = asdict(await self.rebuild_index(operator, progress=progress))

    async def _settle_copies(self, copies: KeyCopies, report: RecoveryReport) -> None:
        """No copy of an erased key is left (a restored bucket may have brought some back), and every key has one."""
        async with self.access.pool.acquire() as conn:
            report.key_copy_objects_purged = await copies.purge(conn)
        while found := await self.access.keyring.copy_pending():
            report.keys_copied += found

    async def key_status(self, operator: Operator) -> list[KekUse]:
        """Keys per KEK id, and which KEK can be removed from the settings (``retirable``)."""
        authorize(operator, "keys.status")
        kek = self.access.keyring.kek
        counts = Counter(await self.access.keyring.keys_by_kek())
        # A case's own key (its title, incident, saved searches) is wrapped by a KEK too: that KEK is still in use.
        counts.update(await case_keys_by_kek(self.access.pool))
        return kek_uses(dict(counts), kek.kek_ids, kek.current_kek_id)

    async def rewrap_keys(
        self, operator: Operator, *, to_kek_id: str, batch_size: int = 1000, progress: ProgressCallback | None = None
    ) -> RewrapReport:
        """Rewrap every subject key under ``to_kek_id`` (kek_retirement.rewrap_keys: batched, resumable, safe beside
        running archivers and erasures), then every case's key (services/governance/cases.py). Audited with its
        report (KEK ids and counts), or with how far it got when it failed or was interrupted. :class:`RewrapRefused`
        when the target, or a KEK still wrapping keys, is not configured; nothing is changed then."""
        authorize(operator, "keys.rewrap")
        report = RewrapReport(to_kek_id=to_kek_id)
        try:
            await rewrap_keys(self.access.keyring, report, batch_size=batch_size, progress=progress)
            async with self.access.pool.acquire() as conn:
                report.case_keys_rewrapped = await rewrap_case_keys(conn, self.access.keyring.kek, to_kek_id)
        except RewrapRefused:
            raise
        except (Exception, asyncio.CancelledError) as exc:
            # Ctrl-C reaches here as a cancellation: what was committed stays, and the next run continues from it.
            await self._audit_failure(operator, "keys.rewrap", exc, report.to_json())
            raise
        await self._audit(operator, "keys.rewrap", report.to_json())
        return report
