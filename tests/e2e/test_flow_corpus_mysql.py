"""The same end-to-end corpus, on MySQL / MariaDB instead of the memory backend.

`runtime flow test` normally runs on the memory backend; here every flow runs on a
real MySQL-compatible server (``RUNTIME_TEST_MYSQL_DSN``, default the local MariaDB
that CI starts), each in a fresh database dropped afterwards.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

from backends.mysql import MysqlBackend
from backends.mysql.testing import fresh_database
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


@pytest.fixture
def on_mysql(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    database: AbstractAsyncContextManager[str] = fresh_database("runtime_e2e")
    runner = asyncio.Runner()
    try:
        dsn = runner.run(database.__aenter__())
        monkeypatch.setattr(flow_test, "BACKEND_FACTORY", lambda: MysqlBackend(dsn))
        try:
            yield dsn
        finally:
            runner.run(database.__aexit__(None, None, None))
    finally:
        runner.close()


@pytest.mark.parametrize("stem", list(_params()))
def test_flow_on_mysql(
    stem: str, request: pytest.FixtureRequest, tmp_path: Path, on_mysql: str
) -> None:
    case = CASES[stem]
    run = run_in_process(
        FLOWS / f"{stem}.yml",
        _inputs(case, request, tmp_path),
        SUBFLOWS if case.subflows else None,
    )
    assert_case(run, case)
    # ran on MySQL, not on the memory backend `flow test` falls back to
    assert stored(on_mysql, run.execution["id"]), "the execution is not in MySQL"


def stored(dsn: str, execution_id: str) -> bool:
    async def stored() -> bool:
        async with MysqlBackend(dsn) as backend:
            return await backend.executions.get(execution_id) is not None

    return asyncio.run(stored())
