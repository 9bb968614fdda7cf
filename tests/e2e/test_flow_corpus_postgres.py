"""The same end-to-end corpus, on PostgreSQL instead of the memory backend.

`runtime flow test` normally runs on the memory backend; here every flow runs on a
real PostgreSQL server (``RUNTIME_TEST_POSTGRES_DSN``, default the local test
database that CI starts), each in a fresh schema dropped afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from backends.postgres import PostgresBackend
from backends.postgres.testing import admin_connection, server_dsn
from services import flow_test
from tests.e2e.helpers import run_in_process
from tests.e2e.test_flow_corpus import (
    CASES,
    FLOWS,
    SUBFLOWS,
    _inputs,
    _params,
    assert_case,
    http_base_url,  # noqa: F401 - a fixture the inputs use
)


async def _admin(sql: str) -> None:
    connection = await admin_connection()
    try:
        await connection.execute(sql)  # type: ignore[attr-defined]
    finally:
        await connection.close()  # type: ignore[attr-defined]


@pytest.fixture
def on_postgres(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    schema = f"runtime_e2e_{secrets.token_hex(6)}"
    asyncio.run(_admin(f"CREATE SCHEMA {schema}"))
    monkeypatch.setattr(
        flow_test, "BACKEND_FACTORY", lambda: PostgresBackend(server_dsn(), schema=schema)
    )
    try:
        yield schema
    finally:
        asyncio.run(_admin(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


@pytest.mark.parametrize("stem", list(_params()))
def test_flow_on_postgres(
    stem: str, request: pytest.FixtureRequest, tmp_path: Path, on_postgres: str
) -> None:
    case = CASES[stem]
    run = run_in_process(
        FLOWS / f"{stem}.yml",
        _inputs(case, request, tmp_path),
        SUBFLOWS if case.subflows else None,
    )
    assert_case(run, case)
    # ran on PostgreSQL, not on the memory backend `flow test` falls back to
    assert stored(on_postgres, run.execution["id"]), "the execution is not in PostgreSQL"


def stored(schema: str, execution_id: str) -> bool:
    async def get() -> bool:
        async with PostgresBackend(server_dsn(), schema=schema) as backend:
            return await backend.executions.get(execution_id) is not None

    return asyncio.run(get())
