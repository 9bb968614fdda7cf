"""A stand-in for the ``kestra`` Python library, put on PYTHONPATH of Python script
tasks when the real one is not installed, so scripts written for Kestra run as is.

It prints the lines the worker reads: ``::{"outputs": ...}::``,
``::{"metrics": [...]}::`` and ``::{"logs": [...]}::``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable
from typing import Any


class Kestra:
    """The subset of the ``kestra`` library's API that talks to the worker."""

    _logger: logging.Logger | None = None

    @staticmethod
    def _send(message: dict[str, Any]) -> None:
        print("::" + json.dumps(message, default=str) + "::", flush=True)

    @staticmethod
    def outputs(values: dict[str, Any]) -> None:
        """Publish ``values`` as the task's ``vars`` outputs."""
        Kestra._send({"outputs": values})

    @staticmethod
    def counter(name: str, value: float, tags: dict[str, str] | None = None) -> None:
        Kestra._send(
            {"metrics": [{"name": name, "type": "counter", "value": value, "tags": tags or {}}]}
        )

    @staticmethod
    def timer(
        name: str, duration: float | Callable[[], Any], tags: dict[str, str] | None = None
    ) -> None:
        """Record ``duration`` seconds, or time the call of ``duration``."""
        if callable(duration):
            start = time.perf_counter()
            duration()
            duration = time.perf_counter() - start
        Kestra._send(
            {"metrics": [{"name": name, "type": "timer", "value": duration, "tags": tags or {}}]}
        )

    @staticmethod
    def logger() -> logging.Logger:
        """A logger whose records reach the task's logs at their level."""
        if Kestra._logger is None:
            logger = logging.getLogger("Kestra")
            logger.setLevel(logging.DEBUG)
            handler = logging.StreamHandler(sys.stdout)
            handler.setFormatter(_Formatter())
            logger.addHandler(handler)
            logger.propagate = False
            Kestra._logger = logger
        return Kestra._logger


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        level = {"WARNING": "WARN", "CRITICAL": "ERROR"}.get(record.levelname, record.levelname)
        return (
            "::" + json.dumps({"logs": [{"level": level, "message": record.getMessage()}]}) + "::"
        )
