"""Cases that let a test's reader read what the test reads: readers are scoped to the custodians of the open cases
assigned to them (services/governance/scope.py), and a test that is not about scoping gives its reader one case
covering what it opens, rather than switching scoping off. The cases are closed when the test ends, so that the
shared development database does not pile up open cases for the same test readers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry

from services.actions.access import open_access
from services.actions.layer import Actions, Operator
from services.governance.cases import CustodianSpec, close_case
from services.governance.metrics import RetentionMetrics
from services.retention.settings import RetentionSettings

TEST_DPO = Operator("test-dpo", "dpo")


class ReaderCases:
    """Opens (as the DPO) one case per :meth:`cover`, assigned to the reader; :meth:`close` closes them all."""

    def __init__(self, actions: Actions) -> None:
        self.actions = actions
        self.opened: list[str] = []

    async def cover(
        self,
        reader: str,
        *,
        phone_number_id: str | None = None,
        subject_ref: str | None = None,
        group_id: str | None = None,
    ) -> str:
        """A case of the business number, the person (by pseudonym) or the group given, without a period, assigned
        to ``reader``; returns its reference."""
        if subject_ref is not None:
            spec = CustodianSpec(kind="person", subject_ref=subject_ref)
        elif group_id is not None:
            spec = CustodianSpec(kind="group", group_id=group_id, phone_number_id=phone_number_id)
        else:
            spec = CustodianSpec(kind="phone_number", phone_number_id=phone_number_id)
        summary = await self.actions.open_case(TEST_DPO, title="the test's case", custodians=[spec], reviewers=[reader])
        self.opened.append(summary.case_ref)
        return summary.case_ref

    async def close(self) -> None:
        # Through the domain, not the action: a test's bookkeeping, not a DPO's closing to approve.
        async with self.actions.access.pool.acquire() as conn:
            for case_ref in self.opened:
                await close_case(conn, case_ref, reason="the test ended", actor=TEST_DPO.name)
        self.opened.clear()


async def _open_for(reader: str, phone_number_ids: Sequence[str]) -> str:
    access = await open_access(RetentionSettings())  # the archive the environment names (demo.env in the tests)
    try:
        summary = await Actions(access, RetentionMetrics(CollectorRegistry())).open_case(
            TEST_DPO,
            title="the test's case",
            custodians=[CustodianSpec(kind="phone_number", phone_number_id=n) for n in sorted(set(phone_number_ids))],
            reviewers=[reader],
        )
        return summary.case_ref
    finally:
        await access.close()


async def _close(case_ref: str) -> None:
    access = await open_access(RetentionSettings())
    try:
        async with access.pool.acquire() as conn:
            await close_case(conn, case_ref, reason="the test ended", actor=TEST_DPO.name)
    finally:
        await access.close()


@contextlib.contextmanager
def reader_case(reader: str, phone_number_ids: Sequence[str]) -> Iterator[str]:
    """For the tests that drive the services as processes (tests/e2e): a case of these business numbers assigned to
    ``reader`` (e.g. ``demo-reader``) in the archive the environment names, closed on exit; yields its reference."""
    case_ref = asyncio.run(_open_for(reader, phone_number_ids))
    try:
        yield case_ref
    finally:
        asyncio.run(_close(case_ref))
