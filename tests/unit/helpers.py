"""Small helpers shared by the kernel tests."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def eventually(predicate: Callable[[], bool], within: float = 2.0) -> None:
    """Yield to the loop until ``predicate()`` holds; fail after ``within`` real seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within}s")
        await asyncio.sleep(0.001)


async def settle(rounds: int = 20) -> None:
    """Let every ready callback run a few times over (no real time passes)."""
    for _ in range(rounds):
        await asyncio.sleep(0)
