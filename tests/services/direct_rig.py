"""An executor and a worker on the memory backend, run as their supervisor runs them
(``run(ctx)``) but with nothing else around them: no scheduler, no liveness, no flow
folder, no HTTP. Fast enough for mutation testing, which runs these tests once per
mutant of the executor and the worker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from backends.memory import MemoryBackend
from backends.storage_local import LocalStorage
from runtime.actors import ChildContext, Registry, SystemClock
from runtime.config import ExecutorConfig, WorkerConfig
from runtime.flow.execution import Execution
from services.executor import Executor
from services.flows import FlowCache
from services.worker import Worker


def worker_settings(**values: Any) -> WorkerConfig:
    """Short intervals: a test waits tens of milliseconds, not seconds."""
    defaults: dict[str, Any] = {
        "kill_poll_seconds": 0.02,
        "heartbeat_seconds": 0.05,
        "log_flush_seconds": 0.02,
        "running_report_seconds": 0.05,
        "grace_seconds": 5.0,
    }
    return WorkerConfig(**{**defaults, **values})


class Component:
    """A component's ``run`` as a task, with the context its supervisor would give."""

    def __init__(self, name: str, child: Executor | Worker) -> None:
        self.ctx = ChildContext(name, Registry(), SystemClock())
        self.child = child
        self.task: asyncio.Task[None] = asyncio.create_task(child.run(self.ctx), name=name)

    async def ready(self) -> None:
        async with asyncio.timeout(5):
            while not self.ctx.is_ready:
                if self.task.done():
                    self.task.result()  # raises what the start raised
                    raise AssertionError(f"{self.ctx.name} returned before it was ready")
                await asyncio.sleep(0.005)

    async def stop(self, within: float = 10.0) -> None:
        """A graceful stop, as a supervisor asks for it; raises what ``run`` raised."""
        self.ctx.request_stop()
        async with asyncio.timeout(within):
            await self.task


class Rig:
    def __init__(
        self, tmp_path: Path, backend: MemoryBackend, worker: WorkerConfig, idle_wait: float
    ) -> None:
        self.backend = backend
        self.flows = FlowCache(backend)
        self.changed: list[Execution] = []
        #: the running components and their tasks, by name ("executor", "worker")
        self.components: dict[str, Component] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.executor = Executor(
            backend,
            self.flows,
            consumer_id="executor-test",
            settings=ExecutorConfig(idle_wait_seconds=idle_wait, heartbeat_seconds=0.05),
            listeners=[self.changed.append],
        )
        self.worker = Worker(
            backend,
            LocalStorage(tmp_path / "storage"),
            FlowCache(backend),
            worker_id="worker-test",
            settings=worker,
            secrets={"TOKEN": "s3cret", "X": "x"},
        )


@asynccontextmanager
async def rig(
    tmp_path: Path,
    backend: MemoryBackend | None = None,
    *,
    executor: bool = True,
    worker: bool = True,
    idle_wait: float = 1.0,
    **settings: Any,
) -> AsyncIterator[Rig]:
    """The executor and the worker running; both stopped gracefully on the way out
    (a failure of either then fails the test). The executor's idle wait is long:
    what it must act on (a publish, a delayed event falling due) wakes it itself."""
    backend = backend or MemoryBackend()
    await backend.start()
    built = Rig(tmp_path, backend, worker_settings(**settings), idle_wait)
    running: list[Component] = []
    try:
        if executor:
            running.append(Component("executor", built.executor))
        if worker:
            running.append(Component("worker", built.worker))
        for component in running:
            await component.ready()
            built.tasks[component.ctx.name] = component.task
            built.components[component.ctx.name] = component
        yield built
    finally:
        try:
            for component in reversed(running):
                if not component.task.done():
                    await component.stop()
                elif not component.task.cancelled():
                    component.task.result()  # raises what it failed with
        finally:
            for component in running:
                component.task.cancel()
            await asyncio.gather(*(c.task for c in running), return_exceptions=True)
            await backend.stop()
