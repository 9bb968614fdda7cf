"""The backend conformance suite on PostgreSQL: each test in a fresh schema.

The server comes from ``RUNTIME_TEST_POSTGRES_DSN`` (default: the local one CI starts
with ``.ci/services``). An unreachable server fails the tests, it does not skip them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio

from backends.postgres import PostgresBackend
from backends.postgres.testing import fresh_schema, server_dsn
from backends.protocols import Backend, Clock
from backends.testing import BackendConformance


class TestPostgres(BackendConformance):
    @pytest_asyncio.fixture(autouse=True)
    async def _schema(self) -> AsyncIterator[None]:
        async with fresh_schema() as schema:
            self.schema = schema
            yield

    async def make_backend(self, clock: Clock, tmp_path: Path) -> Backend:
        return PostgresBackend(server_dsn(), clock=clock, schema=self.schema, pool_max=8)
