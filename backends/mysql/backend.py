"""The MySQL / MariaDB backend (aiomysql): a medium deployment's database for sites
that run MySQL 8 or MariaDB 10.6+ rather than PostgreSQL.

What differs from PostgreSQL, and why:

- no LISTEN/NOTIFY: consumers in other processes find messages by polling, fast while
  messages flow and backing off while a queue stays empty (``poll_fastest`` to
  ``poll_slowest``); consumers in this process are woken at once by in-process events;
- key exclusivity of claims uses ``GET_LOCK`` per key (there are no transaction-level
  advisory locks), released when the claiming transaction ends;
- the leader lock's session lock is ``GET_LOCK`` on a dedicated connection;
- no RETURNING: writes report rows matched, and a claim selects, then leases;
- DDL commits by itself: queue tables are created on a connection of their own, and
  migrations are written to be re-run after a crash half-way.

Connections: ONE pool per backend (autocommit calls borrow a connection per call,
``transaction()`` one for its whole block), plus the leader lock's dedicated one.
Durability is InnoDB's (``innodb_flush_log_at_trx_commit=1`` by default).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractContextManager, asynccontextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import aiomysql  # type: ignore[import-untyped]

from backends.mysql.connection import (
    Dsn,
    close_quietly,
    connect,
    isolation_variable,
    lock_name,
    query,
    run,
    translated,
)
from backends.mysql.schema import MIGRATIONS, QUERIES, migrate_on, server_version
from backends.mysql.session import QUEUE_QUERIES, AutoSession, Core
from backends.mysql.stores import MysqlStores
from backends.protocols import Clock, Stores
from backends.sql.aio import finish
from backends.sql.backend import SqlBackendBase
from backends.sql.leader import SessionLockLeader
from backends.sql.pooled import pooled_transaction
from backends.sql.queries import QueueQueries
from backends.sql.stores import SqlServices

if TYPE_CHECKING:
    from backends.protocols import Backend

_QUEUE_QUERIES = QueueQueries(QUERIES, QUEUE_QUERIES)

__all__ = ["MIGRATIONS", "MysqlBackend"]


def utc_now() -> datetime:
    return datetime.now(UTC)


class MysqlLockDriver:
    """``GET_LOCK`` and the lease statements, on a dedicated aiomysql connection."""

    def __init__(self, dsn: Dsn, *, connect_timeout: float) -> None:
        self._dsn = dsn
        self._connect_timeout = connect_timeout

    def _name(self, name: str) -> str:
        return lock_name("leader", self._dsn.database, name)

    async def connect(self) -> Any:
        return await connect(self._dsn, connect_timeout=self._connect_timeout)

    def is_open(self, connection: Any) -> bool:
        return not connection.closed

    def terminate(self, connection: Any) -> None:
        connection.close()

    async def close(self, connection: Any) -> None:
        await close_quietly(connection)

    def translated(self, where: str) -> AbstractContextManager[None]:
        return translated(where)

    async def try_lock(self, connection: Any, name: str) -> bool:
        rows = await query(connection, QUERIES["leader_try_lock"], (self._name(name),))
        return bool(rows[0][0] == 1)

    async def unlock(self, connection: Any, name: str) -> None:
        await query(connection, QUERIES["leader_unlock"], (self._name(name),))

    async def renew(self, connection: Any, name: str, holder: str, expires: int, now: int) -> bool:
        params = (holder, expires, name, holder, now)
        if await run(connection, QUERIES["leader_renew"], params):
            return True
        return await run(connection, QUERIES["leader_insert"], (name, holder, expires)) > 0

    async def take(self, connection: Any, name: str, holder: str, expires: int) -> None:
        await run(connection, QUERIES["leader_take"], (name, holder, expires))

    async def release(self, connection: Any, name: str, holder: str) -> None:
        await run(connection, QUERIES["leader_release"], (name, holder))


class MysqlBackend(SqlBackendBase):
    """Backend on a MySQL 8 / MariaDB 10.6+ database.

    :param dsn: ``mysql://user:password@host:port/database``; the database must exist.
    :param clock: "now" for leases, delays and TTLs (UTC); tests pass a fake one.
    :param pool_min: connections the pool keeps open.
    :param pool_max: connections the pool opens at most.
    :param poll_fastest: the poll interval of a queue while messages flow (seconds).
    :param poll_slowest: the longest interval an idle queue backs off to; the most a
        message published by another process waits to be seen.
    :param poll_busy_seconds: how long after its last activity a queue is still polled
        at ``poll_fastest`` before backing off.
    :param connect_timeout: seconds to wait for a connection before failing with
        :class:`backends.errors.Transient`.
    """

    name = "mysql"

    def __init__(
        self,
        dsn: str,
        clock: Clock | None = None,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
        poll_fastest: float = 0.002,
        poll_slowest: float = 0.5,
        poll_busy_seconds: float = 1.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise ValueError(
                f"need 0 <= pool_min <= pool_max and pool_max >= 1, got {pool_min}, {pool_max}"
            )
        if not 0 < poll_fastest <= poll_slowest:
            raise ValueError(
                f"need 0 < poll_fastest <= poll_slowest, got {poll_fastest}, {poll_slowest}"
            )
        self.dsn = dsn
        self._dsn = Dsn(dsn)
        self.where = self._dsn.describe()
        self._clock: Clock = clock or utc_now
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._poll = (poll_fastest, poll_slowest, poll_busy_seconds)
        self._connect_timeout = connect_timeout
        self._core: Core | None = None
        self._stores: MysqlStores | None = None
        self._services: SqlServices | None = None
        self._leader: SessionLockLeader | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Check the server, apply pending migrations, open the pool.

        Raises Transient (naming host and port) when the server is unreachable,
        BackendError naming the setting for wrong credentials, a missing database or an
        unsupported server, SchemaTooNew when a newer release migrated the database."""
        if self._core is not None:
            return
        migrator = await connect(self._dsn, connect_timeout=self._connect_timeout)
        try:
            version = await server_version(migrator, self._dsn)
            await migrate_on(migrator, self._dsn, clock=self._clock)
        finally:
            await close_quietly(migrator)
        options = self._dsn.connect_kwargs(
            connect_timeout=self._connect_timeout, isolation=isolation_variable(version)
        )
        with translated(f"at {self.where}"):
            pool = await aiomysql.create_pool(
                minsize=self._pool_min,
                maxsize=self._pool_max,
                # a connection idle longer than the server's wait_timeout is gone
                pool_recycle=3600,
                **options,
            )
        try:
            with translated(f"at {self.where}"):
                async with pool.acquire() as connection:
                    tables = await query(connection, QUERIES["queue_tables"])
        except BaseException:
            await finish(self._close_pool(pool))
            raise
        core = Core(
            pool=pool,
            clock=self._clock,
            database=self._dsn.database,
            where=self.where,
            queries=QUERIES,
            queue_queries=_QUEUE_QUERIES,
            queue_tables={str(row[0]): str(row[1]) for row in tables},
            poll_fastest=self._poll[0],
            poll_slowest=self._poll[1],
            poll_busy_seconds=self._poll[2],
        )
        session = AutoSession(core)
        self._core = core
        self._stores = MysqlStores(session)
        self._services = SqlServices(session)
        driver = MysqlLockDriver(self._dsn, connect_timeout=self._connect_timeout)
        self._leader = SessionLockLeader(driver, self._clock, where=self.where)

    async def stop(self) -> None:
        """Wait for the transactions in progress, then close every connection."""
        core, leader = self._core, self._leader
        if core is None:
            return
        self._core = None
        self._stores = self._services = self._leader = None
        try:
            if leader is not None:
                await finish(leader.close())
        finally:
            await finish(self._close_pool(core.pool))

    async def _close_pool(self, pool: Any) -> None:
        pool.close()
        try:
            await asyncio.wait_for(pool.wait_closed(), timeout=10.0)
        except (TimeoutError, OSError, RuntimeError):
            pool.terminate()

    async def __aenter__(self) -> MysqlBackend:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    def statistics(self) -> dict[str, Any]:
        """Pool figures, each queue's poll interval and the server's id of the leader
        lock's connection, for health pages and tests."""
        core = self._started()
        leader = None if self._leader is None else self._leader.connection
        return {
            "pool_size": core.pool.size,
            "pool_idle": core.pool.freesize,
            "polls": core.poll_intervals(),
            "leader_connection_id": None if leader is None else int(leader.thread_id()),
        }

    # -- transactions ------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Stores]:
        """The stores bound to one transaction (a pooled connection, ``BEGIN`` ...):
        committed when the block exits normally, rolled back when it raises."""
        session = AutoSession(self._started())
        async with pooled_transaction(session.core, session.open_transaction) as tx:
            yield MysqlStores(tx)

    # -- the stores, autocommit ----------------------------------------------------------
    def describe(self) -> str:
        return f"the MySQL backend on {self.where}"

    def _started(self) -> Core:
        if self._core is None:
            raise self._not_started()
        return self._core


if TYPE_CHECKING:
    _check: type[Backend] = MysqlBackend
