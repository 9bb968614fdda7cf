"""One executor batch over several executions: what one execution's failure leaves."""

from __future__ import annotations

from typing import Any

import pytest

from backends.memory import MemoryBackend
from runtime.flow.execution import new_execution
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, decode_job
from services.executor import Executor, submit
from services.flows import FlowCache, deploy_source

FLOW = """
id: two_steps
namespace: batch
tasks:
  - id: first
    type: io.kestra.plugin.core.debug.Return
    format: one
  - id: second
    type: io.kestra.plugin.core.debug.Return
    format: two
"""


@pytest.mark.asyncio
async def test_a_failing_execution_sends_nothing_and_spares_the_rest_of_its_batch() -> None:
    backend = MemoryBackend()
    await backend.start()
    record = await deploy_source(backend.flows, FLOW)
    for execution_id in ("bad", "good"):  # the failing one first: the rest still goes
        await submit(
            backend,
            new_execution(
                id=execution_id,
                namespace="batch",
                flow_id="two_steps",
                flow_revision=record.revision,
                at=backend.clock(),
            ),
        )
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    real_job = executor._job

    def job_or_fail(flow: Any, execution: Any, command: Any) -> Any:
        if execution.id == "bad":
            raise RuntimeError("a bug while dispatching")
        return real_job(flow, execution, command)

    executor._job = job_or_fail  # type: ignore[method-assign]
    assert await executor.step() == 2

    jobs = await backend.queues.claim(WORKER_QUEUE, "w", 10, 30)
    assert [decode_job(m.payload).execution_id for m in jobs] == ["good"]
    good = await backend.executions.get("good")
    bad = await backend.executions.get("bad")
    assert good is not None
    assert good.state.current is StateType.RUNNING
    # the failed pass saved nothing: the execution is as submitted, its event retried
    assert bad is not None
    assert bad.state.current is StateType.CREATED
    assert bad.task_run_list == ()
    assert await backend.queues.depth(EXECUTOR_QUEUE) == 1
    await backend.stop()


NOTHING_TO_DO = """
id: nothing
namespace: batch
tasks:
  - id: off
    type: io.kestra.plugin.core.debug.Return
    format: never
    disabled: true
"""


@pytest.mark.asyncio
async def test_a_failing_execution_takes_back_only_its_own_messages() -> None:
    """What the executions before it in the batch send still goes out."""
    backend = MemoryBackend()
    await backend.start()
    record = await deploy_source(backend.flows, FLOW)
    nothing = await deploy_source(backend.flows, NOTHING_TO_DO)
    # a child that ends at once: its end is an event for its parent, and no log line
    child = new_execution(
        id="child",
        namespace="batch",
        flow_id="nothing",
        flow_revision=nothing.revision,
        at=backend.clock(),
        parent_id="parent",
        parent_task_run_id="call",
    )
    bad = new_execution(
        id="bad",
        namespace="batch",
        flow_id="two_steps",
        flow_revision=record.revision,
        at=backend.clock(),
    )
    for execution in (child, bad):
        await submit(backend, execution)
    executor = Executor(backend, FlowCache(backend), consumer_id="executor-test")
    real_job = executor._job

    def job_or_fail(flow: Any, execution: Any, command: Any) -> Any:
        if execution.id == "bad":
            raise RuntimeError("a bug while dispatching")
        return real_job(flow, execution, command)

    executor._job = job_or_fail  # type: ignore[method-assign]
    assert await executor.step() == 2
    ended = await backend.executions.get("child")
    assert ended is not None
    assert ended.state.current is StateType.SUCCESS
    # the child's end went out to its parent; the bad one's event is back too, for a
    # retry a second later
    assert await backend.queues.depth(EXECUTOR_QUEUE) == 2
    (to_parent,) = await backend.queues.claim(EXECUTOR_QUEUE, "peek", 10, 30)
    assert to_parent.key == "parent"
    await backend.stop()
