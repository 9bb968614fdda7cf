"""The SQLite backend (embedded default, one process): ``SqliteBackend``."""

from backends.sqlite.backend import SqliteBackend

__all__ = ["SqliteBackend"]
