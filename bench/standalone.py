"""Run one execution through a server in this process and wait for its end.

The harness's end-to-end measures (:mod:`bench.e2e`) use it with the executor in
this process: ``Executor.listeners`` tell when the execution ends, with no polling.
"""

from __future__ import annotations

import asyncio
import time

from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.states import StateType
from services.standalone import Server
from services.submit import submit


async def run_once(
    server: Server, namespace: str, flow_id: str, limit_s: float = 120.0
) -> tuple[float, Execution]:
    """Seconds from submitting one execution of the flow to its end (it must succeed)."""
    backend = server.backend
    assert server.executor is not None
    done = asyncio.Event()
    execution_id = new_id()

    def observe(execution: Execution) -> None:
        if execution.id == execution_id and execution.state.terminated:
            done.set()

    server.executor.listeners.append(observe)
    record = await backend.flows.get(namespace, flow_id)
    assert record is not None
    execution = new_execution(
        id=execution_id,
        namespace=namespace,
        flow_id=flow_id,
        flow_revision=record.revision,
        at=backend.clock(),
    )
    try:
        began = time.perf_counter()
        await submit(backend, execution)
        async with asyncio.timeout(limit_s):
            await done.wait()
        elapsed = time.perf_counter() - began
    finally:
        server.executor.listeners.remove(observe)
    final = await backend.executions.get(execution_id)
    assert final is not None
    if final.state.current is not StateType.SUCCESS:
        raise RuntimeError(f"benchmark flow {flow_id} ended {final.state.current.value}")
    return elapsed, final
