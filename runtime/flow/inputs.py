"""Turn the inputs given to a new execution into typed, checked values.

Values are kept JSON-friendly, as Kestra keeps them in an execution: dates, times
and durations as ISO-8601 strings, JSON and YAML inputs parsed. Inputs the flow
does not declare are ignored. Every problem is reported at once, each naming its
input.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any
from urllib.parse import urlparse

import yaml

from runtime.flow import template
from runtime.flow.durations import DurationError, format_duration, parse_duration
from runtime.flow.model import Flow, Input

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


class InputError(ValueError):
    """Some inputs are missing or invalid; ``problems`` maps input id -> message."""

    def __init__(self, problems: dict[str, str]) -> None:
        self.problems = problems
        super().__init__(
            "; ".join(f"input {name!r}: {message}" for name, message in problems.items())
        )


def resolve_inputs(
    flow: Flow, provided: Mapping[str, Any], *, now: datetime | None = None
) -> dict[str, Any]:
    """The execution's inputs: ``provided`` values, else the declared defaults.

    Template defaults (``{{ now() }}``) are rendered with the flow and the inputs
    resolved so far; ``now`` fixes the time they see.
    """
    problems: dict[str, str] = {}
    resolved: dict[str, Any] = {}
    for spec in flow.inputs:
        if spec.id in provided and provided[spec.id] is not None:
            raw = provided[spec.id]
        else:
            raw = spec.defaults
            if isinstance(raw, str) and template.has_expression(raw):
                try:
                    raw = _render_default(flow, raw, resolved, now)
                except template.TemplateError as exc:
                    problems[spec.id] = f"its default could not be rendered: {exc.reason}"
                    continue
        if raw is None or raw == "":
            if spec.required:
                problems[spec.id] = "is required"
            else:
                resolved[spec.id] = None
            continue
        try:
            resolved[spec.id] = convert(spec, raw)
        except ValueError as exc:
            problems[spec.id] = str(exc)
    if problems:
        raise InputError(problems)
    return resolved


def _render_default(flow: Flow, raw: str, resolved: dict[str, Any], now: datetime | None) -> Any:
    variables = {
        "flow": {"id": flow.id, "namespace": flow.namespace, "revision": flow.revision},
        "inputs": resolved,
        "vars": flow.variables,
    }
    if now is None:
        return template.render(raw, variables)
    with template.fixed_now(now):
        return template.render(raw, variables)


def convert(spec: Input, raw: Any) -> Any:
    """One input value of ``spec``'s type; ValueError says what is wrong."""
    kind = spec.type.upper()
    converter = _CONVERTERS.get(kind)
    if converter is None:
        raise ValueError(f"has an unknown type {spec.type!r}")
    return converter(spec, raw)


def _string(spec: Input, raw: Any) -> str:
    if not isinstance(raw, (str, int, float)) or isinstance(raw, bool):
        raise ValueError(f"expected a string, got {_kind(raw)}")
    value = str(raw)
    if spec.validator and not re.fullmatch(spec.validator, value):
        raise ValueError(f"{value!r} does not match the pattern {spec.validator!r}")
    return value


def _email(spec: Input, raw: Any) -> str:
    value = _string(spec, raw)
    if not _EMAIL.match(value):
        raise ValueError(f"{value!r} is not an email address")
    return value


def _uri(spec: Input, raw: Any) -> str:
    value = _string(spec, raw)
    parsed = urlparse(value)
    if not parsed.scheme or not (parsed.netloc or parsed.path):
        raise ValueError(f"{value!r} is not a URI (e.g. https://example.com/data.csv)")
    return value


def _int(spec: Input, raw: Any) -> int:
    if isinstance(raw, bool):
        raise ValueError("expected an integer, got a boolean")
    try:
        value = int(raw) if not isinstance(raw, float) or raw.is_integer() else None
    except (TypeError, ValueError):
        value = None
    if value is None:
        raise ValueError(f"expected an integer, got {raw!r}")
    _check_range(spec, value, int)
    return value


def _float(spec: Input, raw: Any) -> float:
    if isinstance(raw, bool):
        raise ValueError("expected a number, got a boolean")
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {raw!r}") from None
    _check_range(spec, value, float)
    return value


