"""Kestra's core runnable tasks: their properties, and ``run(ctx)`` for the worker.

Each ``run`` renders its own properties (they hold raw templates) with
``ctx.render`` and returns its outputs. The small tasks run here; KV and state
tasks run in :mod:`runtime.tasks.kv`, HTTP in :mod:`runtime.tasks.http_request`,
scripts in :mod:`runtime.tasks.scripts` and WorkingDirectory in
:mod:`runtime.tasks.working_directory`.

Script tasks also accept Kestra's container settings (``containerImage``,
``taskRunner``, ``docker``, ``runner``) so existing flows validate; this runtime
runs scripts as local processes and ignores them.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, ClassVar

import msgspec

from runtime.flow.context import is_truthy
from runtime.flow.model import RunnableTask, Task
from runtime.tasks import files, kv, scripts, working_directory
from runtime.tasks.context import RunContext, TaskFailure
from runtime.tasks.python_call import PythonFunction
from runtime.tasks.support import log_at, normalize_level

Outputs = dict[str, Any] | None


class Log(RunnableTask, kw_only=True, frozen=True):
    message: str | list[str]
    level: str = "INFO"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.log.Log"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.log.Log",)

    async def run(self, ctx: RunContext) -> Outputs:
        """Log each message at ``level``; no outputs."""
        level = normalize_level(await ctx.render(self.level), where=f"task {self.id!r} level")
        messages = self.message if isinstance(self.message, list) else [self.message]
        for message in messages:
            log_at(ctx, level, _text(await ctx.render(message)))
        return None


class Return(RunnableTask, kw_only=True, frozen=True):
    format: Any = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.debug.Return"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.debugs.Return",)

    async def run(self, ctx: RunContext) -> Outputs:
        """Outputs ``value``: the rendered ``format``."""
        return {"value": await ctx.render(self.format)}


class Echo(RunnableTask, kw_only=True, frozen=True):
    format: Any = None
    level: str = "INFO"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.debug.Echo"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.debugs.Echo",)

    async def run(self, ctx: RunContext) -> Outputs:
        """Log the rendered ``format`` at ``level`` (Kestra's deprecated Log); no outputs."""
        level = normalize_level(await ctx.render(self.level), where=f"task {self.id!r} level")
        log_at(ctx, level, _text(await ctx.render(self.format)))
        return None


class OutputValues(RunnableTask, kw_only=True, frozen=True):
    values: dict[str, Any] = {}

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.output.OutputValues"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.outputs.OutputValues",)

    async def run(self, ctx: RunContext) -> Outputs:
        """Outputs ``values``: the map, every value rendered."""
        return {"values": await ctx.render(dict(self.values))}


class Sleep(RunnableTask, kw_only=True, frozen=True):
    duration: timedelta

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.Sleep"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.Sleep",)

    async def run(self, ctx: RunContext) -> Outputs:
        """Wait ``duration`` (a kill or a timeout cancels the wait); no outputs."""
        await asyncio.sleep(max(0.0, self.duration.total_seconds()))
        return None


class Fail(RunnableTask, kw_only=True, frozen=True):
    condition: str | bool | None = None
    error_message: str = "Task failure"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.execution.Fail"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.executions.Fail",)

    async def run(self, ctx: RunContext) -> Outputs:
        """Fail with ``errorMessage`` when ``condition`` renders truthy or is absent."""
        if self.condition is not None and not is_truthy(await ctx.render(self.condition)):
            return None
        raise TaskFailure(_text(await ctx.render(self.error_message)))


class KvSet(RunnableTask, kw_only=True, frozen=True):
    key: str
    value: Any
    namespace: str | None = None
    overwrite: bool = True
    ttl: timedelta | None = None
    kv_type: str | None = None
    description: str | None = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.kv.Set"

    async def run(self, ctx: RunContext) -> Outputs:
        return await kv.kv_set(self, ctx)


class KvGet(RunnableTask, kw_only=True, frozen=True):
    key: str
    namespace: str | None = None
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.kv.Get"

    async def run(self, ctx: RunContext) -> Outputs:
        return await kv.kv_get(self, ctx)


class KvDelete(RunnableTask, kw_only=True, frozen=True):
    key: str
    namespace: str | None = None
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.kv.Delete"

    async def run(self, ctx: RunContext) -> Outputs:
        return await kv.kv_delete(self, ctx)


class StateSet(RunnableTask, kw_only=True, frozen=True):
    name: str = "default"
    data: dict[str, Any] = {}
    namespace: bool = False
    taskrun_value: bool = True

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.state.Set"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.states.Set",)

    async def run(self, ctx: RunContext) -> Outputs:
        return await kv.state_set(self, ctx)


class StateGet(RunnableTask, kw_only=True, frozen=True):
    name: str = "default"
    namespace: bool = False
    taskrun_value: bool = True
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.state.Get"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.states.Get",)

    async def run(self, ctx: RunContext) -> Outputs:
        return await kv.state_get(self, ctx)


class StateDelete(RunnableTask, kw_only=True, frozen=True):
    name: str = "default"
    namespace: bool = False
    taskrun_value: bool = True
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.state.Delete"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.states.Delete",)

    async def run(self, ctx: RunContext) -> Outputs:
        return await kv.state_delete(self, ctx)


