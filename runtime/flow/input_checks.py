"""Checks of flow inputs: the type name, the settings each type needs, ranges, and
whether ``defaults`` is a value of the input's type (expressions are left alone)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from typing import Any

from runtime.flow.durations import DurationError, parse_duration
from runtime.flow.problems import Report, closest, describe_value, join

#: Kestra's input types (io.kestra.core.models.flows.Type)
INPUT_TYPES = (
    "STRING",
    "INT",
    "FLOAT",
    "BOOLEAN",
    "BOOL",
    "DATETIME",
    "DATE",
    "TIME",
    "DURATION",
    "JSON",
    "URI",
    "FILE",
    "SELECT",
    "MULTISELECT",
    "ARRAY",
    "SECRET",
    "ENUM",
    "EMAIL",
    "YAML",
)
_CHOICES = {"SELECT": ("values",), "ENUM": ("values",), "MULTISELECT": ("values", "options")}
_EMAIL = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s]+")
_INT = re.compile(r"[-+]?\d+")
_TRUE_FALSE = ("true", "false")

HasExpression = Callable[[str], bool]


def check_type_name(value: Any, path: str, report: Report) -> bool:
    """Report an unknown input type; True when ``value`` is a known one."""
    if not isinstance(value, str) or value in INPUT_TYPES:
        return isinstance(value, str)
    suggestion = closest(value.upper(), INPUT_TYPES)
    known = f"valid types: {', '.join(INPUT_TYPES)}"
    hint = f"did you mean `{suggestion}`? {known}" if suggestion else known
    report.value(path, f"unknown input type {value!r}", hint)
    return False


def check_input(
    props: Mapping[str, Any], path: str, report: Report, has_expression: HasExpression
) -> None:
    """Every rule of one input, given its checked properties."""
    kind = props.get("type", "STRING")
    if not check_type_name(kind, join(path, "type"), report):
        return
    choices = _CHOICES.get(kind)
    if choices and not any(props.get(name) for name in choices) and not props.get("expression"):
        report.value(
            path,
            f"a {kind} input needs `values`",
            "list the choices: `values: [a, b]`",
        )
    if kind == "ARRAY":
        item_type = props.get("itemType")
        if item_type is None:
            report.value(path, "an ARRAY input needs `itemType`", "e.g. `itemType: STRING`")
        else:
            check_type_name(item_type, join(path, "itemType"), report)
    _check_range(kind, props, path, report)
    default = props.get("defaults")
    if default is None or (isinstance(default, str) and has_expression(default)):
        return
    expected = default_problem(kind, default, props)
    if expected:
        report.value(
            join(path, "defaults"),
            f"`defaults` is not a valid {kind} value: {describe_value(default)}",
            f"{_article(kind)} {kind} input takes {expected}",
        )
        return
    _check_default_in_range(kind, default, props, path, report)


def default_problem(kind: str, value: Any, props: Mapping[str, Any]) -> str | None:
    """What a ``kind`` input expects when ``value`` is not a valid value of it, else None."""
    check = _DEFAULTS.get(kind)
    if check is None:
        return None
    expected, valid = check
    if kind in _CHOICES:
        allowed = [v for name in _CHOICES[kind] for v in (props.get(name) or ())]
        if not allowed or props.get("allowCustomValue"):
            return None
        items = value if kind == "MULTISELECT" and isinstance(value, list) else [value]
        if kind == "MULTISELECT" and not isinstance(value, list | str):
            return "a list of values"
        bad = [item for item in items if item not in allowed]
        return f"one of {', '.join(map(str, allowed))}" if bad else None
    if kind == "ARRAY":
        item_type = props.get("itemType")
        if not isinstance(value, list):
            return "a list"
        if not isinstance(item_type, str) or item_type not in _DEFAULTS:
            return None
        bad_item = any(default_problem(item_type, item, {}) for item in value)
        return f"a list of {item_type} values" if bad_item else None
    return None if valid(value) else expected


def _parses(parser: Callable[[str], Any], *types: type) -> Callable[[Any], bool]:
    def check(value: Any) -> bool:
        if isinstance(value, types):
            return True
        if not isinstance(value, str):
            return False
        try:
            parser(value)
        except (ValueError, DurationError):
            return False
        return True

    return check


def _is_int(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and bool(_INT.fullmatch(value)))


def _is_float(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) or _parses(float)(value)


def _is_datetime(value: Any) -> bool:
    return isinstance(value, datetime) or (
        isinstance(value, str) and "T" in value.upper() and _parses(datetime.fromisoformat)(value)
    )


def _is_json(value: Any) -> bool:
    return not isinstance(value, str) or _parses(json.loads)(value)


_DEFAULTS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "STRING": ("a string", lambda v: isinstance(v, str | int | float)),
    "SECRET": ("a string", lambda v: isinstance(v, str | int | float)),
    "URI": ("a URI string", lambda v: isinstance(v, str)),
    "FILE": ("a file URI string", lambda v: isinstance(v, str)),
    "EMAIL": (
        "an email address such as ops@example.com",
        lambda v: isinstance(v, str) and bool(_EMAIL.fullmatch(v)),
    ),
    "INT": ("an integer such as 42", _is_int),
    "FLOAT": ("a number such as 1.5", _is_float),
    "BOOLEAN": ("true or false", lambda v: isinstance(v, bool) or str(v).lower() in _TRUE_FALSE),
    "BOOL": ("true or false", lambda v: isinstance(v, bool) or str(v).lower() in _TRUE_FALSE),
    "DATETIME": ("an ISO-8601 date-time such as 2024-01-31T09:30:00Z", _is_datetime),
    "DATE": ("an ISO-8601 date such as 2024-01-31", _parses(date.fromisoformat, date)),
    "TIME": ("a time such as 09:30:00", _parses(time.fromisoformat, time)),
    "DURATION": ("an ISO-8601 duration such as PT30S", _parses(parse_duration, timedelta)),
    "JSON": ("a JSON document", _is_json),
    "SELECT": ("one of its values", lambda v: True),
    "ENUM": ("one of its values", lambda v: True),
    "MULTISELECT": ("a list of its values", lambda v: True),
    "ARRAY": ("a list", lambda v: True),
}


def _bound(kind: str, value: Any) -> Any:
    """``value`` as a comparable bound of a ``kind`` input, or None."""
    try:
        if kind in ("INT", "FLOAT") and _is_float(value):
            return float(value)
        if kind == "DURATION":
            return parse_duration(value)
        if kind == "DATETIME" and isinstance(value, str):
            return datetime.fromisoformat(value)
        if kind == "DATE" and isinstance(value, str):
            return date.fromisoformat(value)
        if kind == "TIME" and isinstance(value, str):
            return time.fromisoformat(value)
    except (ValueError, DurationError):
        return None
    return value if isinstance(value, datetime | date | time | timedelta) else None


def _bounds(kind: str) -> tuple[str, str]:
    return ("after", "before") if kind in ("DATETIME", "DATE", "TIME") else ("min", "max")


def _check_range(kind: str, props: Mapping[str, Any], path: str, report: Report) -> None:
    low_name, high_name = _bounds(kind)
    low, high = props.get(low_name), props.get(high_name)
    low_value, high_value = _bound(kind, low), _bound(kind, high)
    for name, raw, parsed in ((low_name, low, low_value), (high_name, high, high_value)):
        if raw is not None and parsed is None and kind in _RANGED:
            report.value(
                join(path, name),
                f"`{name}` is not a valid {kind} value: {describe_value(raw)}",
                f"{_article(kind)} {kind} input takes {_DEFAULTS[kind][0]}",
            )
    try:
        inverted = low_value is not None and high_value is not None and low_value > high_value
    except TypeError:  # naive and aware date-times
        inverted = False
    if inverted:
        report.value(
            join(path, low_name),
            f"`{low_name}` ({low}) is greater than `{high_name}` ({high})",
            "swap them",
        )


_RANGED = frozenset({"INT", "FLOAT", "DURATION", "DATETIME", "DATE", "TIME"})


def _check_default_in_range(
    kind: str, default: Any, props: Mapping[str, Any], path: str, report: Report
) -> None:
    if kind not in _RANGED:
        return
    low_name, high_name = _bounds(kind)
    value = _bound(kind, default)
    low, high = _bound(kind, props.get(low_name)), _bound(kind, props.get(high_name))
    try:
        below = value is not None and low is not None and value < low
        above = value is not None and high is not None and value > high
    except TypeError:
        return
    if below or above:
        name = low_name if below else high_name
        report.value(
            join(path, "defaults"),
            f"`defaults` ({default}) is {'below' if below else 'above'} `{name}` "
            f"({props.get(name)})",
            f"choose a default within `{low_name}` and `{high_name}`",
        )


def _article(kind: str) -> str:
    return "an" if kind[0] in "AEFIMSU" and not kind.startswith("US") else "a"
