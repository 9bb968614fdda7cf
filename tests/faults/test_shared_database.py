"""Two processes on one SQLite file: a running server and a client that queues
executions (`runtime run --all` in one shell, `runtime execute` in another).

Each process is modelled by its own SqliteBackend on the same file: their
connections, locks and in-process wake-ups are separate, as in two processes.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from backends.sqlite import SqliteBackend
from backends.storage_local import LocalStorage
from runtime.config import Config
from runtime.flow.execution import new_execution
from runtime.flow.ids import new_id
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE
from services.executor import submit
from services.flows import deploy_source
from services.standalone import Server

pytestmark = pytest.mark.slow

FLOW = """
id: quick
namespace: faults
tasks:
  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: hi
"""


async def queue_from_other_process(db: Path) -> str:
    """What `runtime execute` does: deploy (here) and queue one execution."""
    async with SqliteBackend(db, synchronous="NORMAL") as client:
        record = await deploy_source(client.flows, FLOW)
        execution = new_execution(
            id=new_id(),
            namespace="faults",
            flow_id="quick",
            flow_revision=record.revision,
            at=client.clock(),
        )
        await submit(client, execution)
        return execution.id


async def state_of(db: Path, execution_id: str) -> StateType:
    async with SqliteBackend(db, synchronous="NORMAL") as reader:
        execution = await reader.executions.get(execution_id)
        assert execution is not None
        return execution.state.current


async def succeeded(db: Path, execution_id: str, within: float) -> bool:
    """Whether the execution ends SUCCESS within ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await state_of(db, execution_id) is StateType.SUCCESS:
            return True
        await asyncio.sleep(0.05)
    return False


@pytest.mark.asyncio
async def test_server_runs_executions_queued_by_another_process_on_an_existing_database(
    tmp_path: Path,
) -> None:
    """The control case: the queue tables exist before the server starts."""
    db = tmp_path / "runtime.db"
    execution_id = await queue_from_other_process(db)
    backend = SqliteBackend(db, synchronous="NORMAL")
    server = Server(Config(), backend=backend, storage=LocalStorage(tmp_path / "storage"))
    async with asyncio.timeout(10), server:
        second = await queue_from_other_process(db)
        assert await succeeded(db, execution_id, within=5)
        assert await succeeded(db, second, within=5)


@pytest.mark.asyncio
async def test_server_runs_executions_queued_by_another_process_on_a_fresh_database(
    tmp_path: Path,
) -> None:
    """The queue tables are made on first use; here the client makes the executor's,
    after the server started (a server once never saw a table made after its start)."""
    db = tmp_path / "runtime.db"
    backend = SqliteBackend(db, synchronous="NORMAL")
    server = Server(Config(), backend=backend, storage=LocalStorage(tmp_path / "storage"))
    async with server:
        execution_id = await queue_from_other_process(db)
        # The queued event is plainly there for any backend started now...
        async with SqliteBackend(db, synchronous="NORMAL") as fresh:
            assert await fresh.queues.depth(EXECUTOR_QUEUE) == 1
        # ...but the server's executor claims from a table it does not know of.
        ran = await succeeded(db, execution_id, within=3)
        assert ran, f"still {(await state_of(db, execution_id)).value} after 3 s"
