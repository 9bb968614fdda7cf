"""No poison execution (issue 13): an event the executor keeps failing on ends its
execution FAILED with the reason in its logs; a job handed back twice fails
instead of running again. On the memory backend, the reference implementation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from backends.memory import MemoryBackend
from backends.storage_local import LocalStorage
from runtime.flow.execution import new_execution
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, decode_job
from services.executor import MAX_EVENT_ATTEMPTS, Executor, submit
from services.flows import FlowCache, deploy_source
from services.standalone import Server
from tests.services.server_helpers import running, settings
from tests.webserver.helpers import until

pytestmark = pytest.mark.asyncio

FLOW = """
id: two_steps
namespace: poison
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: one
  - id: second
    type: io.kestra.plugin.core.debug.Return
    format: two
"""


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


async def _submitted(backend: MemoryBackend, *ids: str) -> None:
    record = await deploy_source(backend.flows, FLOW)
    for execution_id in ids:
        execution = new_execution(
            id=execution_id,
            namespace="poison",
            flow_id="two_steps",
            flow_revision=record.revision,
            at=backend.clock(),
        )
        await submit(backend, execution)


async def test_an_event_that_keeps_failing_quarantines_its_execution() -> None:
    clock = Clock()
    backend = MemoryBackend(clock)
    await backend.start()
    await _submitted(backend, "good", "bad")
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    real_job = executor._job

    def job_or_fail(flow: Any, execution: Any, command: Any) -> Any:
        # a bug that strikes one execution every time: the poison
        if execution.id == "bad":
            raise RuntimeError("a bug while dispatching")
        return real_job(flow, execution, command)

    executor._job = job_or_fail  # type: ignore[method-assign]
    for _ in range(MAX_EVENT_ATTEMPTS):
        bad = await backend.executions.get("bad")
        assert bad is not None
        assert bad.state.current is StateType.CREATED  # retried meanwhile, not ended
        await executor.step()
        clock.now += timedelta(seconds=2)  # past the retry's delay

    bad = await backend.executions.get("bad")
    assert bad is not None
    assert bad.state.current is StateType.FAILED
    logs = await backend.logs.query("bad")
    assert any(
        "execution quarantined" in e.message and "a bug while dispatching" in e.message
        for e in logs
    ), logs
    assert await backend.queues.depth(EXECUTOR_QUEUE) == 0
    # the other execution of the batch went on
    jobs = await backend.queues.claim(WORKER_QUEUE, "w", 10, 30)
    assert [decode_job(m.payload).execution_id for m in jobs] == ["good"]
    await backend.stop()


async def test_a_job_handed_back_twice_fails_instead_of_running(tmp_path: Path) -> None:
    backend = MemoryBackend()
    marker = tmp_path / "ran"
    flow = f"""
id: deadly
namespace: poison
tasks:
  - id: kills
    type: io.kestra.plugin.scripts.shell.Commands
    commands:
      - touch {marker}
"""
    await backend.start()
    record = await deploy_source(backend.flows, flow)
    execution = new_execution(
        id="deadly1",
        namespace="poison",
        flow_id="deadly",
        flow_revision=record.revision,
        at=backend.clock(),
    )
    await submit(backend, execution)
    executor_only = Server(
        settings(),
        components=("executor",),
        backend=backend,
        storage=LocalStorage(tmp_path / "storage"),
        watch=False,
    )
    async with executor_only:

        async def queued() -> bool:
            return await backend.queues.depth(WORKER_QUEUE) == 1

        await until(queued, 10, "the job queued")
    # two workers took it and died with it: each time liveness handed it back
    for dead in ("worker-dead-1", "worker-dead-2"):
        assert len(await backend.queues.claim(WORKER_QUEUE, dead, 1, 3600)) == 1
        assert await backend.queues.requeue_consumer(dead) == 1
    async with running(tmp_path, backend, settings()):

        async def ended() -> bool:
            current = await backend.executions.get("deadly1")
            return current is not None and current.state.terminated

        await until(ended, 10, "the execution ended")
    done = await backend.executions.get("deadly1")
    assert done is not None
    assert done.state.current is StateType.FAILED
    assert not marker.exists(), "the job ran a third time"
    logs = await backend.logs.query("deadly1")
    assert any("handed back 2 times" in e.message for e in logs), logs
    await backend.stop()
