"""Where a store's ops go: into an open transaction, or into short transactions of
their own (the backend's autocommit attributes).

Stores hand over ops (functions of the sqlite3 connection, see ``connection.py``):

- ``read(op)`` / ``write(op)`` when they need the result now;
- ``write_later(op)`` for blind writes (save, publish, ack, ...). Inside a
  transaction these are buffered and sent with the transaction's next statement or
  with its COMMIT, so a transaction that saves, publishes and acks costs one hop to
  the database thread (BEGIN, the statements and COMMIT together). An error in such
  a write surfaces there, and rolls the whole transaction back like any other.

An :class:`AutoSession` reads on the reader connection (WAL: a committed snapshot,
never waiting for the writer) and runs each write as ``BEGIN IMMEDIATE`` ... ``COMMIT``
in one hop, under the writer lock.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeVar

from backends.protocols import Clock
from backends.sql.aio import finish
from backends.sql.dialect import SqliteDialect
from backends.sql.mapping import queue_table
from backends.sql.queries import Queries, QueueQueries
from backends.sqlite.connection import Connection, Op, execute, fetch, in_transaction

T = TypeVar("T")
Then = Callable[[Any], None]
DIALECT = SqliteDialect()

_QUEUE_DDL = (
    "queue_create_table",
    "queue_create_claim_index",
    "queue_create_key_index",
    "queue_create_lease_index",
)
QUEUE_QUERIES = (
    *_QUEUE_DDL,
    "queue_publish",
    "queue_claim",
    "queue_ack",
    "queue_nack",
    "queue_requeue_consumer",
    "queue_requeue_expired",
    "queue_depth",
    "queue_next_available",
)
#: message ids of the n-th queue start at n << QUEUE_ID_BITS (2**40 ids per queue), so
#: an id names one message in the whole database
QUEUE_ID_BITS = 40


class Core:
    """What the sessions of one backend share: connections, the writer lock, the
    queue tables known to exist, and the in-process wake-up events."""

    def __init__(
        self,
        *,
        writer: Connection,
        reader: Connection | None,
        clock: Clock,
        queries: Queries,
        queue_queries: QueueQueries,
        queue_tables: dict[str, str],
    ) -> None:
        self.writer = writer
        self.reader = reader
        self.clock = clock
        self.queries = queries
        self.queue_queries = queue_queries
        #: queue name -> table, for tables whose creation is committed
        self.queue_tables = queue_tables
        #: when the registry of queue tables was last read (see Session.find_table)
        self.tables_read_at = time.monotonic()
        self.lock = asyncio.Lock()
        #: the task running a transaction, to refuse re-entry instead of deadlocking
        self.tx_owner: asyncio.Task[Any] | None = None
        self._wakeups: dict[str, asyncio.Event] = {}

    def wakeup(self, queue: str) -> asyncio.Event:
        event = self._wakeups.get(queue)
        if event is None:
            event = self._wakeups[queue] = asyncio.Event()
        return event

    def notify(self, queues: set[str] | list[str]) -> None:
        for queue in queues:
            self.wakeup(queue).set()

    def check_reentry(self) -> None:
        current = asyncio.current_task()
        if current is not None and current is self.tx_owner:
            raise RuntimeError(
                "this task already runs a SQLite transaction; use the stores that"
                " transaction() yielded instead of the backend's own (the writer lock"
                " is not reentrant, so this would wait forever)"
            )


class Session:
    """Base of both sessions: the clock, the queries and the queue tables. Also the
    shared stores' :class:`backends.sql.stores.SqlSession`: ``select``, ``change`` and
    ``change_later`` are one-statement ops."""

    dialect = DIALECT

    def __init__(self, core: Core) -> None:
        self.core = core
        self.queries = core.queries

    def now(self) -> datetime:
        return self.core.clock()

    async def select(self, sql: str, *args: Any) -> list[Any]:
        return await self.read(fetch(sql, args))

    async def change(self, sql: str, *args: Any) -> int:
        return await self.write(execute(sql, args))

    async def change_later(self, sql: str, *args: Any) -> None:
        await self.write_later(execute(sql, args))

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op`` on a session bound to one transaction (this one, if it is)."""
        raise NotImplementedError

    async def read(self, op: Op[T]) -> T:
        """Run a read (on a committed snapshot, or inside the transaction)."""
        raise NotImplementedError

    async def write(self, op: Op[T], *, new_table: tuple[str, str] | None = None) -> T:
        """Run a write whose result is needed now; ``new_table``: (queue, table) the op
        creates."""
        raise NotImplementedError

    async def write_later(
        self, op: Op[Any], *, then: Then | None = None, new_table: tuple[str, str] | None = None
    ) -> None:
        """Run a blind write, now or with the transaction's next hop; ``then`` gets its
        result once it ran."""
        raise NotImplementedError

    def notify(self, queue: str) -> None:
        """``queue`` got messages consumers may claim, once this session commits."""
        raise NotImplementedError

    def known_table(self, queue: str) -> str | None:
        """The table of ``queue`` if it exists (else the queue is empty)."""
        return self.core.queue_tables.get(queue)

    async def find_table(self, queue: str) -> str | None:
        """Like known_table, but a queue this process has not seen may have been made
        by another process sharing the database: read the registry again (at most
        once a second)."""
        table = self.known_table(queue)
        if table is None and time.monotonic() - self.core.tables_read_at > 1.0:
            self.core.tables_read_at = time.monotonic()
            rows = await self.read(fetch(self.core.queries["queue_tables"]))
            for name, found in rows:
                self.core.queue_tables.setdefault(str(name), str(found))
            table = self.known_table(queue)
        return table

    def all_tables(self) -> dict[str, str]:
        return dict(self.core.queue_tables)

    def queue_queries(self, table: str) -> Mapping[str, str]:
        return self.core.queue_queries.for_table(table)

    def table_for(self, queue: str) -> tuple[str, Op[None] | None]:
        """The table of ``queue``, and the op creating it if it does not exist yet
        (idempotent: a table, a registration and an id range, each only if missing)."""
        table = self.known_table(queue)
        if table is not None:
            return table, None
        table = queue_table(queue)
        rendered = self.queue_queries(table)
        ddl = [rendered[name] for name in _QUEUE_DDL]
        register, seed = self.queries["queue_register"], self.queries["queue_seed_ids"]

        def create(connection: sqlite3.Connection) -> None:
            for statement in ddl:
                connection.execute(statement)
            registered = connection.execute(register, (queue, table)).fetchone()
            if registered is not None:
                connection.execute(seed, (table, int(registered[0]) << QUEUE_ID_BITS))

        return table, create


