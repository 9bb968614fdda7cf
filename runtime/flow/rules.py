"""The semantic rules of a flow, beyond property types: Kestra's id patterns, limits,
cron expressions, time zones, Dag dependencies, inputs and their defaults, unique ids
and template syntax. Each rule reports to a :class:`Report` and never stops the others.
"""

from __future__ import annotations

import functools
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import msgspec

from runtime.flow.input_checks import check_input, check_type_name
from runtime.flow.model import (
    Concurrency,
    ConstantRetry,
    Dag,
    EachParallel,
    ExponentialRetry,
    Flow,
    FlowOutput,
    ForEach,
    Input,
    Parallel,
    RandomRetry,
    Subflow,
    Switch,
    Task,
    Trigger,
)
from runtime.flow.problems import Report, closest, join


@dataclass(frozen=True)
class IdRule:
    """Kestra's rule for one kind of id (a jakarta.validation pattern and size)."""

    what: str
    first: str  #: character class of the first character
    rest: str  #: character class of the others
    limit: int | None
    allowed: str  #: the same, for people

    def check(self, value: Any, path: str, report: Report) -> None:
        """Report ``value`` when it breaks this rule (non-strings are reported elsewhere)."""
        if not isinstance(value, str):
            return
        if not re.fullmatch(f"[{self.first}][{self.rest}]*", value):
            lowered = value.lower() if "A-Z" not in self.rest else value
            fixed = re.sub(f"[^{self.rest}]+", "_", lowered).strip("._-")
            example = f", e.g. `{fixed}`" if fixed else ""
            report.value(
                path, f"{self.what} {value!r} is not valid", f"use {self.allowed}{example}"
            )
        elif self.limit is not None and len(value) > self.limit:
            report.value(
                path,
                f"{self.what} is too long: {len(value)} characters",
                f"use at most {self.limit} characters",
            )


_START = "starting with a letter or digit"
TASK_ID = IdRule("task id", "a-zA-Z0-9", "a-zA-Z0-9_-", 256, f"letters, digits, `_`, `-`, {_START}")
TRIGGER_ID = IdRule("trigger id", TASK_ID.first, TASK_ID.rest, 256, TASK_ID.allowed)
FLOW_ID = IdRule(
    "flow id", "a-zA-Z0-9", "a-zA-Z0-9._-", 100, f"letters, digits, `.`, `_`, `-`, {_START}"
)
NAMESPACE = IdRule(
    "namespace", "a-z0-9", "a-z0-9._-", 150, f"lower-case letters, digits, `.`, `_`, `-`, {_START}"
)
INPUT_ID = IdRule(
    "input id", "a-zA-Z0-9", ".a-zA-Z0-9_-", None, f"letters, digits, `.`, `_`, `-`, {_START}"
)

SCHEDULE_TYPES = frozenset(
    {"io.kestra.plugin.core.trigger.Schedule", "io.kestra.core.models.triggers.types.Schedule"}
)
WEBHOOK_TYPES = frozenset(
    {"io.kestra.plugin.core.trigger.Webhook", "io.kestra.core.models.triggers.types.Webhook"}
)
CRON_NICKNAMES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: properties whose text is shown, never rendered
_NOT_TEMPLATES = frozenset({"description", "displayName"})

Rule = Callable[[type[msgspec.Struct], Mapping[str, Any], str, Report], None]


def check_struct(
    cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report
) -> None:
    """Run every rule that applies to ``cls`` on its checked properties ``props``."""
    for owner, rule in _RULES:
        if issubclass(cls, owner):
            rule(cls, props, path, report)


@functools.cache
def _fields(cls: type[msgspec.Struct]) -> dict[str, msgspec.structs.FieldInfo]:
    """The fields of ``cls`` by attribute name (msgspec resolves the annotations each
    time it is asked: a millisecond per task type otherwise)."""
    return {info.name: info for info in msgspec.structs.fields(cls)}


def _task(cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report) -> None:
    TASK_ID.check(props.get("id"), join(path, "id"), report)
    assert issubclass(cls, Task)
    fields = _fields(cls)
    for field, shape in cls.task_fields.items():
        info = fields[field]
        if info.required and shape in ("list", "dag") and props.get(info.encode_name) == []:
            report.value(
                join(path, info.encode_name),
                f"`{info.encode_name}` must list at least one task",
                "add a task, or remove this task if it has nothing to do",
            )


def _flow(cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report) -> None:
    FLOW_ID.check(props.get("id"), "id", report)
    NAMESPACE.check(props.get("namespace"), "namespace", report)
    _at_least(props, "revision", 1, "", report)


def _at_least(
    props: Mapping[str, Any], name: str, minimum: int, path: str, report: Report, hint: str = ""
) -> None:
    value = props.get(name)
    if isinstance(value, int) and value < minimum:
        zero = " (0 means no limit)" if minimum == 0 else ""
        report.value(
            join(path, name), f"`{name}` must be {minimum} or more{zero}, got {value}", hint or None
        )


