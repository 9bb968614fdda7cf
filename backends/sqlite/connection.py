"""One aiosqlite connection: sqlite3 runs on the connection's own thread, never on the
event loop, and driver errors come out as ``backends.errors`` at this one boundary.

The unit of work is an *op*, a plain function of the ``sqlite3.Connection`` that runs
on that thread. Handing over several statements as one op costs one thread hop
instead of one per statement, and the hop (not SQLite) is what a small transaction
mostly pays for.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeVar

import aiosqlite

from backends.errors import BackendError, Conflict, Transient

T = TypeVar("T")
Op = Callable[[sqlite3.Connection], T]
Synchronous = Literal["FULL", "NORMAL", "OFF"]
Row = tuple[Any, ...]

#: OperationalError messages that mean "try again": another connection holds a lock,
#: or the disk hiccuped
_TRANSIENT = ("locked", "busy", "disk i/o error")

if not callable(getattr(aiosqlite.Connection, "_execute", None)):  # pragma: no cover
    raise ImportError(
        "this aiosqlite has no Connection._execute (used to run several statements in"
        " one hop to its thread); install aiosqlite>=0.20,<1"
    )


@contextmanager
def translated(database: str) -> Iterator[None]:
    """Raise driver errors as Transient / Conflict / BackendError."""
    try:
        yield
    except sqlite3.IntegrityError as exc:
        raise Conflict(f"{database}: {exc}") from exc
    except sqlite3.OperationalError as exc:
        text = str(exc)
        if any(marker in text.lower() for marker in _TRANSIENT):
            raise Transient(f"{database}: {text}") from exc
        raise BackendError(f"{database}: {text}") from exc
    except sqlite3.Error as exc:
        raise BackendError(f"{database}: {exc}") from exc
    except ValueError as exc:
        # aiosqlite's way of saying the connection is closed
        if "connection" in str(exc).lower():
            raise BackendError(f"{database}: the backend is stopped") from exc
        raise


def fetch(sql: str, params: Any = ()) -> Op[list[Row]]:
    """An op reading every row of one statement."""

    def op(connection: sqlite3.Connection) -> list[Row]:
        return connection.execute(sql, params).fetchall()

    return op


def execute(sql: str, params: Any = ()) -> Op[int]:
    """An op running one statement, returning the rows it changed."""

    def op(connection: sqlite3.Connection) -> int:
        return connection.execute(sql, params).rowcount

    return op


def in_transaction(op: Op[T]) -> Op[T]:
    """``op`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back if it raises."""

    def run(connection: sqlite3.Connection) -> T:
        connection.execute("BEGIN IMMEDIATE")
        try:
            result = op(connection)
            connection.execute("COMMIT")
        except BaseException:
            if connection.in_transaction:
                connection.execute("ROLLBACK")
            raise
        return result

    return run


class Connection:
    """A tiny connector: run an op on the connection's thread, close."""

    def __init__(self, raw: aiosqlite.Connection, database: str) -> None:
        self._raw = raw
        self.database = database

    @classmethod
    async def open(
        cls,
        path: str | Path,
        *,
        synchronous: Synchronous,
        busy_timeout: float,
        query_only: bool = False,
    ) -> Connection:
        """Connect and set the pragmas; WAL is set by the writer (it persists in the file)."""
        database = str(path)
        with translated(database):
            # isolation_level=None: no implicit BEGIN; the backend says BEGIN IMMEDIATE.
            raw = await aiosqlite.connect(database, isolation_level=None, cached_statements=256)
        connection = cls(raw, database)
        wal = not query_only and database != ":memory:"

        def setup(c: sqlite3.Connection) -> str | None:
            # busy_timeout first: switching to WAL may wait for another connection
            c.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            mode = str(c.execute("PRAGMA journal_mode = WAL").fetchone()[0]) if wal else None
            c.execute(f"PRAGMA synchronous = {synchronous}")
            c.execute("PRAGMA foreign_keys = ON")
            if query_only:
                c.execute("PRAGMA query_only = ON")
            return mode

        try:
            mode = await connection.run(setup)
            if wal and (mode or "").lower() != "wal":
                raise BackendError(f"{database}: cannot switch to WAL mode (got {mode})")
        except BaseException:
            await connection.close()
            raise
        return connection

    async def run(self, op: Op[T]) -> T:
        """Run ``op`` on the connection's thread: one hop, however many statements."""
        raw = self._raw
        with translated(self.database):
            result: T = await raw._execute(lambda: op(raw._conn))  # type: ignore[no-untyped-call]
            return result

    async def close(self) -> None:
        with translated(self.database):
            await self._raw.close()
