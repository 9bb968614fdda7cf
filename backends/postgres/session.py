"""Where a store's statements go: into an open transaction (one pooled connection,
``BEGIN`` ... ``COMMIT``), or into short transactions of their own (the backend's
autocommit attributes: each call borrows a pooled connection, for one statement, a few
statements each committed on its own, or one ``atomically`` block). Sessions are the
shared stores' :class:`backends.sql.stores.SqlSession` (``select``, ``change``, ...)
and, for the queues, also speak asyncpg directly (``fetch``, ``on_connection``).

The :class:`Core` is what every session of one backend shares: the pool, the queue
tables known to exist, the in-process wake-up events and the listener.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from backends.errors import Transient
from backends.postgres.connection import channel, lock_key32, lock_key64, translated
from backends.postgres.deferred import Deferred
from backends.postgres.listener import Listener
from backends.postgres.notifier import Notifier, notify_literal
from backends.protocols import Clock
from backends.sql.aio import finish
from backends.sql.dialect import PostgresDialect
from backends.sql.mapping import queue_table
from backends.sql.pooled import Wakeups
from backends.sql.queries import Queries, QueueQueries

T = TypeVar("T")
#: an asyncpg connection or pool proxy (asyncpg ships no type information)
Conn = Any
Record = Any
Op = Callable[[Conn], Awaitable[T]]
DIALECT = PostgresDialect()

QUEUE_DDL = (
    "queue_create_table",
    "queue_create_claim_index",
    "queue_create_key_index",
    "queue_create_waiting_index",
    "queue_create_lease_index",
)
QUEUE_QUERIES = (
    *QUEUE_DDL,
    "queue_claim",
    "queue_claim_autocommit",
    "queue_claim_executions",
    "queue_claim_recheck",
    "queue_nack",
    "queue_requeue_consumer",
    "queue_requeue_expired",
    "queue_depth",
    "queue_next_available",
)


class QueueTable:
    """What the queue code needs to know about one queue's table."""

    __slots__ = ("channel", "lock_class", "name", "queries")

    def __init__(self, name: str, schema: str, queries: Mapping[str, str]) -> None:
        self.name = name
        self.queries = queries
        self.channel = channel(schema, name)
        #: first half of the two-key advisory locks of this queue's keys
        self.lock_class = lock_key32("runtime.queue", schema, name)


