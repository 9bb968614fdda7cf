"""Versioned schema migrations: ``NNNN_name.sql`` files applied in order, once.

The runner is dialect-independent; a dialect provides a :class:`MigrationTarget`
(how to read the ``schema_migrations`` table, how to run one script and record it)
and decides the transaction around :func:`migrate`. A database that records a
version this code does not ship was written by a newer release: :func:`migrate`
refuses it with :class:`SchemaTooNew` instead of running on a schema it cannot know.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from typing import Protocol

import msgspec

from backends.errors import BackendError

_FILE = re.compile(r"(\d{4})_([a-z0-9_]+)\.sql")


class Migration(msgspec.Struct, frozen=True):
    """One schema step."""

    version: int
    name: str
    sql: str


class SchemaTooNew(BackendError):
    """The database has migrations this release does not know (it is from a newer one)."""


class MigrationTarget(Protocol):
    """What the runner needs from a dialect, bound to one connection/transaction."""

    async def applied_versions(self) -> list[int]:
        """Versions recorded so far (creating the bookkeeping table if missing)."""
        ...

    async def apply(self, migration: Migration) -> None:
        """Run the migration's script and record its version."""
        ...


def load_migrations(package: str) -> list[Migration]:
    """The ``NNNN_name.sql`` files of ``package``, checked to number 1, 2, 3, ..."""
    found: list[Migration] = []
    for entry in resources.files(package).iterdir():
        match = _FILE.fullmatch(entry.name)
        if match is None:
            continue
        sql = entry.read_text(encoding="utf-8")
        found.append(Migration(int(match.group(1)), match.group(2), sql))
    found.sort(key=lambda migration: migration.version)
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise ValueError(
                f"{package}: migration {migration.version:04d}_{migration.name}.sql found where"
                f" {expected:04d} was expected; versions must run 0001, 0002, ... without gaps"
            )
    return found


def pending(
    available: Sequence[Migration], applied: Sequence[int], *, database: str
) -> list[Migration]:
    """The migrations still to apply, in order; SchemaTooNew for unknown versions."""
    known = {migration.version for migration in available}
    unknown = sorted(set(applied) - known)
    if unknown:
        newest = max(known, default=0)
        raise SchemaTooNew(
            f"the database {database} has schema version {unknown[-1]}, newer than this"
            f" release knows (up to {newest}); run the release that wrote it, or point"
            " the backend at another database"
        )
    done = set(applied)
    return [migration for migration in available if migration.version not in done]


async def migrate(
    target: MigrationTarget, available: Sequence[Migration], *, database: str
) -> list[int]:
    """Apply what is pending, in order; returns the versions applied now."""
    todo = pending(available, await target.applied_versions(), database=database)
    for migration in todo:
        await target.apply(migration)
    return [migration.version for migration in todo]
