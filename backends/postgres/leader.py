"""The leader lock on PostgreSQL: the shared session-lock leader
(``backends/sql/leader.py``) with ``pg_advisory_lock`` as the session lock, held on a
dedicated asyncpg connection."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from typing import Any

from backends.postgres.connection import close_quietly, lock_key64, translated
from backends.protocols import Clock
from backends.sql.leader import SessionLockLeader
from backends.sql.queries import Queries

Connect = Callable[[], Awaitable[Any]]


class PostgresLockDriver:
    """Advisory locks and the lease statements, on asyncpg."""

    def __init__(self, connect: Connect, queries: Queries, *, schema: str) -> None:
        self._connect = connect
        self._q = queries
        self._schema = schema

    def _key(self, name: str) -> int:
        return lock_key64("runtime.leader", self._schema, name)

    async def connect(self) -> Any:
        return await self._connect()

    def is_open(self, connection: Any) -> bool:
        return not connection.is_closed()

    def terminate(self, connection: Any) -> None:
        connection.terminate()

    async def close(self, connection: Any) -> None:
        await close_quietly(connection)

    def translated(self, where: str) -> AbstractContextManager[None]:
        return translated(where)

    async def try_lock(self, connection: Any, name: str) -> bool:
        return bool(await connection.fetchval(self._q["leader_try_lock"], self._key(name)))

    async def unlock(self, connection: Any, name: str) -> None:
        await connection.fetchval(self._q["leader_unlock"], self._key(name))

    async def renew(self, connection: Any, name: str, holder: str, expires: int, now: int) -> bool:
        sql = self._q["leader_acquire"]
        return await connection.fetchval(sql, name, holder, expires, now) is not None

    async def take(self, connection: Any, name: str, holder: str, expires: int) -> None:
        await connection.execute(self._q["leader_take"], name, holder, expires)

    async def release(self, connection: Any, name: str, holder: str) -> None:
        await connection.execute(self._q["leader_release"], name, holder)


class PostgresLeader(SessionLockLeader):
    """LeaderLock on PostgreSQL."""

    def __init__(
        self, connect: Connect, queries: Queries, clock: Clock, *, schema: str, where: str
    ) -> None:
        super().__init__(PostgresLockDriver(connect, queries, schema=schema), clock, where=where)

    @property
    def server_pid(self) -> int | None:
        """The PostgreSQL backend pid of the dedicated connection (None: not open)."""
        connection = self.connection
        return None if connection is None else int(connection.get_server_pid())