class Core(Wakeups):
    """What the sessions of one backend share."""

    system = "PostgreSQL"

    def __init__(
        self,
        *,
        pool: Any,
        clock: Clock,
        schema: str,
        where: str,
        queries: Queries,
        queue_queries: QueueQueries,
        sender: str,
        poll_seconds: float,
        queue_tables: dict[str, str],
    ) -> None:
        super().__init__()
        self.pool = pool
        self.clock = clock
        self.schema = schema
        self.where = where
        self.queries = queries
        self.sender = sender
        self.poll_seconds = poll_seconds
        self.listener: Listener | None = None
        #: other processes' wake-ups, sent after commits (None: this process only)
        self.notifier: Notifier | None = None
        #: deferred statements committing on their own now under way
        self.alone_in_flight = 0
        self._queue_queries = queue_queries
        #: queue name -> table, for tables known to exist
        self._tables: dict[str, QueueTable] = {}
        for queue, table in queue_tables.items():
            self.remember(queue, table)
        self._creating = asyncio.Lock()
        self.table_create_lock = lock_key64("runtime.queue-tables", schema)

    # -- queue tables --------------------------------------------------------------------
    def remember(self, queue: str, table: str) -> QueueTable:
        known = self._tables.get(queue)
        if known is None:
            known = QueueTable(table, self.schema, self._queue_queries.for_table(table))
            self._tables[queue] = known
        return known

    def known_table(self, queue: str) -> QueueTable | None:
        return self._tables.get(queue)

    def all_tables(self) -> dict[str, QueueTable]:
        return dict(self._tables)

    def remember_tables(self, rows: list[Record]) -> None:
        for name, table in rows:
            self.remember(str(name), str(table))

    async def create_table(self, queue: str) -> QueueTable:
        """Create ``queue``'s table if needed, in a transaction of its own (an empty
        table is harmless: it need not roll back with the caller's transaction)."""
        async with self._creating:
            known = self._tables.get(queue)
            if known is not None:
                return known
            table = queue_table(queue)
            rendered = self._queue_queries.for_table(table)
            where = f"at {self.where}: creating the table of queue {queue!r}"
            with translated(where):
                try:
                    connection = await self.pool.acquire(timeout=10.0)
                except TimeoutError:
                    raise Transient(
                        f"PostgreSQL {where}: no free connection in the pool for 10 s (a"
                        " transaction publishing to a new queue needs a second one; raise"
                        " pool_max)"
                    ) from None
            try:
                with translated(where):
                    async with connection.transaction():
                        await connection.execute(
                            self.queries["queue_create_lock"], self.table_create_lock
                        )
                        for name in QUEUE_DDL:
                            await connection.execute(rendered[name])
                        register = self.queries["queue_register"]
                        await connection.execute(register, queue, table)
            finally:
                await self.pool.release(connection)
            return self.remember(queue, table)

    # -- wake-ups ------------------------------------------------------------------------
    def channels(self, queues: set[str] | list[str]) -> list[str]:
        return sorted({channel(self.schema, queue_table(queue)) for queue in queues})

    def committed(self, queues: set[str] | list[str]) -> None:
        """Messages of ``queues`` may have become claimable by a statement that
        committed on its own: wake this process's consumers now, other processes' by a
        notification (``backends.postgres.notifier``)."""
        if not queues:
            return
        self.wake(queues)
        if self.notifier is not None:
            self.notifier.notify(self.channels(queues))

    def commit_statement(self, queues: set[str] | list[str]) -> str:
        """``COMMIT``, followed in the same round trip by the notifications of ``queues``
        in a transaction of their own (``backends.postgres.notifier``)."""
        if not queues:
            return "COMMIT"
        return "COMMIT; " + notify_literal(self.channels(queues), self.sender)

    def subscribe(self, queue: str) -> None:
        """Have the listener LISTEN for ``queue``'s notifications."""
        if self.listener is not None:
            self.listener.subscribe(queue, channel(self.schema, queue_table(queue)))

    async def listening(self, queue: str, at_most: float) -> None:
        """Subscribe, waiting (``at_most``) for the LISTEN to be in place."""
        if self.listener is not None:
            await self.listener.listening(queue, channel(self.schema, queue_table(queue)), at_most)

    def wait_limit(self, at_most: float) -> float:
        """How long a wait may sleep: notifications arrive only while listening."""
        if self.listener is not None and self.listener.connected:
            return at_most
        return min(at_most, self.poll_seconds)


def _count(status: str) -> int:
    """The row count of a command status ("UPDATE 3", "INSERT 0 1"; 0 if none)."""
    last = status.rpartition(" ")[2]
    return int(last) if last.isdigit() else 0


