"""Round trips on PostgreSQL, counted on the wire: an executor batch is 4 statements
(BEGIN, claim, the writes, COMMIT) whatever its size, each the same text whatever the
size (so each is one prepared statement), and a task's way through a worker is 2 (the
claim, the report). Other processes are woken after the commit
(``backends.postgres.notifier``): in the COMMIT's round trip, or, for a statement
that commits on its own (the report), in the statement when it is alone under way.
Against the real server of ``RUNTIME_TEST_POSTGRES_DSN``, in a fresh schema."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
import pytest_asyncio

from backends.postgres import PostgresBackend
from backends.postgres.notifier import NOTIFY
from backends.postgres.testing import fresh_schema, server_dsn
from runtime.flow.events import WorkerResult
from runtime.flow.execution import new_execution
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, decode_job, encode_event
from services.executor import Executor
from services.flows import FlowCache, deploy_source
from services.submit import submit

FLOW = """
id: two_steps
namespace: trips
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: one
  - id: second
    type: io.kestra.plugin.core.debug.Return
    format: two
"""


#: asyncpg's type introspection (and its switching JIT off around it), sent before a
#: connection's first use of a type
_INTROSPECTION = ("typeinfo_tree", "current_setting('jit')")


class Wire:
    """Every statement the backend's pool sends, via asyncpg's query loggers."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        #: the same, whole
        self.texts: list[str] = []
        self.on = False

        #: the notifications sent after commits
        self.notifications = 0

    def log(self, record: Any) -> None:
        if not self.on:
            return
        if record.query == NOTIFY:
            self.notifications += 1
            return
        if any(part in record.query for part in _INTROSPECTION):
            return  # asyncpg's, once per connection and array type, not per batch
        self.statements.append(" ".join(str(record.query).split())[:80])
        self.texts.append(str(record.query))


async def notified(backend: PostgresBackend) -> None:
    """Until the notifications of what committed are sent."""
    assert backend._core is not None
    assert backend._core.notifier is not None
    await backend._core.notifier.flushed()