def _boolean(spec: Input, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in ("true", "false"):
        return raw.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {raw!r}")


def _datetime(spec: Input, raw: Any) -> str:
    try:
        value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    except ValueError:
        raise ValueError(
            f"expected an ISO-8601 date-time such as 2024-01-31T12:00:00Z, got {raw!r}"
        ) from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    _check_order(spec, value, lambda b: _as_datetime(b))
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _as_datetime(raw: Any) -> datetime:
    value = raw if isinstance(raw, datetime) else datetime.fromisoformat(str(raw))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _date(spec: Input, raw: Any) -> str:
    try:
        value = raw if isinstance(raw, date) else date.fromisoformat(str(raw))
    except ValueError:
        raise ValueError(f"expected an ISO-8601 date such as 2024-01-31, got {raw!r}") from None
    _check_order(spec, value, lambda b: b if isinstance(b, date) else date.fromisoformat(str(b)))
    return value.isoformat()


def _time(spec: Input, raw: Any) -> str:
    try:
        value = raw if isinstance(raw, time) else time.fromisoformat(str(raw))
    except ValueError:
        raise ValueError(f"expected an ISO-8601 time such as 13:45:00, got {raw!r}") from None
    _check_order(spec, value, lambda b: b if isinstance(b, time) else time.fromisoformat(str(b)))
    return value.isoformat()


def _duration(spec: Input, raw: Any) -> str:
    try:
        value = parse_duration(raw)
    except DurationError as exc:
        raise ValueError(str(exc)) from None
    _check_range(spec, value, parse_duration)
    return format_duration(value)


#: bounds of a JSON or YAML input's value, as of a flow's YAML: a few lines of YAML
#: aliases expand to billions of values once the execution is stored ("billion
#: laughs"), and a recursive alias to no end
_MAX_DEPTH = 200
_MAX_VALUES = 1_000_000
_TOO_BIG = "nests too deeply or expands too many aliases: send a plain, smaller document"


def _bounded(value: Any) -> Any:
    """``value`` unless it holds more than _MAX_VALUES values (an alias counted each
    time it is used) or nests deeper than _MAX_DEPTH (ValueError)."""
    count = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        count += 1
        if count > _MAX_VALUES or depth > _MAX_DEPTH:
            raise ValueError(_TOO_BIG)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return value


def _json(spec: Input, raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"is not valid JSON: {exc.msg} at character {exc.pos}") from None
        except RecursionError:
            raise ValueError(_TOO_BIG) from None
    return _bounded(raw)


def _yaml(spec: Input, raw: Any) -> Any:
    if isinstance(raw, str):
        try:
            raw = yaml.safe_load(raw)
        except yaml.YAMLError as exc:
            raise ValueError(f"is not valid YAML: {exc}") from None
        except RecursionError:
            raise ValueError(_TOO_BIG) from None
    return _bounded(raw)


def _choices(spec: Input) -> list[Any]:
    return list(spec.values or spec.options or [])


def _select(spec: Input, raw: Any) -> Any:
    choices = _choices(spec)
    if spec.allow_custom_value or raw in choices:
        return raw
    raise ValueError(f"{raw!r} is not one of {choices}")


def _multiselect(spec: Input, raw: Any) -> list[Any]:
    values = _list(raw)
    choices = _choices(spec)
    wrong = [v for v in values if v not in choices]
    if wrong and not spec.allow_custom_value:
        raise ValueError(f"{wrong} not among {choices}")
    return values


def _array(spec: Input, raw: Any) -> list[Any]:
    values = _list(raw)
    item_type = (spec.item_type or "STRING").upper()
    item_spec = Input(id=spec.id, type=item_type)
    out = []
    for index, item in enumerate(values):
        try:
            out.append(convert(item_spec, item))
        except ValueError as exc:
            raise ValueError(f"item {index}: {exc}") from None
    return out


def _file(spec: Input, raw: Any) -> str:
    if not isinstance(raw, str) or not raw:
        raise ValueError("expected an uploaded file (its internal storage URI)")
    return raw


def _list(raw: Any) -> list[Any]:
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError:
            raise ValueError(f"expected a list or a JSON array, got {raw!r}") from None
        except RecursionError:
            raise ValueError(_TOO_BIG) from None
    if not isinstance(raw, list):
        raise ValueError(f"expected a list, got {_kind(raw)}")
    _bounded(raw)
    return raw


def _check_range(spec: Input, value: Any, parse: Callable[[Any], Any]) -> None:
    if spec.min is not None and value < parse(spec.min):
        raise ValueError(f"{value!r} is below the minimum {spec.min!r}")
    if spec.max is not None and value > parse(spec.max):
        raise ValueError(f"{value!r} is above the maximum {spec.max!r}")


def _check_order(spec: Input, value: Any, parse: Callable[[Any], Any]) -> None:
    if spec.after is not None and not value > parse(spec.after):
        raise ValueError(f"must be after {spec.after}")
    if spec.before is not None and not value < parse(spec.before):
        raise ValueError(f"must be before {spec.before}")


def _kind(value: Any) -> str:
    return type(value).__name__ if value is not None else "nothing"


_CONVERTERS: dict[str, Callable[[Input, Any], Any]] = {
    "STRING": _string,
    "SECRET": _string,
    "EMAIL": _email,
    "URI": _uri,
    "INT": _int,
    "FLOAT": _float,
    "BOOLEAN": _boolean,
    "BOOL": _boolean,
    "DATETIME": _datetime,
    "DATE": _date,
    "TIME": _time,
    "DURATION": _duration,
    "JSON": _json,
    "YAML": _yaml,
    "SELECT": _select,
    "ENUM": _select,
    "MULTISELECT": _multiselect,
    "ARRAY": _array,
    "FILE": _file,
}
