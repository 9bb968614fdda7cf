"""The leader lock of the server databases: a lease row on the backend's clock, backed
by a session-level lock that dies with its holder's connection (PostgreSQL's
``pg_advisory_lock``, MySQL's ``GET_LOCK``).

The protocol's lease (``acquire(name, holder, ttl)``: exclusive, renewed by its
holder, taken over once it expired) is the ``leader_locks`` row, exactly as on
SQLite; the TTL lives there, on the backend's clock. Each backend also has one
DEDICATED connection on which, while one of its holders leads, it holds the
session lock of the name. The session lock does not replace the TTL, it shortens it
when the holder dies: a process that dies (kill -9, lost network) loses its
connection, the server releases the lock, and the next ``acquire`` from another
process gets the lock and takes the lease over at once, without waiting for it to
expire. A holder that is alive but stuck (its connection open, its renewals
stopped) still loses the lease after the TTL, through the row.

So ``acquire`` in a backend whose connection does not hold the name's lock:

- gets the lock: nobody alive holds the name; take the lease whatever its deadline;
- does not get it: another live session leads; the row decides (TTL takeover of a
  stuck holder; the new holder takes the lock once the old one lets go of it).

and in the backend that holds the lock, the row decides between its own holders
(several holders may share one backend, as in the conformance suite); when its
holder lost the lease to another process (it was stuck past the TTL), it lets go
of the lock.

Every renewal runs a statement on the dedicated connection, so a dropped connection
(a server restart, a network cut) shows at the next renewal: the call fails with
Transient, the connection is dropped with everything it held, and the next call
connects again and competes like anyone else.
"""

from __future__ import annotations

import asyncio
from contextlib import AbstractContextManager
from datetime import timedelta
from typing import Any, Protocol

from backends.errors import Transient
from backends.protocols import Clock
from backends.sql.mapping import to_micros


class LockDriver(Protocol):
    """What a dialect provides: its dedicated connection and four statements."""

    async def connect(self) -> Any: ...

    def is_open(self, connection: Any) -> bool: ...

    def terminate(self, connection: Any) -> None:
        """Drop the connection now (the server releases its session locks)."""
        ...

    async def close(self, connection: Any) -> None: ...

    def translated(self, where: str) -> AbstractContextManager[None]: ...

    async def try_lock(self, connection: Any, name: str) -> bool:
        """Take the session lock of ``name`` without waiting."""
        ...

    async def unlock(self, connection: Any, name: str) -> None: ...

    async def renew(self, connection: Any, name: str, holder: str, expires: int, now: int) -> bool:
        """Take a free or expired lease, or renew ``holder``'s own; whether it has it."""
        ...

    async def take(self, connection: Any, name: str, holder: str, expires: int) -> None:
        """The lease, whatever its state (the caller holds the session lock)."""
        ...

    async def release(self, connection: Any, name: str, holder: str) -> None:
        """Delete ``holder``'s lease row."""
        ...


class SessionLockLeader:
    """LeaderLock over a :class:`LockDriver` (see the module docstring)."""

    def __init__(self, driver: LockDriver, clock: Clock, *, where: str) -> None:
        self._driver = driver
        self._clock = clock
        self._where = where
        self._connection: Any = None
        #: name -> the local holder on whose behalf the connection holds the lock
        self._held: dict[str, str] = {}
        self._busy = asyncio.Lock()

    @property
    def connection(self) -> Any:
        """The dedicated connection, if open (statistics, tests)."""
        connection = self._connection
        return connection if connection is not None and self._driver.is_open(connection) else None

    async def _open(self) -> Any:
        connection = self._connection
        if connection is not None and self._driver.is_open(connection):
            return connection
        # A lost connection took its session locks with it.
        self._held.clear()
        self._connection = None
        if connection is not None:
            await self._driver.close(connection)
        self._connection = await self._driver.connect()
        return self._connection

    async def acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lock; False while another holder's lease is alive."""
        async with self._busy:
            try:
                return await self._acquire(name, holder, ttl_seconds)
            except (Transient, asyncio.CancelledError):
                self._drop()
                raise

    async def _acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        driver = self._driver
        connection = await self._open()
        now = self._clock()
        expires = to_micros(now + timedelta(seconds=ttl_seconds))
        with driver.translated(f"at {self._where}: leader lock {name!r}"):
            if name in self._held:
                won = await driver.renew(connection, name, holder, expires, to_micros(now))
                if won:
                    self._held[name] = holder
                elif self._held[name] == holder:
                    # Our holder was stuck past its TTL and another process took over.
                    await driver.unlock(connection, name)
                    del self._held[name]
                return won
            if await driver.try_lock(connection, name):
                await driver.take(connection, name, holder, expires)
                self._held[name] = holder
                return True
            return await driver.renew(connection, name, holder, expires, to_micros(now))

    async def release(self, name: str, holder: str) -> None:
        async with self._busy:
            try:
                connection = await self._open()
                with self._driver.translated(f"at {self._where}: leader lock {name!r}"):
                    await self._driver.release(connection, name, holder)
                    if self._held.get(name) == holder:
                        await self._driver.unlock(connection, name)
                        del self._held[name]
            except (Transient, asyncio.CancelledError):
                self._drop()
                raise

    def _drop(self) -> None:
        """After a failed call: a connection that is, or may be, broken is dropped (with
        it, the server releases any lock it held); the next call connects again."""
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._held.clear()
            self._driver.terminate(connection)

    async def close(self) -> None:
        """Close the dedicated connection (the server releases its session locks)."""
        async with self._busy:
            connection, self._connection = self._connection, None
            self._held.clear()
            if connection is not None:
                await self._driver.close(connection)
