"""Where a store's statements go on MySQL: into an open transaction (one pooled
connection, ``BEGIN`` ... ``COMMIT``), or into short statements of their own (the
backend's autocommit attributes borrow a pooled connection per call).

Named locks (``GET_LOCK``: a deploy's flow lock, a claim's key locks) belong to the
connection, not the transaction: a session that took some releases them all when its
transaction ends, before the connection goes back to the pool.

The :class:`Core` is what every session of one backend shares: the pool, the queue
tables known to exist, and the wake-ups (in-process events, and the adaptive poll
interval of each queue).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from backends.errors import Transient
from backends.mysql.connection import (
    batch,
    key_lock_name,
    key_lock_prefix,
    lock_name,
    query,
    render,
    run,
    translated,
)
from backends.protocols import Clock
from backends.sql.aio import finish
from backends.sql.dialect import MysqlDialect
from backends.sql.mapping import queue_table
from backends.sql.pooled import Wakeups, pooled_transaction
from backends.sql.queries import Queries, QueueQueries

T = TypeVar("T")
#: an aiomysql connection (aiomysql ships no type information)
Conn = Any
Row = tuple[Any, ...]
DIALECT = MysqlDialect()

QUEUE_QUERIES = (
    "queue_create_table",
    "queue_publish",
    "queue_claim",
    "queue_lease",
    "queue_lease_locked",
    "queue_claim_verdicts",
    "queue_prefetch_executions",
    "queue_give_back",
    "queue_ack",
    "queue_nack",
    "queue_requeue_consumer",
    "queue_requeue_expired",
    "queue_depth",
    "queue_probe",
    "queue_next_available",
)
#: message ids of the n-th queue start at n << QUEUE_ID_BITS (2**40 ids per queue)
QUEUE_ID_BITS = 40
_RELEASE_LOCKS = "DO RELEASE_ALL_LOCKS()"


class Poll:
    """The adaptive poll interval of one queue: ``fastest`` while messages flow (a
    claim found some, a local publish, a poll that found one, in the last
    ``busy_seconds``), then doubling with each poll that finds nothing, up to
    ``slowest``. Any activity brings it back to ``fastest`` at once."""

    __slots__ = ("busy_seconds", "fastest", "interval", "last_active", "slowest")

    def __init__(self, fastest: float, slowest: float, busy_seconds: float = 1.0) -> None:
        self.fastest = fastest
        self.slowest = slowest
        self.busy_seconds = busy_seconds
        self.interval = fastest
        # not busy until something happens: the first empty poll backs off already
        self.last_active = time.monotonic() - busy_seconds

    def active(self) -> None:
        self.interval = self.fastest
        self.last_active = time.monotonic()

    def idle(self) -> None:
        if time.monotonic() - self.last_active >= self.busy_seconds:
            self.interval = min(self.slowest, self.interval * 2)


class Core(Wakeups):
    """What the sessions of one backend share."""

    system = "MySQL"

    def __init__(
        self,
        *,
        pool: Any,
        clock: Clock,
        database: str,
        where: str,
        queries: Queries,
        queue_queries: QueueQueries,
        queue_tables: dict[str, str],
        poll_fastest: float,
        poll_slowest: float,
        poll_busy_seconds: float,
    ) -> None:
        super().__init__()
        self.pool = pool
        self.clock = clock
        self.database = database
        self.where = where
        self.queries = queries
        self.poll_fastest = poll_fastest
        self.poll_slowest = poll_slowest
        self.poll_busy_seconds = poll_busy_seconds
        self._queue_queries = queue_queries
        #: queue name -> the rendered queries of its table
        self._tables: dict[str, tuple[str, Any]] = {}
        for queue, table in queue_tables.items():
            self.remember(queue, table)
        self._creating = asyncio.Lock()
        self._polls: dict[str, Poll] = {}
        #: how long a deploy or a queue table's creation waits for its named lock
        #: before failing with Transient (proceeding without it would race)
        self.lock_wait_seconds = 30.0
        #: queue -> when the registry last said it has no table
        self.missing: dict[str, float] = {}
        self.table_lock = lock_name("queue-tables", database)

    # -- queue tables --------------------------------------------------------------------
    def remember(self, queue: str, table: str) -> Any:
        known = self._tables.get(queue)
        if known is None:
            known = (table, self._queue_queries.for_table(table))
            self._tables[queue] = known
        return known[1]

    def known_table(self, queue: str) -> Any:
        """The rendered queries of ``queue``'s table, if known to exist."""
        known = self._tables.get(queue)
        return None if known is None else known[1]

    def all_tables(self) -> dict[str, Any]:
        return {queue: known[1] for queue, known in self._tables.items()}

    def key_lock_prefix(self, queue: str) -> str:
        return key_lock_prefix(self.database, queue)

    def key_lock(self, queue: str, key: str) -> str:
        return key_lock_name(self.database, queue, key)

    async def create_table(self, queue: str) -> Any:
        """Create ``queue``'s table if needed, on a connection of its own (DDL commits
        by itself in MySQL: it must not run inside the caller's transaction)."""
        async with self._creating:
            known = self.known_table(queue)
            if known is not None:
                return known
            table = queue_table(queue)
            q = self.queries
            where = f"at {self.where}: creating the table of queue {queue!r}"
            with translated(where):
                try:
                    connection = await asyncio.wait_for(self.pool.acquire(), timeout=10.0)
                except TimeoutError:
                    raise Transient(
                        f"MySQL {where}: no free connection in the pool for 10 s (a"
                        " transaction publishing to a new queue needs a second one; raise"
                        " pool_max)"
                    ) from None
            try:
                with translated(where):
                    lock = (self.table_lock, self.lock_wait_seconds)
                    [(got,)] = await query(connection, q["queue_create_lock"], lock)
                    if got != 1:
                        # without it, two creators could give two queues one id range
                        raise Transient(
                            f"MySQL {where}: another process held the queue tables' lock for"
                            f" {self.lock_wait_seconds:g} s (see SHOW PROCESSLIST); callers retry"
                        )
                    try:
                        rows = await query(connection, q["queue_table"], (queue,))
                        if not rows:
                            ordinal = int((await query(connection, q["queue_next_ordinal"]))[0][0])
                            first_id = (ordinal << QUEUE_ID_BITS) + 1
                            ddl = self._queue_queries.for_table(table)["queue_create_table"]
                            await run(connection, ddl.replace("{first_id}", str(first_id)))
                            await run(connection, q["queue_register"], (queue, table, ordinal))
                    finally:
                        await query(connection, q["queue_create_unlock"], (self.table_lock,))
            finally:
                self.pool.release(connection)
            return self.remember(queue, table)

    # -- wake-ups ------------------------------------------------------------------------
    def poll(self, queue: str) -> Poll:
        poll = self._polls.get(queue)
        if poll is None:
            poll = self._polls[queue] = Poll(
                self.poll_fastest, self.poll_slowest, self.poll_busy_seconds
            )
        return poll

    def poll_intervals(self) -> dict[str, float]:
        """The current poll interval of each queue waited on."""
        return {queue: poll.interval for queue, poll in self._polls.items()}

    def wake(self, queues: set[str] | list[str]) -> None:
        super().wake(queues)
        for queue in queues:
            self.poll(queue).active()


