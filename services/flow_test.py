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

from backends.protocols import Backend, Storage
from runtime.config import Config, load_config
from runtime.flow.engine import task_index
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.inputs import resolve_inputs
from runtime.flow.model import Flow, Pause
from runtime.flow.states import StateType
from runtime.messages import LogEntry
from services.executor import submit
from services.flows import deploy_file
from services.standalone import Server


class FlowTestTimeoutError(TimeoutError):
    """The flow did not end within the time given."""

    def __init__(self, execution: Execution | None, seconds: float) -> None:
        state = execution.state.current.value if execution else "not started"
        super().__init__(f"the execution did not end within {seconds:g}s (state: {state})")
        self.execution = execution


async def start_execution(
    backend: Backend,
    storage: Storage,
    flow: Flow,
    revision: int,
    given: Mapping[str, str],
    execution_id: str | None = None,
) -> Execution:
    """Upload ``@path`` FILE inputs, type the inputs, store and queue a new execution."""
    execution_id = execution_id or new_id()
    uploaded = await upload_file_inputs(flow, given, storage, execution_id)
    now = backend.clock()
    execution = new_execution(
        id=execution_id,
        namespace=flow.namespace,
        flow_id=flow.id,
        flow_revision=revision,
        at=now,
        inputs=resolve_inputs(flow, uploaded, now=now),
        labels=flow.label_map(),
    )
    await submit(backend, execution)
    return execution


async def upload_file_inputs(
    flow: Flow, given: Mapping[str, str], storage: Storage, execution_id: str
) -> dict[str, str]:
    """FILE inputs given as ``@path`` are uploaded; the input becomes the stored URI."""
    out = dict(given)
    for spec in flow.inputs:
        value = given.get(spec.id)
        if spec.type.upper() == "FILE" and isinstance(value, str) and value.startswith("@"):
            path = await asyncio.to_thread(Path(value[1:]).expanduser)
            data = await asyncio.to_thread(path.read_bytes)
            out[spec.id] = await storage.put(
                flow.namespace, f"executions/{execution_id}/inputs/{spec.id}/{path.name}", data
            )
    return out


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
            assert server.executor is not None
            server.executor.listeners.append(observe)
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
