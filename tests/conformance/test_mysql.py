"""The backend conformance suite on MySQL / MariaDB: each test in a fresh database.

The server comes from ``RUNTIME_TEST_MYSQL_DSN`` (default: the local MariaDB CI starts
with ``.ci/services``). An unreachable server fails the tests, it does not skip them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from backends.mysql import MysqlBackend
from backends.mysql.testing import fresh_database
from backends.protocols import Backend, Clock
from backends.testing import BackendConformance


class TestMysql(BackendConformance):
    @pytest_asyncio.fixture(autouse=True)
    async def _database(self) -> AsyncIterator[None]:
        async with fresh_database() as dsn:
            self.dsn = dsn
            yield

    async def make_backend(self, clock: Clock, tmp_path: Path) -> Backend:
        return MysqlBackend(self.dsn, clock=clock, pool_max=8)