class Session:
    """Base of both sessions; also the shared stores' SqlSession."""

    dialect = DIALECT

    def __init__(self, core: Core) -> None:
        self.core = core
        self.queries = core.queries

    def now(self) -> datetime:
        return self.core.clock()

    async def select(self, sql: str, *args: Any) -> list[Row]:
        """The rows of a read."""
        raise NotImplementedError

    async def change(self, sql: str, *args: Any) -> int:
        """Run a write; the rows it matched."""
        raise NotImplementedError

    async def change_later(self, sql: str, *args: Any) -> None:
        await self.change(sql, *args)

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        """Run ``op`` on a session bound to one transaction (this one, if it is)."""
        raise NotImplementedError

    def committed(self, queue: str) -> None:
        """Wake this process's consumers of ``queue`` once this session commits."""
        raise NotImplementedError

    async def find_table(self, queue: str) -> Any:
        """The queries of ``queue``'s table, if it exists (another process may have
        made it: a queue not known here is looked up in the registry, at most every
        half second, so that consumers polling a queue nobody created yet do not
        query the registry at each poll)."""
        core = self.core
        known = core.known_table(queue)
        if known is None and time.monotonic() - core.missing.get(queue, -1.0) >= 0.5:
            rows = await self.select(self.queries["queue_table"], queue)
            if rows:
                known = core.remember(queue, str(rows[0][0]))
            else:
                core.missing[queue] = time.monotonic()
        return known

    async def refresh_tables(self) -> None:
        for name, table in await self.select(self.queries["queue_tables"]):
            self.core.remember(str(name), str(table))

    async def table_for(self, queue: str) -> Any:
        """The queries of ``queue``'s table, created if missing."""
        known = self.core.known_table(queue)
        return known if known is not None else await self.core.create_table(queue)


class AutoSession(Session):
    """The backend's own session: each store call runs on its own (autocommit)."""

    async def select(self, sql: str, *args: Any) -> list[Row]:
        core = self.core
        with translated(f"at {core.where}"):
            async with core.pool.acquire() as connection:
                return await query(connection, sql, args)

    async def change(self, sql: str, *args: Any) -> int:
        core = self.core
        core.check_reentry()
        with translated(f"at {core.where}"):
            async with core.pool.acquire() as connection:
                return await run(connection, sql, args)

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        async with pooled_transaction(self.core, self.open_transaction) as session:
            return await op(session)

    async def open_transaction(self) -> TxSession:
        """A session on a pooled connection of its own (not begun yet)."""
        with translated(f"at {self.core.where}"):
            return TxSession(self.core, await self.core.pool.acquire())

    def committed(self, queue: str) -> None:
        self.core.wake([queue])


