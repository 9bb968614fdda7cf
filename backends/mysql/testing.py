"""Helpers for tests against a real MySQL / MariaDB server: which one, and a fresh
database per test (created empty, dropped with everything in it afterwards).

The server is named by ``RUNTIME_TEST_MYSQL_DSN`` (its database part is ignored: each
test gets its own); CI starts the default one (``.ci/services``). An unreachable
server is an error, not a reason to skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from backends.errors import Transient
from backends.mysql.connection import Dsn, close_quietly, connect, run

DSN_VARIABLE = "RUNTIME_TEST_MYSQL_DSN"
DEFAULT_DSN = "mysql://root@127.0.0.1:3306/test"


def server_dsn() -> str:
    """The DSN of the tests' server."""
    return os.environ.get(DSN_VARIABLE) or DEFAULT_DSN


def database_dsn(database: str, dsn: str | None = None) -> str:
    """The tests' server DSN with ``database`` as its database."""
    parts = urlsplit(dsn or server_dsn())
    return urlunsplit(parts._replace(path=f"/{database}"))


class ServerUnavailable(RuntimeError):
    """The tests' MySQL server cannot be reached."""


async def admin_connection(dsn: str | None = None) -> Any:
    """A plain connection to the tests' server."""
    parsed = Dsn(dsn or server_dsn())
    try:
        return await connect(parsed, connect_timeout=5.0)
    except Transient as exc:
        raise ServerUnavailable(
            f"the MySQL server for the tests is unreachable at {parsed.describe()} ({exc});"
            f" start it (bash .ci/services) or point {DSN_VARIABLE} at one"
        ) from exc


@asynccontextmanager
async def fresh_database(prefix: str = "runtime_test") -> AsyncIterator[str]:
    """Create an empty database with a random name; yield its DSN; drop it on exit."""
    database = f"{prefix}_{secrets.token_hex(6)}"
    await _admin(f"CREATE DATABASE {database}")
    try:
        yield database_dsn(database)
    finally:
        # over a new connection: the server may have been restarted in between
        await _admin(f"DROP DATABASE IF EXISTS {database}")


async def _admin(sql: str) -> None:
    admin = await admin_connection()
    try:
        await run(admin, sql)
    finally:
        await close_quietly(admin)
