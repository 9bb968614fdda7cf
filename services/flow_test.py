"""`runtime flow test`: run one flow to its end on an ephemeral in-process server.

The server uses the memory backend and a temporary storage folder, deploys the
flows of ``--flows DIR`` first (for subflows and flow triggers), runs the flow
with its inputs and returns when the execution ends or pauses.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from backends.protocols import Backend
from runtime.config import Config, load_config
from runtime.flow.engine import task_index
from runtime.flow.execution import Execution
from runtime.flow.ids import new_id
from runtime.flow.model import Pause
from runtime.flow.states import StateType
from runtime.messages import LogEntry
from services.flows import deploy_file
from services.standalone import Server
from services.submit import start_execution


class FlowTestTimeoutError(TimeoutError):
    """The flow did not end within the time given."""

    def __init__(self, execution: Execution | None, seconds: float) -> None:
        state = execution.state.current.value if execution else "not started"
        super().__init__(f"the execution did not end within {seconds:g}s (state: {state})")
        self.execution = execution


def memory_backend() -> Backend:
    from backends.memory import MemoryBackend

    return MemoryBackend()


#: what `flow test` runs on; tests swap it to run the same flows on other backends
BACKEND_FACTORY: Callable[[], Backend] = memory_backend


async def run_flow_test(
    flow_file: Path,
    *,
    flows_dir: Path | None = None,
    inputs: Mapping[str, str] | None = None,
    timeout: float = 600.0,  # noqa: ASYNC109 - a deadline for the whole run, not a wait
    on_change: Callable[[Execution], None] | None = None,
    config: Config | None = None,
) -> tuple[Execution, list[LogEntry]]:
    """Run ``flow_file`` once; returns the final (or paused) execution and its logs."""
    from backends.storage_local import LocalStorage

    base = config or load_config(None, {})
    with tempfile.TemporaryDirectory(prefix="runtime-flow-test-") as scratch:
        backend = BACKEND_FACTORY()
        storage = LocalStorage(Path(scratch))
        server = Server(base, backend=backend, storage=storage, flows_dir=flows_dir, watch=False)
        done = asyncio.Event()
        execution_id = new_id()

        def observe(execution: Execution) -> None:
            if execution.id != execution_id:
                return
            if on_change is not None:
                on_change(execution)
            if execution.state.terminated or (
                execution.state.current is StateType.PAUSED and not _resumes_by_itself(execution)
            ):
                done.set()

        def _resumes_by_itself(execution: Execution) -> bool:
            """A Pause with a duration goes on by itself: wait for it."""
            tasks = task_index(server.flows.parse(record))
            for run in execution.task_run_list:
                task = tasks.get(run.task_id)
                paused = run.state.current is StateType.PAUSED
                # a duration resumes it, a timeout ends it: either way, wait
                timed = isinstance(task, Pause) and (task.wait or task.timeout) is not None
                if paused and timed:
                    return True
            return False

        async with server:
            server.listeners.append(observe)
            record = await deploy_file(backend.flows, flow_file)
            flow = server.flows.parse(record)
            await start_execution(
                backend, storage, flow, record.revision, inputs or {}, execution_id
            )
            try:
                async with asyncio.timeout(timeout):
                    await done.wait()
            except TimeoutError:
                raise FlowTestTimeoutError(
                    await backend.executions.get(execution_id), timeout
                ) from None
            final = await backend.executions.get(execution_id)
            assert final is not None
            logs = await backend.logs.query(execution_id, limit=100_000)
            return final, logs
