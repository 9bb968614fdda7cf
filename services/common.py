"""Small helpers the service loops share."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Coroutine
from typing import Any

from runtime.flow.ids import new_id


async def wait_or_stop(stopping: asyncio.Event, waiter: Coroutine[Any, Any, Any]) -> None:
    """Wait for ``waiter`` unless ``stopping`` is set first; never leaves a task behind."""
    if stopping.is_set():
        waiter.close()
        return
    task = asyncio.create_task(waiter, name="service.wait")
    stop = asyncio.create_task(stopping.wait(), name="service.wait_stop")
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, stop):
            pending.cancel()
        await asyncio.gather(task, stop, return_exceptions=True)


async def sleep_or_stop(stopping: asyncio.Event, seconds: float) -> None:
    await wait_or_stop(stopping, asyncio.sleep(seconds))


def instance_id(kind: str) -> str:
    """A unique id for one running component: kind, host, pid and a random part."""
    return f"{kind}-{socket.gethostname()}-{os.getpid()}-{new_id()[:8]}"


def host() -> str:
    return socket.gethostname()