class TxSession(Session):
    """The session of one ``transaction()``, which holds the writer lock throughout."""

    def __init__(self, core: Core) -> None:
        super().__init__(core)
        self.open = True
        self.begun = False
        self._pending: list[tuple[Op[Any], Then | None]] = []
        self._to_notify: set[str] = set()
        self._new_tables: dict[str, str] = {}

    def _check(self) -> None:
        if not self.open:
            raise RuntimeError("the transaction is over; its stores cannot be used any more")

    async def _send(self, op: Op[T] | None, *, commit: bool) -> T | None:
        """One hop: BEGIN if not yet sent, the buffered writes, then ``op`` or COMMIT."""
        pending, self._pending = self._pending, []
        begin = not self.begun
        self.begun = True

        def batch(connection: sqlite3.Connection) -> tuple[list[Any], T | None]:
            try:
                if begin:
                    connection.execute("BEGIN IMMEDIATE")
                results = [write(connection) for write, _ in pending]
                value = None if op is None else op(connection)
                if commit:
                    connection.execute("COMMIT")
            except BaseException:
                if commit and connection.in_transaction:
                    connection.execute("ROLLBACK")
                raise
            return results, value

        results, value = await self.core.writer.run(batch)
        for (_, then), result in zip(pending, results, strict=True):
            if then is not None:
                then(result)
        return value

    async def read(self, op: Op[T]) -> T:
        self._check()
        value = await self._send(op, commit=False)
        return value  # type: ignore[return-value]  # op is not None: value is T

    async def write(self, op: Op[T], *, new_table: tuple[str, str] | None = None) -> T:
        value = await self.read(op)
        if new_table is not None:
            self._new_tables[new_table[0]] = new_table[1]
        return value

    async def write_later(
        self, op: Op[Any], *, then: Then | None = None, new_table: tuple[str, str] | None = None
    ) -> None:
        self._check()
        self._pending.append((op, then))
        if new_table is not None:
            # Later ops of this transaction find the table; others only after COMMIT.
            self._new_tables[new_table[0]] = new_table[1]

    def notify(self, queue: str) -> None:
        self._to_notify.add(queue)

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        return await op(self)

    def known_table(self, queue: str) -> str | None:
        return self._new_tables.get(queue) or self.core.queue_tables.get(queue)

    def all_tables(self) -> dict[str, str]:
        return {**self.core.queue_tables, **self._new_tables}

    async def commit(self) -> None:
        """Send what is buffered with COMMIT (nothing at all if nothing happened). A
        cancellation arriving meanwhile waits for the COMMIT, which happens anyway."""
        self._check()
        self.open = False
        await finish(self._commit())

    async def _commit(self) -> None:
        if self.begun or self._pending:
            await self._send(None, commit=True)
        self.core.queue_tables.update(self._new_tables)
        self.core.notify(list(self._to_notify))

    async def rollback(self) -> None:
        """Drop what is buffered; roll back what was sent."""
        self.open = False
        self._pending = []
        if self.begun:
            await rollback(self.core.writer)


class AutoSession(Session):
    """The backend's own session: each store call is a transaction of its own."""

    async def read(self, op: Op[T]) -> T:
        core = self.core
        if core.reader is not None:
            return await core.reader.run(op)
        core.check_reentry()
        async with core.lock:
            return await core.writer.run(op)

    async def write(self, op: Op[T], *, new_table: tuple[str, str] | None = None) -> T:
        core = self.core
        core.check_reentry()
        async with core.lock:
            value = await core.writer.run(in_transaction(op))
            if new_table is not None:
                core.queue_tables[new_table[0]] = new_table[1]
        return value

    async def write_later(
        self, op: Op[Any], *, then: Then | None = None, new_table: tuple[str, str] | None = None
    ) -> None:
        result = await self.write(op, new_table=new_table)
        if then is not None:
            then(result)

    def notify(self, queue: str) -> None:
        self.core.notify([queue])

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        async with transaction(self.core) as session:
            return await op(session)


@asynccontextmanager
async def transaction(core: Core) -> AsyncIterator[TxSession]:
    """A ``BEGIN IMMEDIATE`` transaction holding the writer lock: committed when the
    block exits normally, rolled back when it raises."""
    core.check_reentry()
    async with core.lock:
        session = TxSession(core)
        core.tx_owner = asyncio.current_task()
        try:
            try:
                yield session
            except BaseException:
                await session.rollback()
                raise
            await session.commit()
        finally:
            core.tx_owner = None


async def rollback(connection: Connection) -> None:
    """Roll back what the connection's transaction did (nothing if it is over)."""

    def op(c: sqlite3.Connection) -> None:
        if c.in_transaction:
            c.execute("ROLLBACK")

    await finish(connection.run(op))
