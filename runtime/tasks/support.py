"""Helpers the core tasks share: log levels, durations, JSON checks."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any, Final

from runtime.flow.durations import DurationError, parse_duration
from runtime.tasks.context import RunContext, TaskFailure

#: Kestra's log levels, most verbose first
LEVELS: Final = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR")
_ALIASES: Final = {"WARNING": "WARN", "FATAL": "ERROR", "CRITICAL": "ERROR"}


def normalize_level(level: Any, *, where: str) -> str:
    """A Kestra level name (``WARNING`` is ``WARN``); TaskFailure naming ``where`` if unknown."""
    name = str(level).strip().upper()
    name = _ALIASES.get(name, name)
    if name not in LEVELS:
        raise TaskFailure(f"{where}: unknown log level {level!r}; use one of {', '.join(LEVELS)}")
    return name


def log_at(ctx: RunContext, level: str, message: str) -> None:
    """Log ``message`` at a Kestra level name through the task's logger."""
    if level == "INFO":
        ctx.log.info(message)
    elif level == "ERROR":
        ctx.log.error(message)
    elif level == "WARN":
        ctx.log.warning(message)
    elif level == "DEBUG":
        ctx.log.debug(message)
    else:
        ctx.log.log(level, message)


def seconds(value: Any, *, where: str) -> float | None:
    """A duration (timedelta, ISO-8601 text, or a number of seconds) in seconds."""
    if value is None or value == "":
        return None
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_duration(value).total_seconds()
    except DurationError as exc:
        raise TaskFailure(f"{where}: {exc}") from None


def as_bool(value: Any, *, where: str) -> bool:
    """A rendered boolean property: true/false, in any case, or a bool."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no", "", "none", "null"):
        return False
    raise TaskFailure(f"{where}: expected true or false, got {value!r}")


def json_value(value: Any, *, where: str) -> Any:
    """``value`` as plain JSON data (tuples become lists); TaskFailure if it is not JSON."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise TaskFailure(f"{where}: the value is not JSON-serialisable ({exc})") from None
