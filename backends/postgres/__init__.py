"""The PostgreSQL backend (asyncpg; the medium deployment): ``PostgresBackend``, and
``migrate`` for the ``runtime migrate`` command."""

from backends.postgres.backend import PostgresBackend
from backends.postgres.schema import migrate

__all__ = ["PostgresBackend", "migrate"]
