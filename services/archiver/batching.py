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
    max_age_s: float = 1.0

    def __post_init__(self) -> None:
        if self.max_records < 1 or self.max_bytes < 1 or self.max_age_s <= 0:
            raise ValueError("flush policy limits must be positive")


@dataclass(slots=True)
class OpenBatch(Generic[ItemT]):
    """Records of one partition waiting to be archived, in offset order."""

    opened_at: float
    items: list[ItemT] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    offsets: list[int] = field(default_factory=list)
    size_bytes: int = 0

    @property
    def first_offset(self) -> int:
        return self.offsets[0] if self.offsets else -1

    @property
    def last_offset(self) -> int:
        return self.offsets[-1] if self.offsets else -1

    def add(self, item: ItemT, offset: int, size: int) -> None:
        self.items.append(item)
        self.offsets.append(offset)
        self.sizes.append(size)
        self.size_bytes += size

    def split(self, count: int) -> tuple[OpenBatch[ItemT], OpenBatch[ItemT] | None]:
        """The first ``count`` records, and the rest (None when nothing is left). Both keep ``opened_at``: the
        rest holds records that have waited as long, so its age keeps counting from the same moment."""
        if count >= len(self.items):
            return self, None
        head = OpenBatch(
            self.opened_at, self.items[:count], self.sizes[:count], self.offsets[:count], sum(self.sizes[:count])
        )
        rest = OpenBatch(
            self.opened_at, self.items[count:], self.sizes[count:], self.offsets[count:], sum(self.sizes[count:])
        )
        return head, rest

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
