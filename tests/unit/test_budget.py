"""ByteBudget: bytes held together never exceed the budget; waiters are served in order; cancellation gives back."""

from __future__ import annotations

import asyncio
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.core.budget import ByteBudget


@settings(max_examples=60, deadline=None)
@given(
    total=st.integers(min_value=1, max_value=100),
    sizes=st.lists(st.integers(min_value=0, max_value=150), min_size=1, max_size=30),
    seed=st.integers(),
)
def test_never_more_than_the_budget_and_everyone_served(total: int, sizes: list[int], seed: int) -> None:
    rng = random.Random(seed)

    async def run() -> None:
        budget = ByteBudget(total)
        peak = 0
        done = 0

        async def task(size: int) -> None:
            nonlocal peak, done
            async with budget.reserve(size) as held:
                assert held == min(size, total)
                peak = max(peak, budget.in_use)
                for _ in range(rng.randint(0, 3)):
                    await asyncio.sleep(0)
            done += 1

        await asyncio.wait_for(asyncio.gather(*(task(size) for size in sizes)), 5)
        assert peak <= total
        assert done == len(sizes)
        assert budget.in_use == 0

    asyncio.run(run())


async def test_first_come_first_served() -> None:
    budget = ByteBudget(10)
    order: list[str] = []
    hold = asyncio.Event()

    async def task(name: str, size: int) -> None:
        async with budget.reserve(size):
            order.append(name)
            await hold.wait()

    first = asyncio.create_task(task("first", 6))
    await asyncio.sleep(0)
    large = asyncio.create_task(task("large", 10))
    await asyncio.sleep(0)
    small = asyncio.create_task(task("small", 1))  # would fit now, but waits behind the large one
    await asyncio.sleep(0.01)
    assert order == ["first"]
    hold.set()
    await asyncio.gather(first, large, small)
    assert order == ["first", "large", "small"]


async def test_cancelled_waiter_gives_back_and_wakes_the_next() -> None:
    budget = ByteBudget(10)
    release = asyncio.Event()
    held: list[int] = []

    async def holder(size: int) -> None:
        async with budget.reserve(size):
            held.append(size)
            await release.wait()

    first = asyncio.create_task(holder(8))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(holder(10))
    await asyncio.sleep(0)
    small = asyncio.create_task(holder(2))  # queued behind the large one
    await asyncio.sleep(0.01)
    assert held == [8]
    waiting.cancel()
    await asyncio.sleep(0.01)
    assert held == [8, 2]  # the cancelled one left the queue, and the small one fits
    assert budget.in_use == 10
    release.set()
    await asyncio.gather(first, small)
    assert waiting.cancelled()
    assert budget.in_use == 0


def test_refuses_an_empty_budget() -> None:
    with pytest.raises(ValueError, match="at least 1 byte"):
        ByteBudget(0)
