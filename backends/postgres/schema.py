"""Schema migrations on PostgreSQL: the package's ``migrations/NNNN_name.sql`` files,
applied in order, once, in one transaction, under a session-level advisory lock, so
that several processes starting at once apply them exactly once (the others wait for
the lock, then find nothing left to do). A database with a version this release does
not ship is refused with :class:`backends.sql.migrations.SchemaTooNew`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from backends.postgres.connection import (
    SCHEMA_NAME,
    close_quietly,
    connect,
    describe,
    lock_key64,
    translated,
)
from backends.protocols import Clock
from backends.sql.dialect import PostgresDialect
from backends.sql.mapping import to_micros
from backends.sql.migrations import Migration, load_migrations
from backends.sql.migrations import migrate as run_migrations

#: the shared statements in PostgreSQL's style, and PostgreSQL's own
QUERIES = PostgresDialect().queries("backends.postgres")
MIGRATIONS = load_migrations("backends.postgres.migrations")


def check_schema(schema: str) -> str:
    """The schema name, if it is a plain lower-case identifier (it ends up in DDL)."""
    if not SCHEMA_NAME.fullmatch(schema):
        raise ValueError(
            f"schema {schema!r} is not a plain identifier: use lower-case letters, digits"
            " and underscores, starting with a letter or an underscore"
        )
    return schema


def migration_lock_key(schema: str) -> int:
    """The advisory lock key serialising migrations of one schema."""
    return lock_key64("runtime.migrations", schema)


async def migrate(
    dsn: str,
    *,
    schema: str = "public",
    clock: Clock | None = None,
    connect_timeout: float = 10.0,
) -> list[int]:
    """Bring the schema up to date; returns the versions applied now (``[]``: it was).

    Raises Transient when the server is unreachable, SchemaTooNew when the database
    was migrated by a newer release. For ``runtime migrate`` and ``start()``.
    """
    check_schema(schema)
    connection = await connect(dsn, schema, connect_timeout=connect_timeout)
    try:
        return await migrate_on(connection, schema=schema, clock=clock, database=describe(dsn))
    finally:
        await close_quietly(connection)


async def migrate_on(
    connection: Any, *, schema: str, clock: Clock | None = None, database: str
) -> list[int]:
    """:func:`migrate` on an open, dedicated connection."""
    key = migration_lock_key(schema)
    where = f"at {database}: migrating schema {schema!r}"
    with translated(where):
        await connection.fetchval(QUERIES["migrations_lock"], key)
    try:
        with translated(where):
            # only when missing: CREATE SCHEMA IF NOT EXISTS wants the right to create
            if not await connection.fetchval(QUERIES["schema_exists"], schema):
                await connection.execute(QUERIES["schema_create"].replace("{schema}", schema))
            async with connection.transaction():
                target = _MigrationTarget(connection, clock or _utc_now)
                return await run_migrations(target, MIGRATIONS, database=database)
    finally:
        if not connection.is_closed():
            with translated(where):
                await connection.fetchval(QUERIES["migrations_unlock"], key)


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _MigrationTarget:
    """The migration runner's view of the connection, inside its transaction."""

    def __init__(self, connection: Any, clock: Clock) -> None:
        self._connection = connection
        self._clock = clock

    async def applied_versions(self) -> list[int]:
        await self._connection.execute(QUERIES["migrations_create"])
        rows = await self._connection.fetch(QUERIES["migrations_applied"])
        return [int(row[0]) for row in rows]

    async def apply(self, migration: Migration) -> None:
        # No arguments: asyncpg sends the script with the simple query protocol, which
        # runs every statement in it (inside the surrounding transaction).
        await self._connection.execute(migration.sql)
        record = QUERIES["migrations_record"]
        params = (migration.version, migration.name, to_micros(self._clock()))
        await self._connection.execute(record, *params)