class Session:
    """Base of both sessions."""

    dialect = DIALECT

    def __init__(self, core: Core) -> None:
        self.core = core
        self.queries = core.queries
        self.sender = core.sender
        #: a transaction's executions locked and read by its claim (execution id ->
        #: data, None: no such execution), until get_for_update takes them
        self.prefetched: dict[str, bytes | None] | None = None

    def now(self) -> datetime:
        return self.core.clock()

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        """Rows of a read."""
        raise NotImplementedError

    async def write(self, sql: str, *args: Any) -> list[Record]:
        """Rows of a write (its RETURNING clause, or the CTE's result)."""
        raise NotImplementedError

    async def select(self, sql: str, *args: Any) -> list[Record]:
        return await self.fetch(sql, *args)

    async def select_unwritten(self, sql: str, *args: Any) -> list[Record]:
        """A read of tables the deferred writes never touch (flows): a transaction
        need not send its deferred writes before it (a round trip less)."""
        return await self.fetch(sql, *args)

    async def change(self, sql: str, *args: Any) -> int:
        """Run a write; how many rows it changed."""
        raise NotImplementedError

    async def change_later(self, sql: str, *args: Any) -> None:
        """A blind write, sent now (asyncpg pipelines nothing across awaits)."""
        await self.change(sql, *args)

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op`` on a session bound to one transaction (this one, if it is)."""
        raise NotImplementedError

    async def on_connection(self, op: Op[T]) -> T:
        """Run ``op``'s statements on one connection: in the transaction if there is
        one, else each in a transaction of its own."""
        raise NotImplementedError

    def committed(self, queue: str) -> None:
        """Wake the consumers of ``queue`` once this session commits (this process's at
        once, other processes' by a notification: ``backends.postgres.notifier``)."""
        raise NotImplementedError

    async def defer(self, write: Callable[[Deferred], None]) -> None:
        """A write whose result nobody reads (see backends.postgres.deferred): held
        back by a transaction, sent at once in autocommit."""
        raise NotImplementedError

    async def send_deferred(
        self, connection: Conn, deferred: Deferred, *, alone: bool = False
    ) -> None:
        """Send ``deferred`` as one statement on ``connection``; ``alone``: it commits
        on its own (no transaction around it)."""
        core = self.core
        # Committing alone, the statement notifies in itself when no other one of this
        # process is under way (no wait for a separate notification; the lock it then
        # holds through its WAL flush is contended only under load), else the notifier
        # sends the notifications after it (backends.postgres.notifier).
        inline = alone and core.alone_in_flight == 0
        sql, args, acked = deferred.statement(self.sender, notify=inline)
        if alone:
            core.alone_in_flight += 1
        try:
            row = await connection.fetchrow(sql, *args)
        finally:
            if alone:
                core.alone_in_flight -= 1
        woken = list(deferred.publishes)
        for n, queue in enumerate(acked):
            if row is not None and row[n]:
                # a freed key has a message waiting: it may be claimable now
                woken.append(queue)
        if inline:
            core.wake(woken)  # the other processes were notified by the statement
        else:
            for queue in woken:
                self.committed(queue)

    async def find_table(self, queue: str) -> QueueTable | None:
        """The table of ``queue``, if it exists (another process may have made it: a
        queue not known here is looked up in the registry)."""
        table = self.core.known_table(queue)
        if table is None:
            rows = await self.fetch(self.queries["queue_table"], queue)
            if rows:
                table = self.core.remember(queue, str(rows[0][0]))
        return table

    async def refresh_tables(self) -> None:
        self.core.remember_tables(await self.fetch(self.queries["queue_tables"]))

    async def table_for(self, queue: str) -> QueueTable:
        """The table of ``queue``, created if missing."""
        table = self.core.known_table(queue)
        return table if table is not None else await self.core.create_table(queue)


class AutoSession(Session):
    """The backend's own session: each store call is a transaction of its own."""

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        core = self.core
        with translated(f"at {core.where}"):
            async with core.pool.acquire() as connection:
                rows: list[Record] = await connection.fetch(sql, *args)
                return rows

    async def write(self, sql: str, *args: Any) -> list[Record]:
        self.core.check_reentry()
        return await self.fetch(sql, *args)

    async def change(self, sql: str, *args: Any) -> int:
        core = self.core
        core.check_reentry()
        with translated(f"at {core.where}"):
            async with core.pool.acquire() as connection:
                return _count(await connection.execute(sql, *args))

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        core = self.core
        core.check_reentry()
        with translated(f"at {core.where}"):
            async with core.pool.acquire() as connection, connection.transaction():
                return await op(TxSession(core, connection))

    async def on_connection(self, op: Op[T]) -> T:
        core = self.core
        core.check_reentry()
        with translated(f"at {core.where}"):
            async with core.pool.acquire() as connection:
                return await op(connection)

    def committed(self, queue: str) -> None:
        self.core.committed([queue])

    async def defer(self, write: Callable[[Deferred], None]) -> None:
        deferred = Deferred()
        write(deferred)
        core = self.core
        core.check_reentry()
        with translated(f"at {core.where}"):
            async with core.pool.acquire() as connection:
                await self.send_deferred(connection, deferred, alone=True)


class TxSession(Session):
    """The session of one ``transaction()``: one pooled connection, from ``BEGIN`` to
    ``COMMIT`` or ``ROLLBACK``.

    ``BEGIN`` goes with the first statement, and the deferred writes with the next
    statement or the commit: a transaction of deferred writes only is one statement,
    atomic on its own, without ``BEGIN`` and ``COMMIT`` (a worker's report)."""

    def __init__(self, core: Core, connection: Conn) -> None:
        super().__init__(core)
        self.connection = connection
        self.open = True
        self._to_wake: set[str] = set()
        self._begun = False
        self._deferred = Deferred()
        self.prefetched = {}

    def _check(self) -> None:
        if not self.open:
            raise RuntimeError("the transaction is over; its stores cannot be used any more")

    async def begin(self) -> None:
        """Nothing yet: BEGIN goes with the transaction's first statement."""

    async def _begin(self) -> None:
        self._check()
        if not self._begun:
            with translated(f"at {self.core.where}"):
                await self.connection.execute("BEGIN")
            self._begun = True

    async def _ready(self) -> None:
        """Before a statement: BEGIN if not yet, and the deferred writes it must see."""
        await self._begin()
        if self._deferred:
            deferred, self._deferred = self._deferred, Deferred()
            with translated(f"at {self.core.where}"):
                await self.send_deferred(self.connection, deferred)

    async def defer(self, write: Callable[[Deferred], None]) -> None:
        self._check()
        write(self._deferred)

    async def drop(self) -> None:
        """Give back a connection whose BEGIN failed."""
        self.open = False
        await self.core.pool.release(self.connection)

    async def fetch(self, sql: str, *args: Any) -> list[Record]:
        await self._ready()
        with translated(f"at {self.core.where}"):
            rows: list[Record] = await self.connection.fetch(sql, *args)
            return rows

    async def select_unwritten(self, sql: str, *args: Any) -> list[Record]:
        await self._begin()
        with translated(f"at {self.core.where}"):
            rows: list[Record] = await self.connection.fetch(sql, *args)
            return rows

    async def write(self, sql: str, *args: Any) -> list[Record]:
        return await self.fetch(sql, *args)

    async def change(self, sql: str, *args: Any) -> int:
        await self._ready()
        with translated(f"at {self.core.where}"):
            return _count(await self.connection.execute(sql, *args))

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        return await op(self)

    async def on_connection(self, op: Op[T]) -> T:
        await self._ready()
        with translated(f"at {self.core.where}"):
            return await op(self.connection)

    def committed(self, queue: str) -> None:
        self._to_wake.add(queue)

    async def commit(self) -> None:
        """COMMIT, wake this process's consumers, give the connection back to the pool.
        A cancellation arriving meanwhile waits for all that (the server commits anyway)."""
        self._check()
        self.open = False
        await finish(self._end(commit=True))

    async def rollback(self) -> None:
        """ROLLBACK what was sent, give the connection back to the pool."""
        self.open = False
        await finish(self._end(commit=False))

    async def _end(self, *, commit: bool) -> None:
        connection = self.connection
        try:
            if commit:
                deferred, self._deferred = self._deferred, Deferred()
                if not self._begun:
                    # deferred writes only: one statement, atomic without BEGIN
                    if deferred:
                        with translated(f"at {self.core.where}"):
                            await self.send_deferred(connection, deferred, alone=True)
                else:
                    if deferred:
                        try:
                            with translated(f"at {self.core.where}"):
                                await self.send_deferred(connection, deferred)
                        except BaseException:
                            await _rollback(connection)
                            raise
                    # (a notification failing after a COMMIT that succeeded would be
                    # reported as a failed commit: pg_notify fails only on a full queue)
                    with translated(f"at {self.core.where}: COMMIT"):
                        await connection.execute(self.core.commit_statement(self._to_wake))
                    self._to_wake, woken = set(), self._to_wake
                    self.core.wake(list(woken))
                self.core.committed(list(self._to_wake))
            elif self._begun:
                # (a closed connection took its transaction with it)
                await _rollback(connection)
        finally:
            with contextlib.suppress(Exception):
                # asyncpg may already have handed a connection the server ended back
                # to the pool; releasing it again must not hide the original error.
                await self.core.pool.release(connection)


async def _rollback(connection: Any) -> None:
    """Roll back after a failed statement; a connection that cannot is dropped (which
    rolls its transaction back)."""
    if not _usable(connection):
        return
    try:
        await connection.execute("ROLLBACK")
    except Exception:
        connection.terminate()


def _usable(connection: Any) -> bool:
    """Open and still ours: asyncpg hands a connection the server ended back to the
    pool by itself, after which even is_closed() raises InterfaceError."""
    try:
        return not connection.is_closed()
    except Exception:
        return False
