"""The SQLite backend: the embedded default for the one-process deployment.

One writer connection, serialised by an asyncio.Lock, runs every write; a second,
read-only connection serves autocommit reads from WAL snapshots so they never wait
for the writer. Both run sqlite3 on their own aiosqlite thread, never on the loop,
and each call hands its thread one op of one or more statements (see session.py:
a transaction that saves, publishes and acks is a single hop).

Durability: WAL with ``synchronous=FULL`` by default, so a committed transaction
survives a kill -9 or a power cut. ``synchronous="NORMAL"`` is faster (no fsync per
commit) and still never corrupts the database, but the last transactions before a
power cut (not a process crash) may be lost.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from backends.protocols import Clock, Stores

if TYPE_CHECKING:
    from backends.protocols import Backend
from backends.sql.aio import finish
from backends.sql.backend import SqlBackendBase
from backends.sql.mapping import to_micros
from backends.sql.migrations import Migration, load_migrations, migrate
from backends.sql.queries import QueueQueries
from backends.sql.stores import SqlServices
from backends.sqlite.connection import Connection, Synchronous, execute, fetch
from backends.sqlite.session import (
    DIALECT,
    QUEUE_QUERIES,
    AutoSession,
    Core,
    rollback,
    transaction,
)
from backends.sqlite.stores import SqliteLeader, SqliteStores

#: the shared statements in SQLite's style, and SQLite's own
QUERIES = DIALECT.queries("backends.sqlite")
MIGRATIONS = load_migrations("backends.sqlite.migrations")
_QUEUE_QUERIES = QueueQueries(QUERIES, QUEUE_QUERIES)


def utc_now() -> datetime:
    return datetime.now(UTC)


class SqliteBackend(SqlBackendBase):
    """Backend on one SQLite file.

    :param path: the database file (created if missing), or ``":memory:"`` for a
        private in-memory database (no reader connection then).
    :param clock: "now" for leases, delays and TTLs (UTC); tests pass a fake one.
    :param synchronous: ``"FULL"`` (default: every commit is fsynced), ``"NORMAL"``
        (no fsync per commit: a process crash loses nothing, a power cut may lose the
        last commits), or ``"OFF"`` (throwaway databases only).
    :param busy_timeout: seconds a statement waits for another process's lock before
        failing with :class:`backends.errors.Transient`.
    :param read_connection: serve autocommit reads from a second connection.
    """

    name = "sqlite"

    def __init__(
        self,
        path: str | Path,
        clock: Clock | None = None,
        *,
        synchronous: Synchronous = "FULL",
        busy_timeout: float = 5.0,
        read_connection: bool = True,
    ) -> None:
        if synchronous not in ("FULL", "NORMAL", "OFF"):
            raise ValueError(f"synchronous must be FULL or NORMAL (or OFF), not {synchronous!r}")
        self.path = str(path)
        self._clock: Clock = clock or utc_now
        self._synchronous: Synchronous = synchronous
        self._busy_timeout = busy_timeout
        self._read_connection = read_connection and self.path != ":memory:"
        self._core: Core | None = None
        self._stores: SqliteStores | None = None
        self._services: SqlServices | None = None
        self._leader: SqliteLeader | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        """Open the connections and apply pending schema migrations."""
        if self._core is not None:
            return
        writer = await Connection.open(
            self.path, synchronous=self._synchronous, busy_timeout=self._busy_timeout
        )
        reader: Connection | None = None
        try:
            await self._migrate(writer)
            tables = {
                str(queue): str(table)
                for queue, table in await writer.run(fetch(QUERIES["queue_tables"]))
            }
            if self._read_connection:
                reader = await Connection.open(
                    self.path,
                    synchronous=self._synchronous,
                    busy_timeout=self._busy_timeout,
                    query_only=True,
                )
        except BaseException:
            await finish(writer.close())
            raise
        core = Core(
            writer=writer,
            reader=reader,
            clock=self._clock,
            queries=QUERIES,
            queue_queries=_QUEUE_QUERIES,
            queue_tables=tables,
        )
        session = AutoSession(core)
        self._core = core
        self._stores = SqliteStores(session)
        self._services = SqlServices(session)
        self._leader = SqliteLeader(session)

    async def stop(self) -> None:
        """Wait for the transaction in progress, then close the connections."""
        core = self._core
        if core is None:
            return
        async with core.lock:
            self._core = None
            self._stores = self._services = self._leader = None
            try:
                if core.reader is not None:
                    await finish(core.reader.close())
            finally:
                await finish(core.writer.close())

    async def __aenter__(self) -> SqliteBackend:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _migrate(self, writer: Connection) -> list[int]:
        """Apply pending migrations in one transaction (all or none)."""
        await writer.run(execute("BEGIN IMMEDIATE"))
        try:
            applied = await migrate(
                _MigrationTarget(writer, self._clock), MIGRATIONS, database=self.path
            )
            await writer.run(execute("COMMIT"))
        except BaseException:
            await rollback(writer)
            raise
        return applied

    # -- transactions ------------------------------------------------------------------
    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Stores]:
        """The stores bound to one ``BEGIN IMMEDIATE`` transaction: committed when the
        block exits normally, rolled back when it raises."""
        async with transaction(self._started()) as session:
            yield SqliteStores(session)

    # -- the stores, autocommit ----------------------------------------------------------
    def describe(self) -> str:
        return f"the SQLite backend on {self.path}"

    def _started(self) -> Core:
        if self._core is None:
            raise self._not_started()
        return self._core


if TYPE_CHECKING:
    _check: type[Backend] = SqliteBackend


class _MigrationTarget:
    """The migration runner's view of the writer connection, inside its transaction."""

    def __init__(self, connection: Connection, clock: Clock) -> None:
        self._connection = connection
        self._clock = clock

    async def applied_versions(self) -> list[int]:
        create, applied = QUERIES["migrations_create"], QUERIES["migrations_applied"]

        def op(connection: sqlite3.Connection) -> list[int]:
            connection.execute(create)
            return [int(row[0]) for row in connection.execute(applied).fetchall()]

        return await self._connection.run(op)

    async def apply(self, migration: Migration) -> None:
        statements = split_statements(migration.sql)
        record = QUERIES["migrations_record"]
        params = (migration.version, migration.name, to_micros(self._clock()))

        def op(connection: sqlite3.Connection) -> None:
            for statement in statements:
                connection.execute(statement)
            connection.execute(record, params)

        await self._connection.run(op)


def split_statements(script: str) -> list[str]:
    """The statements of a SQL script, each complete (``executescript`` would commit
    the migration's transaction, so statements run one by one)."""
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(
        line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")
    )
    if rest:
        raise ValueError(f"incomplete SQL statement at the end of a migration: {rest[:80]!r}")
    return statements
