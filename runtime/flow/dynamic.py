"""Dynamic properties: an expression where a typed value is expected.

Since Kestra 0.20 most typed task properties (durations, numbers, booleans, retry
settings...) may be written as an expression, rendered when the task runs:
``delay: "{{ inputs.delay }}"``. The loader keeps such a property's raw value in
the task's ``dynamic`` map (static parts are still checked at load time) and puts
a harmless placeholder in the typed field; :func:`resolve` renders the raw values
and converts them to the field's type just before the task is used (the worker for
runnable tasks, the engine for flowables, pauses and timeouts). A rendered value of
the wrong type fails the task run with :class:`DynamicPropertyError`, naming the
task, the property, the value and the expression it came from.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Awaitable, Callable, Mapping
from datetime import timedelta
from typing import Any, TypeVar, Union, get_args, get_origin

import msgspec
import yaml

from runtime.flow.problems import Report
from runtime.flow.template import has_expression
from runtime.flow.validate import INVALID, Checker, struct_fields

T = TypeVar("T", bound=msgspec.Struct)

#: properties every task has that Kestra reads before rendering anything: they stay
#: literal (an expression there is reported at load time, as before)
STATIC_PROPERTIES = frozenset(
    {
        "id",
        "type",
        "description",
        "disabled",
        "allowFailure",
        "allowWarning",
        "logToFile",
        "logLevel",
        "workerGroup",
        "version",
        "taskCache",
    }
)


class DynamicPropertyError(ValueError):
    """A dynamic property rendered to a value its field cannot take."""


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and has_expression(value)


def accepts_text(tp: Any) -> bool:
    """Whether a field of type ``tp`` takes a string as it is (no rendering needed
    to know its type)."""
    if tp is Any or tp is object or tp is str:
        return True
    if get_origin(tp) in (Union, types.UnionType):
        return any(accepts_text(arg) for arg in get_args(tp))
    return False


def placeholder(tp: Any) -> Any:
    """A value of type ``tp`` that passes the load-time checks; never used, as
    :func:`resolve` replaces it before the task runs."""
    options = [arg for arg in get_args(tp) if arg is not type(None)] or [tp]
    first = options[0]
    origin = get_origin(first) or first
    if first is timedelta:
        return timedelta(seconds=1)
    if first is bool:
        return False
    if first is int:
        return 1
    if first is float:
        return 1.0
    if isinstance(first, type) and issubclass(first, enum.Enum):
        return next(iter(first)).value
    if origin in (list, tuple):
        return []
    if origin is dict:
        return {}
    return None


def _coerce(rendered: Any, raw: Any) -> Any:
    """Rendered text of an expression read as Kestra's Jackson would: ``"3"`` as a
    number, ``"true"`` as a boolean, ``"[1, 2]"`` as a list."""
    if isinstance(raw, str) and has_expression(raw) and isinstance(rendered, str):
        try:
            value = yaml.safe_load(rendered)
        except yaml.YAMLError:
            return rendered
        if isinstance(value, bool | int | float | list | dict):
            return value
        return rendered
    if isinstance(raw, Mapping) and isinstance(rendered, Mapping):
        return {k: _coerce(v, raw.get(k)) for k, v in rendered.items()}
    if isinstance(raw, list) and isinstance(rendered, list) and len(raw) == len(rendered):
        return [_coerce(v, r) for v, r in zip(rendered, raw, strict=True)]
    return rendered


def _convert(task: T, rendered: Mapping[str, Any]) -> T:
    fields = struct_fields(type(task))
    changes: dict[str, Any] = {}
    for name, value in rendered.items():
        info = fields[name]
        raw = task.dynamic.get(name)  # type: ignore[attr-defined]
        report = Report(None)
        checked = Checker(report).value(value, info.type, name, name)
        if checked is INVALID or report.problems:
            reason = "; ".join(p.message for p in report.problems) or "wrong type"
            raise DynamicPropertyError(
                f"task {task.id!r}: property `{name}` rendered to {value!r} from {raw!r}: "  # type: ignore[attr-defined]
                f"{reason}; fix the expression or the values it reads"
            )
        try:
            changes[info.name] = msgspec.convert(checked, info.type)
        except msgspec.ValidationError as exc:
            raise DynamicPropertyError(
                f"task {task.id!r}: property `{name}` rendered to {value!r} from {raw!r}: {exc}"  # type: ignore[attr-defined]
            ) from None
    return msgspec.structs.replace(task, **changes)


def resolve(task: T, render: Callable[[Any], Any]) -> T:
    """``task`` with its dynamic properties rendered (synchronously) and typed."""
    dynamic: Mapping[str, Any] = getattr(task, "dynamic", None) or {}
    if not dynamic:
        return task
    rendered = {name: _coerce(render(raw), raw) for name, raw in dynamic.items()}
    return _convert(task, rendered)


async def resolve_async(task: T, render: Callable[[Any], Awaitable[Any]]) -> T:
    """``task`` with its dynamic properties rendered (on the worker) and typed."""
    dynamic: Mapping[str, Any] = getattr(task, "dynamic", None) or {}
    if not dynamic:
        return task
    rendered = {name: _coerce(await render(raw), raw) for name, raw in dynamic.items()}
    return _convert(task, rendered)
