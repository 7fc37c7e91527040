"""When to close a batch: pure decisions over a partition's open batch and the clock (passed in).

A batch is closed by whichever comes first: enough records, enough bytes, or enough wall-clock age since its
first record arrived. Age is checked on a timer by the consumer loop, not only when a record arrives, so a
quiet tenant's last messages are archived on time even if nothing else is ever written to its partition.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")


class FlushReason(Enum):
    COUNT = "count"
    SIZE = "size"
    AGE = "age"
    DRAIN = "drain"  # shutdown or partition revoked


@dataclass(frozen=True, slots=True)
class FlushPolicy:
    max_records: int = 5_000
    max_bytes: int = 8 * 1024 * 1024
    max_age_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1 or self.max_age_s <= 0:
            raise ValueError("flush policy limits must be positive")


@dataclass(slots=True)
class OpenBatch(Generic[ItemT]):
    """Records of one partition waiting to be archived, in offset order."""

    opened_at: float
    items: list[ItemT] = field(default_factory=list)
    size_bytes: int = 0
    first_offset: int = -1
    last_offset: int = -1

    def add(self, item: ItemT, offset: int, size: int) -> None:
        if not self.items:
            self.first_offset = offset
        self.items.append(item)
        self.size_bytes += size
        self.last_offset = offset

    def __len__(self) -> int:
        return len(self.items)


def plan_flush(batch: OpenBatch[ItemT] | None, policy: FlushPolicy, now: float) -> FlushReason | None:
    """Why ``batch`` must be written now, or None to keep filling it. An empty batch never flushes."""
    if batch is None or not batch.items:
        return None
    if len(batch.items) >= policy.max_records:
        return FlushReason.COUNT
    if batch.size_bytes >= policy.max_bytes:
        return FlushReason.SIZE
    if now - batch.opened_at >= policy.max_age_s:
        return FlushReason.AGE
    return None
