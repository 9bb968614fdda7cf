"""The PostgreSQL backend (asyncpg): the medium deployment's database, shared by any
number of processes on any number of hosts.

Connections: ONE pool per backend (autocommit calls borrow a connection per call,
``transaction()`` one for its whole block), plus two dedicated connections that must
not come from the pool: the listener's (LISTEN state) and the leader lock's (it holds
session-level advisory locks). asyncpg prepares each statement once per connection
and caches it. Pooled connections are not reset on release (asyncpg's default reset
costs a round trip per call): the backend never changes session state on them, and
ends every transaction it begins.

Durability is PostgreSQL's: a committed transaction is on disk (``synchronous_commit``
as the server is configured, on by default), but for an autocommit claim (a worker's):
a lease only, committed without waiting for the disk, since losing it in a crash of
the server only makes its message claimable again (``queue_claim_autocommit``).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped]

from backends.postgres.connection import (
    close_quietly,
    connect,
    connect_kwargs,
    describe,
    translated,
)
from backends.postgres.leader import PostgresLeader
from backends.postgres.listener import Listener
from backends.postgres.notifier import Notifier
from backends.postgres.schema import MIGRATIONS, QUERIES, check_schema, migrate_on
from backends.postgres.session import QUEUE_QUERIES, AutoSession, Core, TxSession
from backends.postgres.stores import PostgresStores
from backends.protocols import Clock, Stores
from backends.sql.aio import finish
from backends.sql.backend import SqlBackendBase
from backends.sql.pooled import pooled_transaction
from backends.sql.queries import QueueQueries
from backends.sql.stores import SqlServices

if TYPE_CHECKING:
    from backends.protocols import Backend

_QUEUE_QUERIES = QueueQueries(QUERIES, QUEUE_QUERIES)

__all__ = ["MIGRATIONS", "PostgresBackend"]


def utc_now() -> datetime:
    return datetime.now(UTC)


async def _keep_session(connection: Any) -> None:
    """The pool's reset: nothing (see the module docstring); asyncpg itself still rolls
    back a transaction left open, which the backend never does."""


class PostgresBackend(SqlBackendBase):
    """Backend on a PostgreSQL database (15 or newer).

    :param dsn: ``postgresql://user:password@host:port/database`` (libpq syntax).
    :param clock: "now" for leases, delays and TTLs (UTC); tests pass a fake one.
    :param schema: the schema holding the tables (created if missing); tests isolate
        themselves in a fresh one.
    :param pool_min: connections the pool keeps open.
    :param pool_max: connections the pool opens at most.
    :param listen: receive wake-ups by LISTEN/NOTIFY on a dedicated connection;
        without it (e.g. behind a transaction-pooling proxy) ``wait`` polls.
    :param poll_seconds: the longest ``wait`` sleeps while no notification can arrive
        (``listen=False``, or the listener reconnecting).
    :param connect_timeout: seconds to wait for a connection before failing with
        :class:`backends.errors.Transient`.
    """

    name = "postgres"

    def __init__(
        self,
        dsn: str,
        clock: Clock | None = None,
        *,
        schema: str = "public",
        pool_min: int = 1,
        pool_max: int = 10,
        listen: bool = True,
        poll_seconds: float = 1.0,
        connect_timeout: float = 10.0,
    ) -> None:
        if not 0 <= pool_min <= pool_max or pool_max < 1:
            raise ValueError(
                f"need 0 <= pool_min <= pool_max and pool_max >= 1, got {pool_min}, {pool_max}"
            )
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be positive, got {poll_seconds}")
        self.dsn = dsn
        self.schema = check_schema(schema)
        self.where = describe(dsn)
        self._clock: Clock = clock or utc_now
        self._pool_min = pool_min
        self._pool_max = pool_max
        self._listen = listen
        self._poll_seconds = poll_seconds
        self._connect_timeout = connect_timeout
        #: names this backend's notifications, so its own listener skips them
        self._sender = secrets.token_hex(8)
        self._core: Core | None = None
        self._stores: PostgresStores | None = None
        self._services: SqlServices | None = None
        self._leader: PostgresLeader | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Apply pending migrations, open the pool and the listener.

        Raises Transient (naming host and port) when the server is unreachable, and
        SchemaTooNew when the database was migrated by a newer release."""
        if self._core is not None:
            return
        migrator = await self._connect()
        try:
            await migrate_on(migrator, schema=self.schema, clock=self._clock, database=self.where)
        finally:
            await close_quietly(migrator)
        with translated(f"at {self.where}"):
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self._pool_min,
                max_size=self._pool_max,
                reset=_keep_session,
                **connect_kwargs(self.schema, connect_timeout=self._connect_timeout),
            )
        listener: Listener | None = None
        try:
            with translated(f"at {self.where}"):
                tables = await pool.fetch(QUERIES["queue_tables"])
            core = Core(
                pool=pool,
                clock=self._clock,
                schema=self.schema,
                where=self.where,
                queries=QUERIES,
                queue_queries=_QUEUE_QUERIES,
                sender=self._sender,
                poll_seconds=self._poll_seconds,
                queue_tables={str(row[0]): str(row[1]) for row in tables},
            )
            core.notifier = Notifier(pool, self._sender, self.where)
            if self._listen:
                listener = Listener(
                    self._connect,
                    sender=self._sender,
                    where=self.where,
                    on_notify=lambda queue: core.wake([queue]),
                    on_reconnect=core.wake_all,
                )
                await listener.start()
                core.listener = listener
        except BaseException:
            await finish(self._close_pool(pool))
            raise
        session = AutoSession(core)
        self._core = core
        self._stores = PostgresStores(session)
        self._services = SqlServices(session)
        self._leader = PostgresLeader(
            self._connect, QUERIES, self._clock, schema=self.schema, where=self.where
        )

    async def stop(self) -> None:
        """Wait for the transactions in progress, then close every connection."""
        core, leader = self._core, self._leader
        if core is None:
            return
        self._core = None
        self._stores = self._services = self._leader = None
        try:
            if core.notifier is not None:
                await finish(core.notifier.close())
            if core.listener is not None:
                await finish(core.listener.stop())
            if leader is not None:
                await finish(leader.close())
        finally:
            await finish(self._close_pool(core.pool))

    async def _close_pool(self, pool: Any) -> None:
        try:
            await asyncio.wait_for(pool.close(), timeout=10.0)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pool.terminate()

    async def _connect(self) -> Any:
        return await connect(self.dsn, self.schema, connect_timeout=self._connect_timeout)

    async def __aenter__(self) -> PostgresBackend:
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
        """Pool and listener figures, for health pages and tests."""
        core = self._started()
        pool = core.pool
        return {
            "pool_size": pool.get_size(),
            "pool_idle": pool.get_idle_size(),
            "listener": None if core.listener is None else core.listener.statistics(),
            "leader_pid": None if self._leader is None else self._leader.server_pid,
        }

    # -- transactions ------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Stores]:
        """The stores bound to one transaction (a pooled connection, ``BEGIN`` ...):
        committed when the block exits normally, rolled back when it raises."""
        core = self._started()

        async def open_session() -> TxSession:
            with translated(f"at {self.where}"):
                return TxSession(core, await core.pool.acquire())

        async with pooled_transaction(core, open_session) as session:
            yield PostgresStores(session)

    # -- the stores, autocommit ----------------------------------------------------------
    def describe(self) -> str:
        return f"the PostgreSQL backend on {self.where}"

    def _started(self) -> Core:
        if self._core is None:
            raise self._not_started()
        return self._core


if TYPE_CHECKING:
    _check: type[Backend] = PostgresBackend