def _concurrency(
    cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report
) -> None:
    hint = "set how many executions of this flow may run at the same time"
    _at_least(props, "limit", 1, path, report, hint)


def _retry(cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report) -> None:
    _at_least(props, "maxAttempt", 1, path, report, "count the first attempt too")
    low, high = (
        ("minInterval", "maxInterval") if cls is RandomRetry else ("interval", "maxInterval")
    )
    low_value, high_value = props.get(low), props.get(high)
    if (
        isinstance(low_value, timedelta)
        and isinstance(high_value, timedelta)
        and (low_value > high_value)
    ):
        report.value(join(path, low), f"`{low}` is longer than `{high}`", "swap them")


def _for_each(
    cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report
) -> None:
    _at_least(props, "concurrencyLimit", 0, path, report)


def _concurrent(
    cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report
) -> None:
    _at_least(props, "concurrent", 0, path, report)


def _switch(cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report) -> None:
    if not props.get("cases") and not props.get("defaults"):
        report.value(
            path,
            "a Switch needs tasks under `cases` or `defaults`",
            "add `cases: {value: [tasks]}` or `defaults: [tasks]`",
        )


def _dag(cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report) -> None:
    entries = props.get("tasks")
    if not isinstance(entries, list):
        return
    order: dict[str, int] = {}
    for index, entry in enumerate(entries):
        task = entry.get("task") if isinstance(entry, Mapping) else None
        if isinstance(task, Mapping) and isinstance(task.get("id"), str):
            order.setdefault(task["id"], index)
    graph: dict[str, list[str]] = {}
    edges: dict[tuple[str, str], str] = {}
    for task_id, index in order.items():
        depends = entries[index].get("dependsOn")
        graph[task_id] = []
        if not isinstance(depends, list):
            continue
        for position, dep in enumerate(depends):
            dep_path = f"{path}.tasks[{index}].dependsOn[{position}]"
            if not isinstance(dep, str):
                continue
            if dep not in order:
                suggestion = closest(dep, order)
                hint = (
                    f"did you mean `{suggestion}`?"
                    if suggestion
                    else f"tasks of this Dag: {', '.join(order)}"
                )
                report.value(dep_path, f"`dependsOn` names `{dep}`, not a task of this Dag", hint)
                continue
            graph[task_id].append(dep)
            edges.setdefault((task_id, dep), dep_path)
    for cycle in _cycles(graph, order):
        shown = " -> ".join([*cycle, cycle[0]])
        report.value(
            edges[(cycle[0], cycle[1 % len(cycle)])],
            f"dependency cycle: {shown}",
            "remove one of these `dependsOn` entries",
        )


def _cycles(graph: Mapping[str, list[str]], order: Mapping[str, int]) -> list[list[str]]:
    """Each distinct cycle of ``graph`` once, starting at its first declared task."""
    found: dict[frozenset[str], list[str]] = {}
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :]
                first = min(range(len(cycle)), key=lambda i: order[cycle[i]])
                cycle = cycle[first:] + cycle[:first]
                found.setdefault(frozenset(cycle), cycle)
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph, key=order.__getitem__):
        if node not in state:
            visit(node)
    return list(found.values())


def _input(cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report) -> None:
    INPUT_ID.check(props.get("id"), join(path, "id"), report)
    check_input(props, path, report, has_expression)


def _output(cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report) -> None:
    check_type_name(props.get("type"), join(path, "type"), report)


def _trigger(
    cls: type[msgspec.Struct], props: Mapping[str, Any], path: str, report: Report
) -> None:
    TRIGGER_ID.check(props.get("id"), join(path, "id"), report)
    timezone = props.get("timezone")
    if isinstance(timezone, str) and not _is_timezone(timezone):
        suggestion = closest(timezone, _timezones())
        hint = f"did you mean `{suggestion}`?" if suggestion else "use an IANA name such as UTC"
        report.value(join(path, "timezone"), f"unknown time zone {timezone!r}", hint)
    if props.get("type") in WEBHOOK_TYPES:
        key = props.get("key")
        if not isinstance(key, str) or not key.strip():
            report.value(
                path,
                "a Webhook trigger needs a `key`",
                "e.g. `key: a-long-random-string`: it is part of the webhook's URL",
            )
        return
    if props.get("type") not in SCHEDULE_TYPES:
        return
    cron = props.get("cron")
    if cron is None:
        report.value(path, "a Schedule trigger needs `cron`", 'e.g. `cron: "0 9 * * *"`')
    elif isinstance(cron, str):
        problem = cron_problem(cron, props.get("withSeconds") is True)
        if problem:
            report.value(join(path, "cron"), *problem)


