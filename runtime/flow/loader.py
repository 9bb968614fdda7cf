"""Build the typed flow model from plain data (the YAML document as dicts and lists).

Each task's ``type`` is resolved through the task registry, plugin defaults are
applied, then every property is checked (:mod:`runtime.flow.validate`) and the
semantic rules run (:mod:`runtime.flow.rules`). Every problem found is collected with
its path (``tasks[2].retry.interval``); the parser (:mod:`runtime.flow.parse`) passes
the positions that turn those paths into lines and columns.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import msgspec

from runtime.flow import dynamic as dynamic_props
from runtime.flow import rules
from runtime.flow.model import DagTask, Flow, Input, PluginDefault, Subflow, Task, TaskKind
from runtime.flow.problems import FlowError, Positions, Problem, Report, describe_value, join
from runtime.flow.registry import TaskRegistry, UnknownTaskTypeError, default_registry
from runtime.flow.validate import Checker, struct_fields, yaml_name

__all__ = ["FlowError", "Problem", "build_flow", "check_flow"]

DYNAMIC_FIELD = "$dynamic"
_FLOW_TASK_GROUPS = ("tasks", "errors", "finally", "afterExecution")
_TASK_EXAMPLE = "e.g. `- id: hello` then `type: io.kestra.plugin.core.log.Log`"


def build_flow(data: Any, registry: TaskRegistry | None = None) -> Flow:
    """Convert a parsed YAML document into a :class:`Flow`; FlowError lists every problem."""
    flow, problems = check_flow(data, registry)
    if flow is None:
        raise FlowError(problems)
    return flow


def check_flow(
    data: Any, registry: TaskRegistry | None = None, positions: Positions | None = None
) -> tuple[Flow | None, list[Problem]]:
    """The flow built from ``data`` (None when it has problems) and every problem."""
    report = Report(positions)
    flow = _Builder(report, registry or default_registry()).flow(data)
    problems = report.problems
    return (None if problems else flow), problems


class _Builder:
    """Walks one flow document, building what is valid and reporting the rest."""

    def __init__(self, report: Report, registry: TaskRegistry) -> None:
        self.report = report
        self.registry = registry
        self.checker = Checker(report)
        self.defaults: list[tuple[str, PluginDefault]] = []
        self.task_ids: list[tuple[str, str]] = []
        self.subflows: list[tuple[Subflow, str]] = []

    def flow(self, data: Any) -> Flow | None:
        if not isinstance(data, Mapping):
            self.report.value(
                "",
                f"a flow must be a mapping of properties, got {describe_value(data)}",
                "start with `id:`, `namespace:` and `tasks:`",
            )
            return None
        body = dict(data)
        defaults_key = "pluginDefaults"
        if "taskDefaults" in body:
            if "pluginDefaults" in body:
                self.report.key(
                    "taskDefaults",
                    "both `taskDefaults` and `pluginDefaults` are set",
                    "`taskDefaults` is the old name of `pluginDefaults`: keep one",
                )
            else:
                defaults_key = "taskDefaults"
            body["pluginDefaults"] = body.pop("taskDefaults")
        self.defaults = self._plugin_defaults(body.get("pluginDefaults"), defaults_key)
        body["pluginDefaults"] = [default for _, default in self.defaults]
        if "tasks" in body and not body["tasks"] and isinstance(body["tasks"], list | None):
            self.report.value(
                "tasks", "`tasks` must list at least one task", f"add a task, {_TASK_EXAMPLE}"
            )
        groups = {
            group: self.tasks(body[group], group) for group in _FLOW_TASK_GROUPS if group in body
        }
        inputs = self._inputs(body.get("inputs"))
        skip = frozenset({*_FLOW_TASK_GROUPS, "pluginDefaults", "inputs"})
        origins = {"pluginDefaults": defaults_key}
        props = self.checker.struct(body, Flow, "", skip=skip, origins=origins)
        rules.check_flow_wide(data, self.task_ids, self.subflows, self.report)
        rules.check_templates(data, self.report)
        if not isinstance(props, dict) or len(self.report):
            return None
        props.update({group: [] for group in groups}, inputs=inputs)
        flow = self.checker.convert(props, Flow, "")
        if not isinstance(flow, Flow):
            return None
        return msgspec.structs.replace(
            flow,
            tasks=groups.get("tasks", ()),
            errors=groups.get("errors", ()),
            finally_=groups.get("finally", ()),
            after_execution=groups.get("afterExecution", ()),
        )

    def _inputs(self, raw: Any) -> list[Input]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.report.value("inputs", f"`inputs` must be a list, got {describe_value(raw)}")
            return []
        built = []
        for index, item in enumerate(raw):
            path = f"inputs[{index}]"
            origins = {}
            if isinstance(item, Mapping) and "name" in item and "id" not in item:
                # Kestra's deprecated spelling of the input id.
                origins["id"] = join(path, "name")
                item = {("id" if key == "name" else key): value for key, value in item.items()}
            props = self.checker.struct(item, Input, path, origins=origins)
            if isinstance(props, dict):
                value = self.checker.convert(props, Input, path)
                if isinstance(value, Input):
                    built.append(value)
        return built

    def _plugin_defaults(self, raw: Any, path: str) -> list[tuple[str, PluginDefault]]:
        if raw is None:
            return []
        if not isinstance(raw, list):
            self.report.value(path, f"`{path}` must be a list, got {describe_value(raw)}")
            return []
        out = []
        for index, item in enumerate(raw):
            built = self.checker.build(item, PluginDefault, f"{path}[{index}]")
            if isinstance(built, PluginDefault):
                out.append((f"{path}[{index}]", built))
        return out

    def tasks(self, items: Any, path: str, worker_parent: str = "") -> tuple[Task, ...]:
        """The tasks of the list ``items`` at ``path`` (the valid ones); inside a
        ``worker_parent`` (a runnable task type) only runnable tasks are allowed."""
        if items is None:
            return ()
        if not isinstance(items, list):
            name = path.rsplit(".", 1)[-1]
            self.report.value(
                path, f"`{name}` must be a list of tasks, got {describe_value(items)}"
            )
            return ()
        built = []
        for index, item in enumerate(items):
            task = self.task(item, f"{path}[{index}]")
            if task is None:
                continue
            if worker_parent and task.kind is not TaskKind.RUNNABLE:
                self.report.value(
                    f"{path}[{index}].type",
                    f"only runnable tasks can go inside {worker_parent}, not {task.type}",
                    "its children all run on one worker: move this task outside",
                )
            built.append(task)
        return tuple(built)

    def task(self, item: Any, path: str) -> Task | None:
        """The task ``item`` at ``path``, or None when it has problems (all reported)."""
        if not isinstance(item, Mapping):
            self.report.value(
                path,
                f"a task must be a mapping with `id` and `type`, got {describe_value(item)}",
                _TASK_EXAMPLE,
            )
            return None
        task_id = item.get("id")
        if isinstance(task_id, str | int) and not isinstance(task_id, bool):
            self.task_ids.append((str(task_id), join(path, "id")))
        cls = self._task_class(item, path)
        if cls is None:
            return None
        before = len(self.report)
        type_name = str(item["type"])
        props, origins = self._apply_defaults(item, type_name, cls)
        names = {field: yaml_name(cls, field) for field in cls.task_fields}
        what = f" for {type_name}"
        if DYNAMIC_FIELD in props:
            self.report.key(
                join(path, DYNAMIC_FIELD), f"unknown field `{DYNAMIC_FIELD}`{what}", "remove it"
            )
            return None
        hits: list[str] = []
        self.checker.on_expression = functools.partial(_dynamic_hit, hits)
        try:
            checked = self.checker.struct(
                props, cls, path, origins=origins, skip=frozenset(names.values()), what=what
            )
        finally:
            self.checker.on_expression = None
        dynamic = self._dynamic(props, hits, path, origins)
        children: dict[str, Any] = {}
        worker_parent = type_name if cls.kind is TaskKind.RUNNABLE else ""
        for field, shape in cls.task_fields.items():
            name = names[field]
            if name not in props:
                continue
            raw, child_path = props[name], origins.get(name) or join(path, name)
            if shape == "list":
                children[field] = self.tasks(raw, child_path, worker_parent)
            elif shape == "map":
                children[field] = self._task_map(raw, child_path)
            elif shape == "dag":
                children[field] = self._dag(raw, child_path)
        if not isinstance(checked, dict) or len(self.report) > before:
            return None
        for field, value in children.items():
            checked[names[field]] = {} if isinstance(value, dict) else []
        if dynamic:
            checked[DYNAMIC_FIELD] = dynamic
        task = self.checker.convert(checked, cls, path)
        if not isinstance(task, Task):
            return None
        if children:
            task = msgspec.structs.replace(task, **children)
        if isinstance(task, Subflow):
            self.subflows.append((task, path))
        return task

    def _dynamic(
        self, props: Mapping[str, Any], hits: list[str], path: str, origins: Mapping[str, str]
    ) -> dict[str, Any]:
        """The raw values of the properties holding an expression where a typed value
        is expected (reported as before for the few Kestra keeps literal)."""
        dynamic: dict[str, Any] = {}
        for key, value in props.items():
            key_path = origins.get(key) or join(path, str(key))
            if not any(
                hit == key_path or hit.startswith((key_path + ".", key_path + "[")) for hit in hits
            ):
                continue
            if key in dynamic_props.STATIC_PROPERTIES:
                self.report.value(
                    key_path,
                    f"`{key}` takes a literal value, got the expression {value!r}",
                    "expressions are not evaluated here: write the value itself",
                )
                continue
            dynamic[str(key)] = value
        return dynamic

    def _task_class(self, item: Mapping[str, Any], path: str) -> type[Task] | None:
        cls = self._resolve(item, path)
        if cls is None:  # the id is checked with the other properties otherwise
            if "id" not in item:
                self.report.value(path, "missing required field `id`", "every task needs an `id`")
            else:
                rules.TASK_ID.check(item["id"], join(path, "id"), self.report)
        return cls

    def _resolve(self, item: Mapping[str, Any], path: str) -> type[Task] | None:
        type_name = item.get("type")
        if type_name is None:
            self.report.value(
                path,
                "missing required field `type`",
                "every task needs a `type`, e.g. io.kestra.plugin.core.log.Log",
            )
            return None
        if not isinstance(type_name, str):
            self.report.value(
                join(path, "type"), f"`type` must be a string, got {describe_value(type_name)}"
            )
            return None
        try:
            return self.registry.resolve(type_name)
        except UnknownTaskTypeError as exc:
            hint = (
                f"did you mean `{exc.suggestion}`?"
                if exc.suggestion
                else "check the spelling: core Kestra tasks and installed plugins are known"
            )
            self.report.value(join(path, "type"), f"unknown task type {type_name!r}", hint)
            return None

    def _task_map(self, raw: Any, path: str) -> dict[str, tuple[Task, ...]]:
        if raw is None:
            return {}
        if not isinstance(raw, Mapping):
            name = path.rsplit(".", 1)[-1]
            self.report.value(
                path, f"`{name}` must be a mapping of lists of tasks, got {describe_value(raw)}"
            )
            return {}
        return {str(key): self.tasks(value, join(path, str(key))) for key, value in raw.items()}

    def _dag(self, raw: Any, path: str) -> tuple[DagTask, ...]:
        if raw is None:
            return ()
        if not isinstance(raw, list):
            self.report.value(
                path,
                f"`tasks` of a Dag must be a list of `task:` entries, got {describe_value(raw)}",
            )
            return ()
        out = []
        for index, entry in enumerate(raw):
            entry_path = f"{path}[{index}]"
            props = self.checker.struct(entry, DagTask, entry_path, skip=frozenset({"task"}))
            if not isinstance(entry, Mapping) or "task" not in entry:
                continue
            task = self.task(entry["task"], join(entry_path, "task"))
            if task is None or not isinstance(props, dict):
                continue
            placeholder = {"id": "_", "type": "_"}
            shell = self.checker.convert({**props, "task": placeholder}, DagTask, entry_path)
            if isinstance(shell, DagTask):
                out.append(msgspec.structs.replace(shell, task=task))
        return tuple(out)

    def _apply_defaults(
        self, item: Mapping[str, Any], type_name: str, cls: type[Task]
    ) -> tuple[dict[str, Any], dict[str, str]]:
        """Kestra's rule: a default applies to tasks whose type starts with its ``type``;
        task values win unless the default is ``forced``. Returns the properties and,
        for those that came from a default, the path of their source."""
        props = dict(item)
        origins: dict[str, str] = {}
        names = {type_name, cls.canonical_type, *cls.aliases}
        fields = struct_fields(cls)  # by YAML name
        for path, default in self.defaults:
            prefix = default.type.rstrip(".")
            exact = prefix in names
            if not exact and not any(name.startswith(prefix + ".") for name in names):
                continue
            for key, value in default.values.items():
                # A default for a whole package only sets the properties each type has.
                if key in ("id", "type") or (not exact and key not in fields):
                    continue
                if key in props and not default.forced:
                    if isinstance(value, Mapping) and isinstance(props[key], Mapping):
                        props[key] = _merge(value, props[key])
                    continue
                if isinstance(value, Mapping) and isinstance(props.get(key), Mapping):
                    props[key] = _merge(props[key], value)
                else:
                    props[key] = value
                origins[key] = join(path, f"values.{key}")
        return props, origins


def _dynamic_hit(hits: list[str], path: str, value: str, tp: Any) -> Any:
    hits.append(path)
    return dynamic_props.placeholder(tp)


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out
