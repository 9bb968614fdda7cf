"""A real RunContext for task tests: LocalStorage in a temporary folder, the memory
backend's KV store, a real process pool, logs collected in a list, templates
rendered by runtime.flow.template."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from backends.memory import MemoryBackend
from backends.storage_local import LocalStorage
from runtime.actors.pool import ProcessPool
from runtime.flow.template import render_value_async


class CollectedLog:
    """A TaskLogger keeping ``(level, message)`` pairs."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str]] = []

    def log(self, level: str, message: str) -> None:
        self.lines.append((level.upper(), message))

    def debug(self, message: str) -> None:
        self.log("DEBUG", message)

    def info(self, message: str) -> None:
        self.log("INFO", message)

    def warning(self, message: str) -> None:
        self.log("WARN", message)

    def error(self, message: str) -> None:
        self.log("ERROR", message)

    def messages(self, level: str | None = None) -> list[str]:
        return [m for lvl, m in self.lines if level is None or lvl == level]


class _Services:
    """secret(), kv() and read() for templates."""

    def __init__(self, ctx: TaskContext) -> None:
        self._ctx = ctx

    async def secret(self, key: str) -> str:
        return self._ctx.secrets[key]

    async def kv(self, key: str, namespace: str | None, error_on_missing: bool) -> Any:
        entry = await self._ctx.kv.get(namespace or self._ctx.namespace, key)
        if entry is None and error_on_missing:
            raise KeyError(key)
        return None if entry is None else entry.value

    async def read(self, path: str) -> str:
        return (await self._ctx.storage.get(path)).decode()


class TaskContext:
    """Implements runtime.tasks.context.RunContext for one attempt."""

    def __init__(
        self,
        tmp_path: Path,
        *,
        task_id: str = "task",
        variables: dict[str, Any] | None = None,
        pool: ProcessPool | None = None,
        storage: LocalStorage | None = None,
        backend: MemoryBackend | None = None,
        namespace: str = "company.team",
        flow_id: str = "flow",
    ) -> None:
        self.execution_id = "exec1"
        self.task_run_id = "run1"
        self.task_id = task_id
        self.attempt = 1
        self.namespace = namespace
        self.flow_id = flow_id
        self.variables: dict[str, Any] = {
            "flow": {"id": flow_id, "namespace": namespace},
            "execution": {"id": self.execution_id},
            "inputs": {},
            "outputs": {},
            "vars": {},
            "taskrun": {"id": self.task_run_id, "value": None},
            **(variables or {}),
        }
        self.workdir = tmp_path / "work" / task_id
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log = CollectedLog()
        self.storage = storage or LocalStorage(tmp_path / "storage", fsync=False)
        self.backend = backend or MemoryBackend()
        self.kv = self.backend.kv
        self.pool = pool or ProcessPool(1, name="tasks-test")
        self.secrets: dict[str, str] = {}
        self.warnings: list[str] = []
        self.metrics: list[tuple[str, str, float, dict[str, str]]] = []
        self.kill_callbacks: list[Callable[[], None]] = []

    async def render(self, value: Any, extra: dict[str, Any] | None = None) -> Any:
        variables = {**self.variables, **extra} if extra else self.variables
        return await render_value_async(value, variables, _Services(self))

    def warn(self, reason: str) -> None:
        self.warnings.append(reason)

    def metric(
        self, name: str, type: str, value: float, tags: dict[str, str] | None = None
    ) -> None:
        self.metrics.append((name, type, value, dict(tags or {})))

    def on_kill(self, callback: Callable[[], None]) -> None:
        self.kill_callbacks.append(callback)

    def kill(self) -> None:
        """What the worker does on a kill, before cancelling the task."""
        for callback in self.kill_callbacks:
            callback()


def load_task(source: str, *, namespace: str = "company.team") -> Any:
    """The first task of a flow whose ``tasks`` list is ``source`` (YAML), built and
    validated as the loader builds real flows."""
    import textwrap

    import yaml

    from runtime.flow.loader import build_flow

    body = textwrap.indent(textwrap.dedent(source).strip(), "  ")
    flow = build_flow(yaml.safe_load(f"id: flow\nnamespace: {namespace}\ntasks:\n{body}\n"))
    return flow.tasks[0]
