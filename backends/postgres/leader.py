"""The leader lock: a lease row on the backend's clock, backed by a session-level
advisory lock that dies with its holder's connection.

The protocol's lease (``acquire(name, holder, ttl)``: exclusive, renewed by its
holder, taken over once it expired) is the ``leader_locks`` row, exactly as on
SQLite; the TTL lives there, on the backend's clock. Each backend also has one
DEDICATED connection on which, while one of its holders leads, it holds
``pg_advisory_lock(key(name))``. The advisory lock does not replace the TTL, it
shortens it when the holder dies: a process that dies (kill -9, lost network) loses
its connection, the server releases the lock, and the next ``acquire`` from another
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
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from backends.errors import Transient
from backends.postgres.connection import close_quietly, lock_key64, translated
from backends.protocols import Clock
from backends.sql.mapping import to_micros
from backends.sql.queries import Queries

Connect = Callable[[], Awaitable[Any]]


class PostgresLeader:
    """LeaderLock on PostgreSQL (see the module docstring)."""

    def __init__(
        self, connect: Connect, queries: Queries, clock: Clock, *, schema: str, where: str
    ) -> None:
        self._connect = connect
        self._q = queries
        self._clock = clock
        self._schema = schema
        self._where = where
        self._connection: Any = None
        #: name -> the local holder on whose behalf the connection holds the lock
        self._held: dict[str, str] = {}
        self._busy = asyncio.Lock()

    @property
    def server_pid(self) -> int | None:
        """The PostgreSQL backend pid of the dedicated connection (None: not open)."""
        connection = self._connection
        if connection is None or connection.is_closed():
            return None
        return int(connection.get_server_pid())

    def _key(self, name: str) -> int:
        return lock_key64("runtime.leader", self._schema, name)

    async def _open(self) -> Any:
        connection = self._connection
        if connection is not None and not connection.is_closed():
            return connection
        # A lost connection took its advisory locks with it.
        self._held.clear()
        self._connection = None
        await close_quietly(connection)
        self._connection = await self._connect()
        return self._connection

    async def acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        """Take or renew the lock; False while another holder's lease is alive."""
        async with self._busy:
            try:
                return await self._acquire(name, holder, ttl_seconds)
            except (Transient, asyncio.CancelledError):
                self._drop_if_broken()
                raise

    async def _acquire(self, name: str, holder: str, ttl_seconds: float) -> bool:
        connection = await self._open()
        now = self._clock()
        expires = to_micros(now + timedelta(seconds=ttl_seconds))
        lease = (name, holder, expires, to_micros(now))
        with translated(f"at {self._where}: leader lock {name!r}"):
            if name in self._held:
                won = await connection.fetchval(self._q["leader_acquire"], *lease) is not None
                if won:
                    self._held[name] = holder
                elif self._held[name] == holder:
                    # Our holder was stuck past its TTL and another process took over.
                    await connection.fetchval(self._q["leader_unlock"], self._key(name))
                    del self._held[name]
                return won
            if await connection.fetchval(self._q["leader_try_lock"], self._key(name)):
                await connection.execute(self._q["leader_take"], name, holder, expires)
                self._held[name] = holder
                return True
            return await connection.fetchval(self._q["leader_acquire"], *lease) is not None

    async def release(self, name: str, holder: str) -> None:
        async with self._busy:
            try:
                connection = await self._open()
                with translated(f"at {self._where}: leader lock {name!r}"):
                    await connection.execute(self._q["leader_release"], name, holder)
                    if self._held.get(name) == holder:
                        await connection.fetchval(self._q["leader_unlock"], self._key(name))
                        del self._held[name]
            except (Transient, asyncio.CancelledError):
                self._drop_if_broken()
                raise

    def _drop_if_broken(self) -> None:
        """After a failed call: a connection that is, or may be, broken is dropped (with
        it, the server releases any lock it held); the next call connects again."""
        connection = self._connection
        if connection is not None:
            self._connection = None
            self._held.clear()
            connection.terminate()

    async def close(self) -> None:
        """Close the dedicated connection (the server releases its advisory locks)."""
        async with self._busy:
            connection, self._connection = self._connection, None
            self._held.clear()
            await close_quietly(connection)
