"""Helpers of the server tests: a server on the memory backend with short intervals,
and ways to start executions and wait for what users would wait for."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from backends.protocols import Backend
from backends.storage_local import LocalStorage
from runtime.config import Config, ExecutorConfig, LivenessConfig, SchedulerConfig, WorkerConfig
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import new_id
from runtime.flow.inputs import resolve_inputs
from runtime.flow.states import StateType
from runtime.messages import EXECUTOR_QUEUE
from services.executor import submit
from services.flows import FlowCache
from services.standalone import Server

NS = "srv"
S = StateType


def settings(**worker: Any) -> Config:
    """Short intervals so that each test takes well under a second of waiting."""
    values: dict[str, Any] = {
        "kill_poll_seconds": 0.05,
        "heartbeat_seconds": 0.1,
        "log_flush_seconds": 0.05,
        "grace_seconds": 5.0,
        **worker,
    }
    return Config(
        executor=ExecutorConfig(idle_wait_seconds=0.2),
        worker=WorkerConfig(**values),
        scheduler=SchedulerConfig(tick_seconds=0.2),
        liveness=LivenessConfig(interval_seconds=0.05, worker_timeout_seconds=2.0),
    )


@asynccontextmanager
async def running(
    tmp_path: Path,
    backend: Backend,
    config: Config | None = None,
    *,
    flows_dir: Path | None = None,
) -> AsyncIterator[Server]:
    server = Server(
        config or settings(),
        backend=backend,
        storage=LocalStorage(tmp_path / "storage"),
        flows_dir=flows_dir,
        watch=False,
    )
    async with server:
        yield server


async def start(
    backend: Backend, flow_id: str, inputs: dict[str, Any] | None = None, namespace: str = NS
) -> str:
    """Queue an execution of the deployed flow, as `runtime execute` does."""
    record = await backend.flows.get(namespace, flow_id)
    assert record is not None, f"{namespace}.{flow_id} is not deployed"
    flow = FlowCache(backend).parse(record)
    execution = new_execution(
        id=new_id(),
        namespace=namespace,
        flow_id=flow_id,
        flow_revision=record.revision,
        at=backend.clock(),
        inputs=resolve_inputs(flow, inputs or {}, now=backend.clock()),
    )
    await submit(backend, execution)
    return execution.id


async def until(predicate: Callable[[], Awaitable[bool]], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not await predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s")
        await asyncio.sleep(0.01)


async def get(backend: Backend, execution_id: str) -> Execution:
    execution = await backend.executions.get(execution_id)
    assert execution is not None, execution_id
    return execution


async def ended(backend: Backend, execution_id: str, within: float = 5.0) -> Execution:
    async def done() -> bool:
        return (await get(backend, execution_id)).state.terminated

    try:
        await until(done, within, f"execution {execution_id} ended")
    except AssertionError:
        execution = await get(backend, execution_id)
        runs = [(r.task_id, r.state.current.value) for r in execution.task_run_list]
        state = execution.state.current.value
        raise AssertionError(f"still {state} after {within}s: {runs}") from None
    return await get(backend, execution_id)


async def task_state(backend: Backend, execution_id: str, task_id: str) -> StateType | None:
    runs = (await get(backend, execution_id)).runs_of(task_id)
    return runs[0].state.current if runs else None


async def running_task(backend: Backend, execution_id: str, task_id: str) -> None:
    async def started() -> bool:
        return await task_state(backend, execution_id, task_id) is S.RUNNING

    await until(started, 5, f"task {task_id} running")


async def drained(backend: Backend) -> None:
    """Until the executor has consumed everything queued for it."""

    async def empty() -> bool:
        return await backend.queues.depth(EXECUTOR_QUEUE) == 0

    await until(empty, 5, "executor queue drained")


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def text_of(path: Path) -> str:
    return path.read_text() if path.exists() else ""


async def pid_in(path: Path) -> int:
    async def written() -> bool:
        return text_of(path).strip() != ""

    await until(written, 5, f"{path} written")
    return int(text_of(path))


async def dead(pid: int, within: float = 2.0) -> None:
    async def gone() -> bool:
        return not alive(pid)

    await until(gone, within, f"process {pid} gone")


def returns(flow_id: str, extra: str = "", value: str = "done") -> str:
    return f"""
id: {flow_id}
namespace: {NS}
{extra}
tasks:
  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{value}"
"""


def shell(flow_id: str, commands: Sequence[str], task: str = "") -> str:
    lines = "\n".join(f"      - {command}" for command in commands)
    return f"""
id: {flow_id}
namespace: {NS}
tasks:
  - id: sh
    type: io.kestra.plugin.scripts.shell.Commands
{task}
    commands:
{lines}
"""
