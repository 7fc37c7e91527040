"""The retention process: admin API, scheduled retention run, and the GDPR gauges kept fresh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from services.actions.access import ArchiveAccess
from services.actions.layer import REQUEST_KINDS, SCHEDULER, Actions
from services.evidence.bag import SigningKeyError
from services.governance.approvals import pending_counts, pending_nearest_expiry
from services.governance.erasure_requests import pending_erasures
from services.governance.metrics import RetentionMetrics
from services.retention.settings import RetentionSettings

log = logging.getLogger("wa_archive.retention")


async def refresh_gauges(access: ArchiveAccess, metrics: RetentionMetrics) -> None:
    async with access.pool.acquire() as conn:
        deadlines = await pending_erasures(conn)
        holds = await conn.fetchval("SELECT count(*) FROM legal_holds WHERE released_at IS NULL")
        waiting = await pending_counts(conn)
        expiring = await pending_nearest_expiry(conn)
        last_success = await conn.fetchval(
            "SELECT extract(epoch FROM max(finished_at)) FROM retention_runs WHERE status = 'succeeded' AND NOT dry_run"
        )
        verified = await conn.fetchrow(
            "SELECT extract(epoch FROM finished_at) AS finished, missing, altered, unexpected, chain_faults,"
            " checkpoint_faults FROM verify_runs WHERE prefix = $1 AND status = 'succeeded'"
            " ORDER BY finished_at DESC LIMIT 1",
            access.bucket.settings.prefix,
        )
    metrics.erasure_pending.set(deadlines.open)
    metrics.erasure_oldest_pending_age.set(deadlines.oldest_age_s)
    nearest = deadlines.nearest_deadline_s
    metrics.erasure_nearest_deadline.set(float("nan") if nearest is None else nearest)
    metrics.erasures_overdue.set(deadlines.overdue)
    metrics.holds_active.set(holds or 0)
    # Every registered kind, 0 included (a closed label set: the registry's names, never a stored string).
    for kind in REQUEST_KINDS:
        metrics.approvals_pending.labels(kind).set(waiting.get(kind, 0))
        metrics.approvals_expiring.labels(kind).set(expiring.get(kind, float("nan")))
    if last_success is not None:
        metrics.last_run_success.set(float(last_success))
    if verified is not None:
        metrics.verify_last_run.set(float(verified["finished"]))
        for kind in ("missing", "altered", "unexpected", "chain_faults", "checkpoint_faults"):
            metrics.verify_findings.labels(kind).set(verified[kind])


async def run_exports(actions: Actions, settings: RetentionSettings) -> None:
    """The export worker: expired exports' files deleted, then one queued job at a time run to its end; when none
    is waiting, a look again every ``export_poll_s``. A task of its own, so a long export never delays an erasure
    or the gauges. Runs until cancelled; a failure is logged and retried at the next poll. Without an export signing
    key, a job asking for the signed package fails with words that say so; the others run."""
    signing_key = None
    if settings.export_signing.configured:
        try:
            signing_key = settings.export_signing.private_key()
        except SigningKeyError as exc:
            log.warning("export signing key unusable, signed packages will fail: %s", exc)
    while True:
        ran = None
        try:
            await actions.expire_exports()
            ran = await actions.run_next_export(
                ttl_s=settings.export_ttl_s, stale_s=settings.export_stale_s, signing_key=signing_key
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the job stays running and is taken again once stale
            log.warning("export worker failed: %s", type(exc).__name__)
        if ran is None:
            await asyncio.sleep(settings.export_poll_s)


async def sweep_held_sends(actions: Actions, interval_s: float) -> None:
    """Every ``interval_s``: the held messages whose hold ran out undecided get their ``expired`` decision record
    (services/actions/held_sends.py; each once, marked when Kafka acknowledged it). Kafka away: logged, and the same
    ones are taken at the next sweep. Runs until cancelled."""
    while True:
        try:
            while await actions.publish_expired(SCHEDULER) > 0:
                pass  # a batch at a time, until none is due
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("held messages' expiry sweep failed: %s", type(exc).__name__)
        await asyncio.sleep(interval_s)


def background_work(settings: RetentionSettings) -> Callable[[Actions], Coroutine[Any, Any, None]]:
    """The retention service's periodic work: every ``metrics_refresh_s`` the erasures left in progress are
    finished and the gauges refreshed; a run every ``run_interval_s`` (the same action as ``POST /v1/retention/run``
    and ``wa-archive retention run``, by the ``scheduler``); a signed checkpoint of the hash chain every
    ``checkpoint_interval_s`` when a signing key is configured; and, beside them in tasks of their own, the export
    worker (:func:`run_exports`) and the held messages' expiry sweep (:func:`sweep_held_sends`)."""

    async def work(actions: Actions) -> None:
        tasks = [asyncio.create_task(run_exports(actions, settings), name="export-worker")]
        if settings.held_sweep_interval_s > 0:
            sweep = sweep_held_sends(actions, settings.held_sweep_interval_s)
            tasks.append(asyncio.create_task(sweep, name="held-send-expiry"))
        try:
            await periodic(actions)
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def periodic(actions: Actions) -> None:
        next_run = time.monotonic() + settings.run_interval_s if settings.run_interval_s else None
        checkpoints = settings.checkpoint_interval_s if settings.signing.private_key is not None else 0
        next_checkpoint = time.monotonic() if checkpoints else None
        while True:
            try:
                if next_checkpoint is not None and time.monotonic() >= next_checkpoint:
                    next_checkpoint = time.monotonic() + checkpoints
                    await actions.write_checkpoint(SCHEDULER)
                if next_run is not None and time.monotonic() >= next_run:
                    next_run = time.monotonic() + settings.run_interval_s
                    report = await actions.run_retention(SCHEDULER, dry_run=False)
                    log.info("retention run deleted %d object(s)", report.objects_deleted)
                finished = await actions.finish_erasures(SCHEDULER)
                if finished:
                    log.info("finished %d erasure(s) left in progress", len(finished))
                await refresh_gauges(actions.access, actions.metrics)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed run is counted by the action and alerted on; retried next time
                log.warning("retention background work failed: %s", type(exc).__name__)
            await asyncio.sleep(settings.metrics_refresh_s)

    return work