def cron_problem(expression: str, with_seconds: bool = False) -> tuple[str, str] | None:
    """What is wrong with a Schedule's cron (message, hint), or None when it is valid."""
    from croniter import croniter  # type: ignore[import-untyped,unused-ignore]

    text = expression.strip()
    if text.startswith("@"):
        if text.lower() in CRON_NICKNAMES:
            return None
        return f"unknown cron nickname {text!r}", f"use one of {', '.join(CRON_NICKNAMES)}"
    fields = text.split()
    wanted = 6 if with_seconds else 5
    layout = "minute hour day-of-month month day-of-week"
    if len(fields) != wanted:
        if len(fields) == 6:
            hint = "a 6-field cron starts with seconds: add `withSeconds: true`"
        elif with_seconds:
            hint = f"with `withSeconds: true` write 6 fields: second {layout}"
        else:
            hint = f"write 5 fields: {layout}, e.g. `0 9 * * 1-5`"
        return f"invalid cron {expression!r}: {wanted} fields expected, got {len(fields)}", hint
    try:
        croniter(text, second_at_beginning=with_seconds)
    except Exception as exc:  # croniter raises several kinds; all mean "invalid"
        return f"invalid cron {expression!r}: {exc}", f"the fields are: {layout}"
    return None


def _is_timezone(name: str) -> bool:
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        return False
    return True


@functools.cache
def _timezones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


_RULES: tuple[tuple[type[msgspec.Struct] | tuple[type[msgspec.Struct], ...], Rule], ...] = (
    (Task, _task),
    (Flow, _flow),
    (Concurrency, _concurrency),
    ((ConstantRetry, ExponentialRetry, RandomRetry), _retry),
    (ForEach, _for_each),
    ((Parallel, EachParallel, Dag), _concurrent),
    (Dag, _dag),
    (Switch, _switch),
    (Input, _input),
    (FlowOutput, _output),
    (Trigger, _trigger),
)


# -- the whole flow ----------------------------------------------------------------
def check_unique(ids: Sequence[tuple[str, str]], what: str, report: Report, hint: str = "") -> None:
    """Report each id of ``ids`` ((id, path) pairs, in order) seen before."""
    first: dict[str, str] = {}
    for value, path in ids:
        if value in first:
            where = f"first used at {report.where(first[value])}"
            report.value(path, f"duplicate {what} `{value}`", f"{where}; {hint}" if hint else where)
        else:
            first[value] = path


def check_flow_wide(
    data: Mapping[str, Any],
    task_ids: Sequence[tuple[str, str]],
    subflows: Sequence[tuple[Subflow, str]],
    report: Report,
) -> None:
    """Rules over the whole flow: unique ids, input references, self-calls."""
    check_unique(task_ids, "task id", report, "task ids must be unique in the whole flow")
    for group, what in (
        ("triggers", "trigger id"),
        ("inputs", "input id"),
        ("outputs", "output id"),
    ):
        check_unique(_ids(data, group), what, report)
    input_ids = {value for value, _ in _ids(data, "inputs")}
    for index, item in enumerate(data.get("inputs") or ()):
        depends = item.get("dependsOn") if isinstance(item, Mapping) else None
        names = depends.get("inputs") if isinstance(depends, Mapping) else None
        for position, name in enumerate(names if isinstance(names, list) else ()):
            if isinstance(name, str) and name not in input_ids:
                suggestion = closest(name, input_ids)
                report.value(
                    f"inputs[{index}].dependsOn.inputs[{position}]",
                    f"`dependsOn` names `{name}`, which is not an input of this flow",
                    f"did you mean `{suggestion}`?" if suggestion else None,
                )
    for task, path in subflows:
        if task.namespace == data.get("namespace") and task.flow_id == data.get("id"):
            report.value(
                join(path, "flowId"),
                f"the Subflow task `{task.id}` starts its own flow",
                "a flow cannot call itself; move the shared tasks to another flow",
            )


def _ids(data: Mapping[str, Any], group: str) -> list[tuple[str, str]]:
    items = data.get(group)
    out = []
    for index, item in enumerate(items if isinstance(items, list) else ()):
        if not isinstance(item, Mapping):
            continue
        key = "id" if "id" in item else "name"
        if isinstance(item.get(key), str):
            out.append((item[key], f"{group}[{index}].{key}"))
    return out


def has_expression(value: str) -> bool:
    """Whether ``value`` holds a template expression (``{{ }}``, ``{% %}``)."""
    from runtime.flow import template  # lazily: the templating stack is heavy

    return template.has_expression(value)


def check_templates(data: Any, report: Report, path: str = "") -> None:
    """Report the syntax errors of every template string in ``data``."""
    from runtime.flow import template

    if isinstance(data, Mapping):
        for key, value in data.items():
            if key not in _NOT_TEMPLATES:
                check_templates(value, report, join(path, str(key)))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            check_templates(value, report, f"{path}[{index}]")
    elif isinstance(data, str) and template.has_expression(data):
        for error in template.syntax_errors(data):
            report.value(
                path,
                f"template syntax error: {error.message}",
                "check the `{{ }}` and `{% %}` pairs and the expression inside",
                inside=(error.line, error.column or 1),
            )
