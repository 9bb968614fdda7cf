"""What the server databases' backends (PostgreSQL, MySQL) share around their
connection pools: the in-process wake-ups of a backend's queues, the guard against a
task that runs a transaction calling the backend's autocommit stores (which would
wait for its own locks on another connection), and the shape of a transaction on a
pooled connection."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, TypeVar

from backends.sql.aio import finish


class Wakeups:
    """One event per queue, set after a commit that made messages claimable: the
    consumers of this process wait on it (other processes learn by NOTIFY or polling).
    Also the tasks running a transaction, for :meth:`check_reentry`."""

    #: names the database in the re-entry error ("PostgreSQL", "MySQL")
    system = "SQL"

    def __init__(self) -> None:
        self._wakeups: dict[str, asyncio.Event] = {}
        #: tasks running a transaction, to refuse autocommit writes that could wait
        #: forever on the transaction's own row locks
        self.tx_owners: set[asyncio.Task[Any]] = set()

    def wakeup(self, queue: str) -> asyncio.Event:
        event = self._wakeups.get(queue)
        if event is None:
            event = self._wakeups[queue] = asyncio.Event()
        return event

    def wake(self, queues: set[str] | list[str]) -> None:
        for queue in queues:
            self.wakeup(queue).set()

    def wake_all(self) -> None:
        for event in self._wakeups.values():
            event.set()

    def check_reentry(self) -> None:
        current = asyncio.current_task()
        if current is not None and current in self.tx_owners:
            raise RuntimeError(
                f"this task already runs a {self.system} transaction; use the stores that"
                " transaction() yielded instead of the backend's own (an autocommit write"
                " on another connection could wait forever for the transaction's locks)"
            )


class PooledSession(Protocol):
    """A session bound to one pooled connection, from BEGIN to COMMIT or ROLLBACK."""

    async def begin(self) -> None: ...

    async def drop(self) -> None:
        """Give the connection back after a failed BEGIN."""
        ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


S = TypeVar("S", bound=PooledSession)


@asynccontextmanager
async def pooled_transaction(
    wakeups: Wakeups, open_session: Callable[[], Awaitable[S]]
) -> AsyncIterator[S]:
    """A session on a connection of its own (``open_session`` acquires it), in one
    transaction: committed when the block exits normally, rolled back when it raises.
    The task is marked as running a transaction meanwhile (see ``check_reentry``)."""
    wakeups.check_reentry()
    task = asyncio.current_task()
    session = await open_session()
    try:
        await session.begin()
    except BaseException:
        await finish(session.drop())
        raise
    if task is not None:
        wakeups.tx_owners.add(task)
    try:
        yield session
    except BaseException:
        wakeups.tx_owners.discard(task)
        await session.rollback()
        raise
    wakeups.tx_owners.discard(task)
    await session.commit()
