"""The aiomysql boundary: the DSN, connecting, the server check, and translating driver
errors into ``backends.errors`` (the only place that knows PyMySQL's error codes).

Every connection runs with the same session settings:

- ``ANSI_QUOTES``: the statements shared with the other dialects quote ``"key"``;
- ``READ COMMITTED`` (the pool's connections): each statement sees what is committed
  when it starts, as on PostgreSQL; no gap locks, so claims and saves of different
  rows never wait for each other;
- the client flag FOUND_ROWS: an UPDATE reports the rows it matched, not only those it
  changed (renewing a lease with the same deadline still counts as renewed).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import aiomysql  # type: ignore[import-untyped]
import pymysql  # type: ignore[import-untyped]
from pymysql.constants import CLIENT  # type: ignore[import-untyped]

from backends.errors import BackendError, Conflict, Transient

#: the setting a person fixes when the DSN is wrong (named in errors)
SETTING = "backend.dsn (RUNTIME_BACKEND_DSN)"

#: a database name the backend accepts (it is spliced into lock names and DDL)
DATABASE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")

#: server error codes that mean "try again": lock wait timeout, deadlock, too many
#: connections, server shutting down, query interrupted, read-only for now
_TRANSIENT_CODES = frozenset({1205, 1213, 1040, 1053, 1317, 1290, 1927, 4031})
#: client-side codes: cannot connect; server gone away, lost connection
_CANNOT_CONNECT = frozenset({2002, 2003})
_CONNECTION_CODES = frozenset({2006, 2013, 2055})
_ACCESS_DENIED = frozenset({1044, 1045, 1698})
_UNKNOWN_DATABASE = 1049

SESSION_SETUP = (
    "SET SESSION sql_mode = CONCAT_WS(',', @@SESSION.sql_mode, 'ANSI_QUOTES'),"
    " SESSION time_zone = '+00:00'"
)


class QuietCursor(aiomysql.Cursor):  # type: ignore[misc]
    """A cursor that does not ask for SHOW WARNINGS after a statement that had some.

    The stock cursor spends a round trip on it and turns each into a Python warning:
    expected notes (``IF NOT EXISTS`` on a table that exists, ``INSERT IGNORE`` of a
    row that exists) would cost time and noise. STRICT_TRANS_TABLES makes the warnings
    that matter (truncated or invalid data) errors anyway."""

    async def _show_warnings(self, conn: Any) -> None:
        return None


def isolation_variable(version: str) -> str:
    """The session variable naming the isolation level: MariaDB before 11.1 knows only
    ``tx_isolation``, MySQL 8 only ``transaction_isolation``."""
    return "tx_isolation" if "mariadb" in version.lower() else "transaction_isolation"


class Dsn:
    """The parts of ``mysql://user:password@host:port/database``."""

    def __init__(self, dsn: str) -> None:
        try:
            parts = urlsplit(dsn)
            port = parts.port or 3306
        except ValueError as exc:
            raise ValueError(f"{SETTING}: {dsn!r} is not a valid MySQL DSN ({exc})") from None
        if parts.scheme not in ("mysql", "mariadb", "mysql+aiomysql"):
            raise ValueError(
                f"{SETTING}: a MySQL DSN starts with mysql:// (got {parts.scheme or 'none'}://);"
                " e.g. mysql://root@127.0.0.1:3306/runtime"
            )
        database = unquote(parts.path.lstrip("/"))
        if not DATABASE_NAME.fullmatch(database):
            raise ValueError(
                f"{SETTING}: the DSN must name a database made of letters, digits and"
                f" underscores (got {database!r}); e.g. mysql://root@127.0.0.1:3306/runtime"
            )
        query = parse_qs(parts.query)
        self.host = unquote(parts.hostname or "") or "127.0.0.1"
        self.port = port
        self.user = unquote(parts.username or "") or "root"
        self.password = unquote(parts.password or "")
        self.database = database
        self.unix_socket = query.get("unix_socket", [None])[0]

    def describe(self) -> str:
        """``host:port/database``, for messages (no user, no password)."""
        return f"{self.host}:{self.port}/{self.database}"

    def connect_kwargs(
        self, *, connect_timeout: float, isolation: str | None = None
    ) -> dict[str, Any]:
        """What connections are opened with; ``isolation``: the server's isolation
        variable (:func:`isolation_variable`), to run at READ COMMITTED."""
        setup = SESSION_SETUP
        if isolation is not None:
            setup += f", SESSION {isolation} = 'READ-COMMITTED'"
        return {
            "host": self.host,
            "port": self.port,
            "user": self.user,
            "password": self.password,
            "db": self.database,
            "unix_socket": self.unix_socket,
            "connect_timeout": connect_timeout,
            "charset": "utf8mb4",
            "autocommit": True,
            "client_flag": CLIENT.FOUND_ROWS,
            "cursorclass": QuietCursor,
            "init_command": setup,
        }


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Raise driver errors as Transient / Conflict / BackendError naming ``where``."""
    try:
        yield
    except pymysql.err.IntegrityError as exc:
        raise Conflict(f"MySQL {where}: {_text(exc)}") from exc
    except pymysql.err.MySQLError as exc:
        code = _code(exc)
        if code in _ACCESS_DENIED:
            raise BackendError(
                f"MySQL {where}: access denied ({_text(exc)}); check the user and password"
                f" in {SETTING}"
            ) from exc
        if code == _UNKNOWN_DATABASE:
            raise BackendError(
                f"MySQL {where}: the database does not exist ({_text(exc)}); create it"
                f" (CREATE DATABASE) or fix {SETTING}"
            ) from exc
        if code in _CANNOT_CONNECT:
            raise Transient(
                f"MySQL {where} is unreachable: {_text(exc)}; check that the server is"
                f" running and accepts connections there ({SETTING}; callers retry)"
            ) from exc
        if code in _TRANSIENT_CODES or code in _CONNECTION_CODES:
            raise Transient(f"MySQL {where}: {_text(exc)}") from exc
        if isinstance(exc, pymysql.err.InterfaceError):
            # "(0, '')": the connection is closed
            raise Transient(f"MySQL {where}: the connection is closed ({_text(exc)})") from exc
        if isinstance(exc, pymysql.err.OperationalError) and code >= 2000:
            raise Transient(f"MySQL {where}: {_text(exc)}") from exc
        raise BackendError(f"MySQL {where}: {_text(exc)}") from exc
    except (OSError, TimeoutError) as exc:
        raise Transient(
            f"MySQL {where} is unreachable: {_reason(exc)}; check that the server is"
            f" running and accepts connections there ({SETTING}; callers retry)"
        ) from exc
    except RuntimeError as exc:
        if "closing" in str(exc) or "closed" in str(exc):
            raise BackendError(f"MySQL {where}: the backend is stopped") from exc
        raise


def _code(exc: BaseException) -> int:
    args: tuple[Any, ...] = exc.args
    return args[0] if args and isinstance(args[0], int) else 0


def _text(exc: BaseException) -> str:
    args: tuple[Any, ...] = exc.args
    if len(args) >= 2:
        return f"({args[0]}) {args[1]}"
    return str(exc) or type(exc).__name__


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


# -- server version ----------------------------------------------------------------------
_VERSION = re.compile(r"(\d+)\.(\d+)\.(\d+)")


def check_version(version: str, where: str) -> str:
    """``version`` (``SELECT VERSION()``) if the server is MySQL 8+ or MariaDB 10.6+;
    BackendError naming the setting otherwise (SKIP LOCKED, JSON_TABLE, persisted
    AUTO_INCREMENT counters and RELEASE_ALL_LOCKS are needed)."""
    match = _VERSION.search(version)
    numbers: tuple[int, ...] = tuple(int(n) for n in match.groups()) if match else (0, 0, 0)
    mariadb = "mariadb" in version.lower()
    supported = numbers >= (10, 6, 0) if mariadb else numbers >= (8, 0, 1)
    if not supported:
        kind = "MariaDB" if mariadb else "MySQL"
        raise BackendError(
            f"MySQL {where}: the server is {kind} {version}; runtime needs MySQL 8.0 or newer,"
            f" or MariaDB 10.6 or newer; upgrade it or point {SETTING} at another server"
        )
    return version


async def connect(dsn: Dsn, *, connect_timeout: float) -> Any:
    """One dedicated connection (the leader lock's, migrations', tests')."""
    with translated(f"at {dsn.describe()}"):
        return await aiomysql.connect(**dsn.connect_kwargs(connect_timeout=connect_timeout))


async def close_quietly(connection: Any) -> None:
    """Close a dedicated connection; a broken one is dropped without waiting."""
    if connection is None or connection.closed:
        return
    try:
        await asyncio.wait_for(asyncio.shield(connection.ensure_closed()), timeout=2.0)
    except (OSError, TimeoutError, pymysql.err.MySQLError, RuntimeError):
        connection.close()
    except asyncio.CancelledError:
        connection.close()
        raise


_MARKER = re.compile(r"%s|%%")


_SPECIAL = (tuple, bytes)


def expand_lists(sql: str, args: Sequence[Any]) -> tuple[str, Sequence[Any]]:
    """Bind what PyMySQL 2 no longer binds, or aiomysql binds wrongly with it: a tuple
    as a parenthesised list (``id IN %s``; an empty one as ``(NULL)``, which no ``IN``
    matches), bytes as a hexadecimal literal."""
    if not any(isinstance(arg, _SPECIAL) for arg in args):
        return sql, args
    values = iter(args)
    flat: list[Any] = []

    def one(match: re.Match[str]) -> str:
        if match.group() == "%%":
            return "%%"
        value = next(values)
        if isinstance(value, bytes):
            return f"X'{value.hex()}'"
        if not isinstance(value, tuple):
            flat.append(value)
            return "%s"
        flat.extend(value)
        return "(" + ", ".join(["%s"] * len(value)) + ")" if value else "(NULL)"

    return _MARKER.sub(one, sql), flat


async def query(connection: Any, sql: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
    """Rows of one statement on ``connection`` (errors untranslated)."""
    sql, args = expand_lists(sql, args)
    async with connection.cursor() as cursor:
        await cursor.execute(sql, args)
        rows: list[tuple[Any, ...]] = list(await cursor.fetchall())
        return rows


async def run(connection: Any, sql: str, args: Sequence[Any] = ()) -> int:
    """Run one statement; the rows it matched (errors untranslated)."""
    sql, args = expand_lists(sql, args)
    async with connection.cursor() as cursor:
        count: int = await cursor.execute(sql, args)
        return count


def render(connection: Any, sql: str, args: Sequence[Any] = ()) -> str:
    """``sql`` with ``args`` interpolated as the driver would (PyMySQL binds client
    side: this is the text it would send), for :func:`batch`."""
    sql, args = expand_lists(sql, args)
    return str(sql % tuple(connection.escape(arg) for arg in args))


async def batch(
    connection: Any, statements: Sequence[str]
) -> list[tuple[list[tuple[Any, ...]], int]]:
    """Run rendered ``statements`` in ONE round trip (a multi-statement query); the rows
    and the row count of each. The server stops at the first statement that fails, and
    its error is raised here (errors untranslated)."""
    results: list[tuple[list[tuple[Any, ...]], int]] = []
    async with connection.cursor() as cursor:
        await cursor.execute(";\n".join(statements))
        for n in range(len(statements)):
            if n:
                await cursor.nextset()
            results.append((list(await cursor.fetchall()), cursor.rowcount))
        return results


# -- names -------------------------------------------------------------------------------
def lock_name(*parts: str) -> str:
    """A GET_LOCK name for ``parts`` (at most 64 characters; names are server-wide, so
    callers include the database)."""
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=24).hexdigest()
    return f"runtime.{digest}"


def key_lock_prefix(database: str, queue: str) -> str:
    """What precedes a key in the name of its lock (see :func:`key_lock_name`)."""
    return f"queue-key\x1f{database}\x1f{queue}\x1f"


def key_lock_name(database: str, queue: str, key: str) -> str:
    """The GET_LOCK name of a queue key: ``runtime.`` and 48 hex digits of SHA-256 of
    prefix + key, which the server computes the same way (``queue_lease_locked``)."""
    digest = hashlib.sha256((key_lock_prefix(database, queue) + key).encode()).hexdigest()
    return f"runtime.{digest[:48]}"


def rows_placeholder(columns: int, rows: int) -> str:
    """``(%s, ...), (%s, ...)`` for a multi-row VALUES of ``rows`` rows."""
    one = "(" + ", ".join(["%s"] * columns) + ")"
    return ", ".join([one] * rows)
