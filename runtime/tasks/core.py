"""The models of Kestra's core runnable tasks (properties only; workers run them).

Script tasks also accept Kestra's container settings (``containerImage``,
``taskRunner``, ``docker``, ``runner``) so existing flows validate; this runtime
runs scripts as local processes and ignores them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, ClassVar

import msgspec

from runtime.flow.model import RunnableTask, Task


class Log(RunnableTask, kw_only=True, frozen=True):
    message: str | list[str]
    level: str = "INFO"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.log.Log"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.log.Log",)


class Return(RunnableTask, kw_only=True, frozen=True):
    format: Any = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.debug.Return"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.debugs.Return",)


class Echo(RunnableTask, kw_only=True, frozen=True):
    format: Any = None
    level: str = "INFO"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.debug.Echo"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.debugs.Echo",)


class OutputValues(RunnableTask, kw_only=True, frozen=True):
    values: dict[str, Any] = {}

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.output.OutputValues"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.outputs.OutputValues",)


class Sleep(RunnableTask, kw_only=True, frozen=True):
    duration: timedelta

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.Sleep"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.Sleep",)


class Fail(RunnableTask, kw_only=True, frozen=True):
    condition: str | bool | None = None
    error_message: str = "Task failure"

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.execution.Fail"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.executions.Fail",)


class KvSet(RunnableTask, kw_only=True, frozen=True):
    key: str
    value: Any
    namespace: str | None = None
    overwrite: bool = True
    ttl: timedelta | None = None
    kv_type: str | None = None
    description: str | None = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.kv.Set"


class KvGet(RunnableTask, kw_only=True, frozen=True):
    key: str
    namespace: str | None = None
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.kv.Get"


class KvDelete(RunnableTask, kw_only=True, frozen=True):
    key: str
    namespace: str | None = None
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.kv.Delete"


class StateSet(RunnableTask, kw_only=True, frozen=True):
    name: str = "default"
    data: dict[str, Any] = {}
    namespace: bool = False
    taskrun_value: bool = True

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.state.Set"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.states.Set",)


class StateGet(RunnableTask, kw_only=True, frozen=True):
    name: str = "default"
    namespace: bool = False
    taskrun_value: bool = True
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.state.Get"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.states.Get",)


class StateDelete(RunnableTask, kw_only=True, frozen=True):
    name: str = "default"
    namespace: bool = False
    taskrun_value: bool = True
    error_on_missing: bool = False

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.state.Delete"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.states.Delete",)


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


class _Script(RunnableTask, kw_only=True, frozen=True):
    env: dict[str, str] = {}
    input_files: dict[str, str] | str | None = None
    output_files: list[str] = []
    namespace_files: dict[str, Any] | None = None
    before_commands: list[str] = []
    interpreter: list[str] | None = None
    warning_on_std_err: bool = True
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


class ShellScript(_Script, kw_only=True, frozen=True):
    script: str

    canonical_type: ClassVar[str] = "io.kestra.plugin.scripts.shell.Script"


class PythonCommands(_Script, kw_only=True, frozen=True):
    commands: list[str]
    dependencies: list[str] = []

    canonical_type: ClassVar[str] = "io.kestra.plugin.scripts.python.Commands"


class PythonScript(_Script, kw_only=True, frozen=True):
    script: str
    dependencies: list[str] = []

    canonical_type: ClassVar[str] = "io.kestra.plugin.scripts.python.Script"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.scripts.Python",)


class WorkingDirectory(RunnableTask, kw_only=True, frozen=True):
    """Runs its children one after another on one worker, in one temporary folder."""

    tasks: tuple[Task, ...]
    input_files: dict[str, str] | str | None = None
    output_files: list[str] = []
    namespace_files: dict[str, Any] | None = None
    cache: dict[str, Any] | None = None

    canonical_type: ClassVar[str] = "io.kestra.plugin.core.flow.WorkingDirectory"
    aliases: ClassVar[tuple[str, ...]] = ("io.kestra.core.tasks.flows.WorkingDirectory",)
    task_fields: ClassVar[dict[str, str]] = {"tasks": "list"}


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
)

__all__ = [cls.__name__ for cls in CORE_TASKS] + ["CORE_TASKS"]
_ = msgspec  # the models above are msgspec Structs through RunnableTask
