"""Helpers for tests against a real PostgreSQL server: which one, and a fresh schema
per test (created empty, dropped with everything in it afterwards).

The server is named by ``RUNTIME_TEST_POSTGRES_DSN``; CI starts the default one
(``.ci/services``). An unreachable server is an error, not a reason to skip.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from backends.errors import Transient
from backends.postgres.connection import close_quietly, connect, describe

DSN_VARIABLE = "RUNTIME_TEST_POSTGRES_DSN"
DEFAULT_DSN = "postgresql://postgres@127.0.0.1:5432/test"


def server_dsn() -> str:
    """The DSN of the tests' server."""
    return os.environ.get(DSN_VARIABLE) or DEFAULT_DSN


class ServerUnavailable(RuntimeError):
    """The tests' PostgreSQL server cannot be reached."""


async def admin_connection(dsn: str | None = None) -> Any:
    """A plain connection to the tests' server (public schema)."""
    dsn = dsn or server_dsn()
    try:
        return await connect(dsn, "public", connect_timeout=5.0, application_name="runtime-tests")
    except Transient as exc:
        raise ServerUnavailable(
            f"the PostgreSQL server for the tests is unreachable at {describe(dsn)} ({exc});"
            f" start it (bash .ci/services) or point {DSN_VARIABLE} at one"
        ) from exc


@asynccontextmanager
async def fresh_schema(prefix: str = "runtime_test") -> AsyncIterator[str]:
    """Create an empty schema with a random name; drop it (CASCADE) on exit."""
    schema = f"{prefix}_{secrets.token_hex(6)}"
    admin = await admin_connection()
    try:
        await admin.execute(f"CREATE SCHEMA {schema}")
        try:
            yield schema
        finally:
            await admin.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
    finally:
        await close_quietly(admin)