class HttpRequest(RunnableTask, kw_only=True, frozen=True):
    uri: str
    method: str = "GET"
    headers: dict[str, Any] = {}
    body: Any = None
    form_data: dict[str, Any] | None = None
    content_type: str | None = None
    options: dict[str, Any] = {}
    allow_failed: bool = False
    encrypt_body: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.http.Request"
    aliases: ClassVar[tuple[str, ...]] = (
        "io.kestra.plugin.fs.http.Request",
        "io.kestra.core.tasks.http.Request",
    )

    async def run(self, ctx: RunContext) -> Outputs:
        # Imported here: httpx takes a while to import, and most processes that load
        # the task models (validation, the executor) never send a request.
        from runtime.tasks import http_request

        return await http_request.run(self, ctx)


class _Script(RunnableTask, kw_only=True, frozen=True):
    env: dict[str, str] = {}
    input_files: dict[str, str] | str | None = None
    output_files: list[str] = []
    namespace_files: dict[str, Any] | None = None
    before_commands: list[str] = []
    interpreter: list[str] | None = None
    #: None (the default): stderr output never changes the state, as in Kestra >= 0.23;
    #: true: any stderr output ends the task in WARNING (Kestra before 0.23).
    warning_on_std_err: bool | None = None
    fail_fast: bool = True
    # Container settings Kestra accepts; scripts here run as local processes.
    container_image: str | None = None
    task_runner: dict[str, Any] | None = None
    docker: dict[str, Any] | None = None
    runner: str | None = None
    target_os: str | None = None


class ShellCommands(_Script, kw_only=True, frozen=True):
    commands: list[str]

    canonical_type: ClassVar[str] = "io.kestra.plugin.scripts.shell.Commands"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.scripts.Bash",)

    async def run(self, ctx: RunContext) -> Outputs:
        return await scripts.run_commands(self, ctx, "shell")


class ShellScript(_Script, kw_only=True, frozen=True):
    script: str

    canonical_type: ClassVar[str] = "io.kestra.plugin.scripts.shell.Script"

    async def run(self, ctx: RunContext) -> Outputs:
        return await scripts.run_script(self, ctx, "shell")


class PythonCommands(_Script, kw_only=True, frozen=True):
    commands: list[str]
    dependencies: list[str] = []

    canonical_type: ClassVar[str] = "io.kestra.plugin.scripts.python.Commands"

    async def run(self, ctx: RunContext) -> Outputs:
        return await scripts.run_commands(self, ctx, "python")


class PythonScript(_Script, kw_only=True, frozen=True):
    script: str
    dependencies: list[str] = []

    canonical_type: ClassVar[str] = "io.kestra.plugin.scripts.python.Script"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.scripts.Python",)

    async def run(self, ctx: RunContext) -> Outputs:
        return await scripts.run_script(self, ctx, "python")


class WorkingDirectory(RunnableTask, kw_only=True, frozen=True):
    """Runs its children one after another on one worker, in one temporary folder."""

    tasks: tuple[Task, ...]
    input_files: dict[str, str] | str | None = None
    output_files: list[str] = []
    namespace_files: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None
    #: run in the same folder after a child failed (the run stays FAILED), as Kestra's
    #: WorkingDirectory, a flowable there, runs its `errors`
    errors: tuple[Task, ...] = ()
    finally_: tuple[Task, ...] = msgspec.field(default=(), name="finally")

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.WorkingDirectory"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.WorkingDirectory",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list", "errors": "list", "finally_": "list"}
    reports_children: ClassVar[bool] = True

    async def run(self, ctx: RunContext) -> Outputs:
        return await working_directory.run(self, ctx)


class PurgeCurrentExecutionFiles(RunnableTask, kw_only=True, frozen=True):
    """Delete the running execution's files from internal storage (its FILE inputs
    and its tasks' output files); outputs ``uris``, those deleted."""

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.storage.PurgeCurrentExecutionFiles"
    aliases: ClassVar[tuple[str, ...]] = (
        "io.kestra.core.tasks.storages.PurgeCurrentExecutionFiles",
        "io.kestra.plugin.core.storage.PurgeExecution",
        "io.kestra.core.tasks.storages.PurgeExecution",
    )

    async def run(self, ctx: RunContext) -> Outputs:
        return {"uris": await files.purge_execution_files(ctx)}


CORE_TASKS: tuple[type[Task], ...] = (
    Log,
    Return,
    Echo,
    OutputValues,
    Sleep,
    Fail,
    KvSet,
    KvGet,
    KvDelete,
    StateSet,
    StateGet,
    StateDelete,
    HttpRequest,
    ShellCommands,
    ShellScript,
    PythonCommands,
    PythonScript,
    WorkingDirectory,
    PythonFunction,
    PurgeCurrentExecutionFiles,
)

__all__ = [cls.__name__ for cls in CORE_TASKS] + ["CORE_TASKS"]
_ = msgspec  # the models above are msgspec Structs through RunnableTask


def _text(value: Any) -> str:
    return "" if value is None else str(value)
