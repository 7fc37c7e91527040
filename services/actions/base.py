"""What every group of actions shares: the archive they act on, the metrics they count into, the audit rows of
actions that are not reads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from services.actions.access import ArchiveAccess
from services.actions.operators import Operator, authorize
from services.core.audit import (
    write_audit,
)
from services.evidence.chain import Chain, Checkpoint
from services.governance.metrics import RetentionMetrics

log = logging.getLogger("wa_archive.retention")


class ActionsBase:
    """The operator actions over one :class:`ArchiveAccess`, counting into ``metrics``."""

    def __init__(self, access: ArchiveAccess, metrics: RetentionMetrics) -> None:
        self.access = access
        self.metrics = metrics

    async def _audit(self, operator: Operator, action: str, details: Mapping[str, Any]) -> None:
        await write_audit(self.access.pool, actor=operator.name, action=action, reason=None, details=details)

    async def _audit_failure(
        self, operator: Operator, action: str, exc: BaseException, details: Mapping[str, Any]
    ) -> None:
        """Best effort: when the database is what failed, the audit row cannot be written either."""
        try:
            await self._audit(operator, action, {**details, "outcome": "failed", "error": type(exc).__name__})
        except Exception as audit_exc:
            log.warning("could not audit the failed %s: %s", action, type(audit_exc).__name__)

    async def write_checkpoint(self, operator: Operator) -> tuple[str, Checkpoint] | None:
        """Sign the hash chain's heads and store the checkpoint (services/evidence/chain.py); None when no signing
        key is configured. The scheduler calls it every ``checkpoint_interval_s``; an export calls it to pin the
        archive it was made from. Audited with the checkpoint's key and the number of streams."""
        authorize(operator, "chain.checkpoint")
        key = self.access.signing_key
        if key is None:
            return None
        written = await Chain(self.access.bucket).write_checkpoint(self.access.pool, key)
        self.metrics.chain_last_checkpoint.set(time.time())
        await self._audit(operator, "chain.checkpoint", {"object": written[0], "streams": len(written[1].heads)})
        return written
