"""Schema migrations on MySQL / MariaDB: the package's ``migrations/NNNN_name.sql``
files, applied in order, once, under a server-wide named lock (``GET_LOCK``), so that
several processes starting at once apply them exactly once.

MySQL commits DDL by itself: a migration cannot roll back. Each one is written to run
again after a crash half-way (``IF NOT EXISTS``), and is recorded only once all its
statements ran.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from backends.errors import BackendError
from backends.mysql.connection import (
    Dsn,
    check_version,
    close_quietly,
    connect,
    lock_name,
    query,
    run,
    translated,
)
from backends.protocols import Clock
from backends.sql.dialect import MysqlDialect
from backends.sql.mapping import to_micros
from backends.sql.migrations import Migration, load_migrations
from backends.sql.migrations import migrate as run_migrations

#: the shared statements in MySQL's style, and MySQL's own
QUERIES = MysqlDialect().queries("backends.mysql")
MIGRATIONS = load_migrations("backends.mysql.migrations")
#: seconds a starting process waits for another one's migrations
_LOCK_WAIT = 60


async def migrate(
    dsn: str, *, clock: Clock | None = None, connect_timeout: float = 10.0
) -> list[int]:
    """Bring the database up to date; returns the versions applied now (``[]``: it was).

    Raises Transient when the server is unreachable, BackendError for wrong credentials
    or an unsupported server, SchemaTooNew when the database was migrated by a newer
    release. For ``runtime migrate`` and ``start()``."""
    parsed = Dsn(dsn)
    connection = await connect(parsed, connect_timeout=connect_timeout)
    try:
        return await migrate_on(connection, parsed, clock=clock)
    finally:
        await close_quietly(connection)


async def server_version(connection: Any, dsn: Dsn) -> str:
    """The server's version, if it is one the backend supports (else BackendError)."""
    where = f"at {dsn.describe()}"
    with translated(where):
        return check_version(str((await query(connection, QUERIES["server_version"]))[0][0]), where)


async def migrate_on(connection: Any, dsn: Dsn, *, clock: Clock | None = None) -> list[int]:
    """:func:`migrate` on an open, dedicated connection."""
    where = f"at {dsn.describe()}"
    await server_version(connection, dsn)
    name = lock_name("migrations", dsn.database)
    with translated(f"{where}: migrating"):
        got = await query(connection, QUERIES["migrations_lock"], (name, _LOCK_WAIT))
        if got[0][0] != 1:
            raise BackendError(
                f"MySQL {where}: another process held the migration lock for {_LOCK_WAIT} s;"
                " is a migration stuck? (see SHOW PROCESSLIST)"
            )
        try:
            target = _MigrationTarget(connection, clock or _utc_now)
            return await run_migrations(target, MIGRATIONS, database=dsn.describe())
        finally:
            if not connection.closed:
                await query(connection, QUERIES["migrations_unlock"], (name,))


def _utc_now() -> datetime:
    return datetime.now(UTC)


class _MigrationTarget:
    """The migration runner's view of the connection."""

    def __init__(self, connection: Any, clock: Clock) -> None:
        self._connection = connection
        self._clock = clock

    async def applied_versions(self) -> list[int]:
        await run(self._connection, QUERIES["migrations_create"])
        rows = await query(self._connection, QUERIES["migrations_applied"])
        return [int(row[0]) for row in rows]

    async def apply(self, migration: Migration) -> None:
        # The whole script in one call (the connection allows several statements);
        # each statement's result must be read before the next one's error shows.
        async with self._connection.cursor() as cursor:
            await cursor.execute(migration.sql)
            while await cursor.nextset():
                pass
        params = (migration.version, migration.name, to_micros(self._clock()))
        await run(self._connection, QUERIES["migrations_record"], params)
