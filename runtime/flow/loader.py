"""Build the typed flow model from plain data (the YAML document as dicts and lists).

Each task's ``type`` is resolved through the task registry, plugin defaults are
applied, then msgspec converts and type-checks the properties. Every problem found
is collected with its path (``tasks[2].retry.interval``); positions in the source
file are added by the parser, which maps paths to lines and columns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from runtime.flow.model import DagTask, Flow, PluginDefault, Task
from runtime.flow.registry import TaskRegistry, UnknownTaskTypeError, default_registry


class Problem(msgspec.Struct, frozen=True):
    """One thing wrong with a flow."""

    path: str  #: where, as ``tasks[2].retry.interval`` ("" for the document itself)
    message: str
    hint: str | None = None
    line: int | None = None
    column: int | None = None

    def render(self, file: str = "<flow>") -> str:
        where = f"{file}:{self.line or 1}:{self.column or 1}"
        at = f" (at {self.path})" if self.path else ""
        hint = f"; {self.hint}" if self.hint else ""
        return f"{where}: {self.message}{at}{hint}"


class FlowError(ValueError):
    """A flow that cannot be built; ``problems`` lists every problem found."""

    def __init__(self, problems: Sequence[Problem], file: str = "<flow>") -> None:
        self.problems = list(problems)
        self.file = file
        super().__init__("\n".join(p.render(file) for p in self.problems))


_FLOW_TASK_GROUPS = ("tasks", "errors", "finally", "afterExecution")


def build_flow(data: Any, registry: TaskRegistry | None = None) -> Flow:
    """Convert a parsed YAML document into a :class:`Flow`; FlowError lists every problem."""
    registry = registry or default_registry()
    problems: list[Problem] = []
    if not isinstance(data, Mapping):
        raise FlowError([Problem("", f"a flow must be a mapping, got {_kind(data)}")])
    defaults = _plugin_defaults(data.get("pluginDefaults") or data.get("taskDefaults"), problems)
    body = {k: v for k, v in data.items() if k not in _FLOW_TASK_GROUPS and k != "taskDefaults"}
    if "taskDefaults" in data and "pluginDefaults" not in data:
        body["pluginDefaults"] = data["taskDefaults"]
    groups: dict[str, tuple[Task, ...]] = {}
    for group in _FLOW_TASK_GROUPS:
        if group in data:
            groups[group] = _build_tasks(data[group], group, registry, defaults, problems)
            body[group] = []
    if "tasks" not in data:
        problems.append(
            Problem("", "missing required field `tasks`", "a flow needs a list of tasks")
        )
        body["tasks"] = []
    flow: Flow | None = None
    try:
        flow = msgspec.convert(body, Flow)
    except msgspec.ValidationError as exc:
        problems.append(_from_validation(exc, ""))
    if problems or flow is None:
        raise FlowError(problems)
    return msgspec.structs.replace(
        flow,
        tasks=groups.get("tasks", ()),
        errors=groups.get("errors", ()),
        finally_=groups.get("finally", ()),
        after_execution=groups.get("afterExecution", ()),
    )


def _build_tasks(
    items: Any,
    path: str,
    registry: TaskRegistry,
    defaults: Sequence[PluginDefault],
    problems: list[Problem],
) -> tuple[Task, ...]:
    if items is None:
        return ()
    if not isinstance(items, list):
        problems.append(Problem(path, f"expected a list of tasks, got {_kind(items)}"))
        return ()
    built = []
    for index, item in enumerate(items):
        task = _build_task(item, f"{path}[{index}]", registry, defaults, problems)
        if task is not None:
            built.append(task)
    return tuple(built)


def _build_task(
    item: Any,
    path: str,
    registry: TaskRegistry,
    defaults: Sequence[PluginDefault],
    problems: list[Problem],
) -> Task | None:
    if not isinstance(item, Mapping):
        problems.append(Problem(path, f"a task must be a mapping, got {_kind(item)}"))
        return None
    type_name = item.get("type")
    if not isinstance(type_name, str):
        problems.append(
            Problem(path, "missing required field `type`", "every task needs a `type`")
            if type_name is None
            else Problem(f"{path}.type", f"expected a string, got {_kind(type_name)}")
        )
        return None
    try:
        cls = registry.resolve(type_name)
    except UnknownTaskTypeError as exc:
        hint = f"did you mean {exc.suggestion}?" if exc.suggestion else None
        problems.append(Problem(f"{path}.type", f"unknown task type {type_name!r}", hint))
        return None
    props = _apply_defaults(dict(item), type_name, defaults)
    children: dict[str, Any] = {}
    before = len(problems)
    for field, shape in cls.task_fields.items():
        yaml_name = _yaml_field(cls, field)
        if yaml_name not in props:
            continue
        raw = props[yaml_name]
        child_path = f"{path}.{yaml_name}"
        if shape == "list":
            children[field] = _build_tasks(raw, child_path, registry, defaults, problems)
            props[yaml_name] = []
        elif shape == "map":
            if not isinstance(raw, Mapping):
                problems.append(Problem(child_path, f"expected a mapping, got {_kind(raw)}"))
                children[field] = {}
            else:
                children[field] = {
                    str(key): _build_tasks(
                        value, f"{child_path}.{key}", registry, defaults, problems
                    )
                    for key, value in raw.items()
                }
            props[yaml_name] = {}
        elif shape == "dag":
            children[field] = _build_dag(raw, child_path, registry, defaults, problems)
            props[yaml_name] = []
    try:
        task = msgspec.convert(props, cls)
    except msgspec.ValidationError as exc:
        problems.append(_from_validation(exc, path))
        return None
    if len(problems) > before:
        return None
    return msgspec.structs.replace(task, **children) if children else task


def _build_dag(
    raw: Any,
    path: str,
    registry: TaskRegistry,
    defaults: Sequence[PluginDefault],
    problems: list[Problem],
) -> tuple[DagTask, ...]:
    if not isinstance(raw, list):
        problems.append(Problem(path, f"expected a list of {{task, dependsOn}}, got {_kind(raw)}"))
        return ()
    out = []
    for index, entry in enumerate(raw):
        entry_path = f"{path}[{index}]"
        if not isinstance(entry, Mapping) or "task" not in entry:
            problems.append(
                Problem(
                    entry_path, "a Dag entry needs a `task`", "write `- task: {id: ..., type: ...}`"
                )
            )
            continue
        task = _build_task(entry["task"], f"{entry_path}.task", registry, defaults, problems)
        rest = {k: v for k, v in entry.items() if k != "task"}
        try:
            shell = msgspec.convert({**rest, "task": {"id": "_", "type": "_"}}, DagTask)
        except msgspec.ValidationError as exc:
            problems.append(_from_validation(exc, entry_path))
            continue
        if task is not None:
            out.append(msgspec.structs.replace(shell, task=task))
    return tuple(out)


def _yaml_field(cls: type[Task], field: str) -> str:
    for info in msgspec.structs.fields(cls):
        if info.name == field:
            return info.encode_name
    raise KeyError(field)


def _plugin_defaults(raw: Any, problems: list[Problem]) -> list[PluginDefault]:
    if not raw:
        return []
    try:
        return msgspec.convert(raw, list[PluginDefault])
    except msgspec.ValidationError as exc:
        problems.append(_from_validation(exc, "pluginDefaults"))
        return []


def _apply_defaults(
    props: dict[str, Any], type_name: str, defaults: Sequence[PluginDefault]
) -> dict[str, Any]:
    """Kestra's rule: a default applies to tasks whose type starts with its ``type``;
    task values win unless the default is ``forced``."""
    for default in defaults:
        if not (type_name == default.type or type_name.startswith(default.type.rstrip(".") + ".")):
            continue
        props = _merge(props, default.values) if default.forced else _merge(default.values, props)
    return props


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


_DOLLAR_PATH = re.compile(r"^\$")


def _from_validation(exc: msgspec.ValidationError, prefix: str) -> Problem:
    message = str(exc)
    path = prefix
    if " - at `$" in message:
        message, _, where = message.rpartition(" - at `")
        suffix = _DOLLAR_PATH.sub("", where.rstrip("`"))
        path = f"{prefix}{suffix}" if prefix else suffix.lstrip(".")
    message = message.replace("Object contains unknown field", "unknown field")
    return Problem(path, message[:1].lower() + message[1:])


def _kind(value: Any) -> str:
    return {
        dict: "a mapping",
        list: "a list",
        str: "a string",
        int: "an integer",
        float: "a number",
        bool: "a boolean",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)
