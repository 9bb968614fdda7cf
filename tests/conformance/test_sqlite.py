"""The backend conformance suite on SQLite: a fresh database file per test."""

from pathlib import Path

from backends.protocols import Backend, Clock
from backends.sqlite import SqliteBackend
from backends.testing import BackendConformance


class TestSqlite(BackendConformance):
    async def make_backend(self, clock: Clock, tmp_path: Path) -> Backend:
        return SqliteBackend(tmp_path / "runtime.db", clock=clock)
