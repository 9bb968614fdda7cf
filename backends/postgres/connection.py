"""The asyncpg boundary: connecting, and translating driver errors into
``backends.errors`` (the only place that knows asyncpg's exception classes).

Also the small naming rules the rest of the package shares: how a DSN is shown in a
message (host, port and database, never the password), the notification channel of a
queue, and the 32/64-bit keys of advisory locks.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg  # type: ignore[import-untyped]

from backends.errors import BackendError, Conflict, Transient

#: a schema name the backend accepts (it is spliced into DDL and channel names)
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

#: SQLSTATE classes that mean "try again": connection exceptions (08), insufficient
#: resources (53: too many connections, disk full), operator intervention (57: admin
#: shutdown, cannot connect now, statement timeout), transaction rollback (40:
#: serialization failure, deadlock), lock not available (55P03)
_TRANSIENT_CLASSES = ("08", "53", "57", "40")
_TRANSIENT_STATES = ("55P03",)


def describe(dsn: str) -> str:
    """``host:port/database`` of a DSN, for messages (no user, no password)."""
    try:
        parts = urlsplit(dsn)
        query = parse_qs(parts.query)
        host = unquote(parts.hostname or "") or query.get("host", ["localhost"])[0]
        port = parts.port or int(query.get("port", ["5432"])[0])
        database = unquote(parts.path.lstrip("/")) or query.get("dbname", [""])[0]
    except ValueError:
        return "the PostgreSQL server of the configured DSN"
    return f"{host}:{port}/{database}" if database else f"{host}:{port}"


@contextmanager
def translated(where: str) -> Iterator[None]:
    """Raise driver errors as Transient / Conflict / BackendError naming ``where``."""
    try:
        yield
    except asyncpg.PostgresError as exc:
        state = str(getattr(exc, "sqlstate", "") or "")
        if isinstance(exc, asyncpg.IntegrityConstraintViolationError):
            raise Conflict(f"PostgreSQL {where}: {exc}") from exc
        if (
            isinstance(exc, asyncpg.PostgresConnectionError)
            or state[:2] in _TRANSIENT_CLASSES
            or state in _TRANSIENT_STATES
        ):
            raise Transient(f"PostgreSQL {where}: {type(exc).__name__}: {exc}") from exc
        raise BackendError(f"PostgreSQL {where}: {exc}") from exc
    except (OSError, TimeoutError) as exc:
        # refused, reset, unreachable, timed out: the server is away for now
        raise Transient(
            f"PostgreSQL {where} is unreachable: {_reason(exc)}; check that the server is"
            " running and accepts connections there (callers retry)"
        ) from exc
    except asyncpg.InterfaceError as exc:
        text = str(exc)
        if "pool is clos" in text:
            raise BackendError(f"PostgreSQL {where}: the backend is stopped") from exc
        if "closed" in text or "connection" in text.lower():
            raise Transient(f"PostgreSQL {where}: {text}") from exc
        raise BackendError(f"PostgreSQL {where}: {text}") from exc
    except asyncpg.InternalClientError as exc:
        # e.g. "another operation is in progress": the server's FATAL error about a
        # connection it is closing arrived, the close itself not yet
        raise Transient(f"PostgreSQL {where}: the connection is unusable ({exc})") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, socket.gaierror):
        return f"cannot resolve the host ({exc.strerror})"
    return getattr(exc, "strerror", None) or str(exc) or type(exc).__name__


def connect_kwargs(
    schema: str,
    *,
    connect_timeout: float,
    statement_cache_size: int = 512,
    application_name: str = "runtime",
) -> dict[str, Any]:
    """What every connection of the backend is opened with."""
    return {
        "timeout": connect_timeout,
        "statement_cache_size": statement_cache_size,
        "server_settings": {
            "search_path": schema,
            "application_name": application_name,
            # JIT compiles plans costing more than its threshold; our statements are
            # short, and a compile would cost more than it saves
            "jit": "off",
            # Our statements are small and their best plan hardly depends on the
            # values bound: plan each once per connection. Left to "auto", PostgreSQL
            # re-plans those with array parameters (ack, the claim's recheck) on every
            # execution, which costs more than running them (~100 us each).
            "plan_cache_mode": "force_generic_plan",
            # a process frozen inside a transaction (stopped, swapped out, a blocked
            # loop) must not hold its row and advisory locks forever: the server ends
            # the session, the locks go, the process gets Transient when it wakes
            "idle_in_transaction_session_timeout": "60s",
        },
    }


async def connect(
    dsn: str, schema: str, *, connect_timeout: float, application_name: str = "runtime"
) -> Any:
    """One dedicated connection (the listener's, the leader lock's, migrations')."""
    options = connect_kwargs(
        schema,
        connect_timeout=connect_timeout,
        statement_cache_size=32,
        application_name=application_name,
    )
    with translated(f"at {describe(dsn)}"):
        return await asyncpg.connect(dsn, **options)


async def close_quietly(connection: Any) -> None:
    """Close a dedicated connection; one that is broken is dropped without waiting."""
    if connection is None or connection.is_closed():
        return
    try:
        await asyncio.wait_for(asyncio.shield(connection.close()), timeout=2.0)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
        connection.terminate()
    except asyncio.CancelledError:
        connection.terminate()
        raise


# -- names and keys --------------------------------------------------------------------
def channel(schema: str, queue_table: str) -> str:
    """The NOTIFY channel of a queue: ``runtime_<queue>`` (``queue_table`` without its
    ``queue_`` prefix) in the public schema, with the schema's name in it elsewhere
    (channels are per database, not per schema)."""
    queue = queue_table.removeprefix("queue_")
    name = f"runtime_{queue}" if schema == "public" else f"runtime_{schema}_{queue}"
    if len(name) > 63:  # identifiers are at most 63 bytes
        name = f"{name[:54]}_{_digest(name)[:8]}"
    return name


def lock_key64(*parts: str) -> int:
    """A signed 64-bit advisory lock key for ``parts`` (stable across processes)."""
    return int.from_bytes(bytes.fromhex(_digest("\x1f".join(parts))[:16]), "big", signed=True)


def lock_key32(*parts: str) -> int:
    """A signed 32-bit key, for the first half of two-key advisory locks."""
    return int.from_bytes(bytes.fromhex(_digest("\x1f".join(parts))[:8]), "big", signed=True)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()