class TxSession(Session):
    """The session of one transaction: one pooled connection, from ``BEGIN`` to
    ``COMMIT`` or ``ROLLBACK``.

    Round trips are what a transaction mostly costs here (PyMySQL has no pipelining
    and MySQL no prepared statements worth it), so they are saved: ``BEGIN`` and the
    blind writes (``change_later``: save, publish, ack, ...) wait, rendered, and go
    with the next statement whose answer is needed, or with the ``COMMIT``, as one
    multi-statement query. A transaction that claims, saves, publishes and acks costs
    its reads plus one round trip. An error in a deferred write surfaces there, and
    the whole transaction rolls back, as for any other failed statement."""

    def __init__(self, core: Core, connection: Conn) -> None:
        super().__init__(core)
        self.connection = connection
        self.open = True
        #: the connection holds named locks to release when the transaction ends
        self.holds_locks = False
        #: BEGIN reached the server (else nothing is to roll back)
        self._begun = False
        self._pending: list[str] = []
        self._to_wake: set[str] = set()
        #: executions a claim of this transaction locked and read (id -> data, None:
        #: no such execution), for get_for_update to take instead of reading again
        self.prefetched: dict[str, bytes | None] = {}

    def _check(self) -> None:
        if not self.open:
            raise RuntimeError("the transaction is over; its stores cannot be used any more")

    async def begin(self) -> None:
        """Start the transaction: BEGIN goes with the first statement."""
        self._pending.append("BEGIN")

    async def drop(self) -> None:
        """Give back the connection of a transaction that never began."""
        self.open = False
        self.core.pool.release(self.connection)

    async def _send(
        self, statements: Sequence[str], *, ending: Sequence[str] = ()
    ) -> list[tuple[list[Row], int]]:
        """One round trip: what waits, then ``statements``, then ``ending``; the results
        of ``statements``."""
        sent = [*self._pending, *statements, *ending]
        waited, self._pending = len(self._pending), []
        if sent[:1] == ["BEGIN"]:
            self._begun = True
        results = await batch(self.connection, sent)
        return results[waited : waited + len(statements)]

    async def select(self, sql: str, *args: Any) -> list[Row]:
        self._check()
        with translated(f"at {self.core.where}"):
            [(rows, _)] = await self._send([render(self.connection, sql, args)])
            return rows

    async def select_many(self, *queries: tuple[str, Sequence[Any]]) -> list[list[Row]]:
        """The rows of several statements, sent together (with what waits)."""
        self._check()
        with translated(f"at {self.core.where}"):
            rendered = [render(self.connection, sql, args) for sql, args in queries]
            return [rows for rows, _ in await self._send(rendered)]

    async def change(self, sql: str, *args: Any) -> int:
        self._check()
        with translated(f"at {self.core.where}"):
            [(_, count)] = await self._send([render(self.connection, sql, args)])
            return count

    async def change_later(self, sql: str, *args: Any) -> None:
        self._check()
        self._pending.append(render(self.connection, sql, args))

    async def atomically(self, op: Callable[[Any], Awaitable[T]]) -> T:
        return await op(self)

    def committed(self, queue: str) -> None:
        self._to_wake.add(queue)

    async def commit(self) -> None:
        """COMMIT (with what waits), wake this process's consumers, give the connection
        back. A cancellation arriving meanwhile waits for all that (the server commits
        anyway)."""
        self._check()
        self.open = False
        await finish(self._end(commit=True))

    async def rollback(self) -> None:
        """ROLLBACK what was sent, drop what waits, give the connection back."""
        self.open = False
        self._pending = []
        await finish(self._end(commit=False))

    async def _end(self, *, commit: bool) -> None:
        connection = self.connection
        release = [_RELEASE_LOCKS] if self.holds_locks else []
        reusable = False
        try:
            if commit:
                if self._begun or len(self._pending) > 1:
                    with translated(f"at {self.core.where}: COMMIT"):
                        await self._send([], ending=["COMMIT", *release])
                self.core.wake(list(self._to_wake))
            elif self._begun and not connection.closed:
                try:
                    await batch(connection, ["ROLLBACK", *release])
                except Exception:
                    # unusable: dropping it rolls the transaction back, frees its locks
                    connection.close()
            reusable = True
        finally:
            if not reusable and not connection.closed:
                # the COMMIT failed: nobody knows what the connection holds
                connection.close()
            self.core.pool.release(connection)