@pytest_asyncio.fixture
async def counted(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[tuple[PostgresBackend, Wire]]:
    wire = Wire()
    original = asyncpg.create_pool

    def create_pool(*args: Any, **kwargs: Any) -> Any:
        async def init(connection: asyncpg.Connection) -> None:
            connection.add_query_logger(wire.log)

        return original(*args, init=init, **kwargs)

    monkeypatch.setattr(asyncpg, "create_pool", create_pool)
    async with fresh_schema() as schema:
        backend = PostgresBackend(server_dsn(), schema=schema, pool_max=4)
        await backend.start()
        try:
            yield backend, wire
        finally:
            await backend.stop()


@pytest.mark.asyncio
async def test_an_executor_batch_is_four_statements_whatever_its_size(
    counted: tuple[PostgresBackend, Wire],
) -> None:
    backend, wire = counted
    record = await deploy_source(backend.flows, FLOW)
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-trips")
    texts: dict[int, list[str]] = {}

    async def start(names: list[str]) -> None:
        for name in names:
            execution = new_execution(
                id=name,
                namespace="trips",
                flow_id="two_steps",
                flow_revision=record.revision,
                at=backend.clock(),
            )
            await submit(backend, execution)

    # the first batch also reads the flow and creates the worker queue's table
    await start(["warm"])
    assert await executor.step() == 1
    for size in (1, 5):
        await start([f"e{size}-{n}" for n in range(size)])
        await notified(backend)
        wire.on = True
        assert await executor.step() == size
        await notified(backend)
        wire.on = False
        assert len(wire.statements) == 4, wire.statements
        # the worker queue's consumers are notified after the commit, in its round trip
        assert wire.statements[-1].startswith("COMMIT; SELECT"), wire.statements
        assert "pg_notify" in wire.texts[-1]
        assert wire.notifications == 0
        texts[size], wire.texts, wire.statements = wire.texts, [], []
        wire.notifications = 0
    # one execution or five: the same four statement texts (the writes carry arrays)
    assert texts[1] == texts[5]
    assert await backend.queues.depth(WORKER_QUEUE) == 7
    assert await backend.queues.depth(EXECUTOR_QUEUE) == 0
    saved = await backend.executions.get("e5-4")
    assert saved is not None  # the five were saved, not only the first
    assert saved.task_run_list


ONE_STEP = """
id: one_step
namespace: trips
tasks:
  - id: only
    type: io.kestra.plugin.core.debug.Return
    format: one
"""


@pytest.mark.asyncio
async def test_a_batch_in_which_an_execution_ends_reads_the_flows_without_sending_its_writes(
    counted: tuple[PostgresBackend, Wire],
) -> None:
    """An execution ending lists the flows (Flow triggers) inside the batch; its writes
    never touch flows, so the saves held back so far wait for the commit: 5 statements
    (BEGIN, claim, the flows, the writes, COMMIT), not 6."""
    backend, wire = counted
    revisions = {
        flow: (await deploy_source(backend.flows, source)).revision
        for flow, source in (("two_steps", FLOW), ("one_step", ONE_STEP))
    }
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-trips")
    for name, flow in (("goes-on", "two_steps"), ("ends", "one_step")):
        execution = new_execution(
            id=name,
            namespace="trips",
            flow_id=flow,
            flow_revision=revisions[flow],
            at=backend.clock(),
        )
        await submit(backend, execution)
    assert await executor.step() == 2
    jobs = {
        job.execution_id: job
        for job in (
            decode_job(m.payload) for m in await backend.queues.claim(WORKER_QUEUE, "w", 8, 60)
        )
    }
    for name in ("goes-on", "ends"):  # in this order: the one going on is processed first
        job = jobs[name]
        result = WorkerResult(
            at=backend.clock(),
            task_run_id=job.task_run_id,
            attempt=job.attempt,
            state=StateType.SUCCESS,
        )
        await backend.queues.publish(EXECUTOR_QUEUE, [(name, encode_event(result))])
    await notified(backend)
    wire.on = True
    assert await executor.step() == 2
    await notified(backend)
    wire.on = False
    assert len(wire.statements) == 5, wire.statements
    assert "flows" in wire.texts[2]
    ended = await backend.executions.get("ends")
    going = await backend.executions.get("goes-on")
    assert ended is not None
    assert ended.state.current == StateType.SUCCESS
    assert going is not None
    assert len(going.task_run_list) == 2


@pytest.mark.asyncio
async def test_a_task_s_way_through_a_worker_is_two_statements(
    counted: tuple[PostgresBackend, Wire],
) -> None:
    backend, wire = counted
    for queue in (WORKER_QUEUE, EXECUTOR_QUEUE):  # their tables exist, as in a server
        await backend.queues.publish(queue, [(None, b"warm")])
        [warm] = await backend.queues.claim(queue, "warm", 1, 30)
        await backend.queues.ack(queue, [warm.id])
    await backend.queues.publish(WORKER_QUEUE, [(None, b"job")])
    inbox = backend.inbox(WORKER_QUEUE, "worker-trips", lease_seconds=3600)
    await notified(backend)
    wire.on = True
    [job] = await inbox.receive(8)
    result = WorkerResult(at=backend.clock(), task_run_id="tr", attempt=1, state=StateType.SUCCESS)
    async with inbox.settle([job]) as tx:
        await tx.queues.publish(EXECUTOR_QUEUE, [("e1", encode_event(result))])
    await notified(backend)
    wire.on = False
    assert len(wire.statements) == 2, wire.statements
    # the report, alone under way in its process, notifies the executor in itself
    assert "pg_notify" in wire.texts[-1]
    assert wire.notifications == 0
    assert await backend.queues.depth(WORKER_QUEUE) == 0
    assert await backend.queues.depth(EXECUTOR_QUEUE) == 1
