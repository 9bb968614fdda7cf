"""How a memory store reaches the data: on its own (autocommit) or inside a transaction."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Protocol, TypeVar

from backends.memory.data import View

T = TypeVar("T")


class Session(Protocol):
    """Runs store operations (plain functions over a View) with the right isolation."""

    async def read(self, op: Callable[[View], T]) -> T:
        """Run a read-only operation."""
        ...

    async def write(self, op: Callable[[View], T]) -> T:
        """Run an operation that stages writes; they commit with the session."""
        ...


class Notifier:
    """Wakes ``Queues.wait`` callers when something committed to their queue.

    One Event per queue. A wake-up sets it and it stays set until a waiter returns,
    so a commit between a consumer's empty claim and its ``wait`` is not lost.
    """

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def _event(self, queue: str) -> asyncio.Event:
        event = self._events.get(queue)
        if event is None:
            event = self._events[queue] = asyncio.Event()
        return event

    def wake(self, queues: Iterable[str]) -> None:
        for queue in queues:
            self._event(queue).set()

    def wake_all(self) -> None:
        for event in self._events.values():
            event.set()

    async def wait(self, queue: str, at_most: float) -> None:
        event = self._event(queue)
        if not event.is_set() and at_most > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(at_most):
                    await event.wait()
        event.clear()


def require_aware(when: datetime, what: str) -> datetime:
    """Refuse naive datetimes: comparing them with the clock's would raise later, farther
    from the mistake."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{what} must be timezone-aware (UTC), got naive {when.isoformat()}")
    return when
