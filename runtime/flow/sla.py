"""A flow's ``sla`` entries (Kestra's service level agreements), read for the engine.

``MAX_DURATION`` (``duration``) is violated when the execution still runs that long
after it started; ``EXECUTION_ASSERTION`` (``assert``, an expression) when it renders
false as the execution ends. A violation adds the entry's ``labels`` and applies its
``behavior``: ``FAIL`` or ``CANCEL`` end the execution so (killing what still runs),
``NONE`` (the default) only labels it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from runtime.flow.durations import DurationError, parse_duration
from runtime.flow.model import Flow


def entry(flow: Flow, index: int) -> dict[str, Any]:
    return dict(flow.sla[index]) if 0 <= index < len(flow.sla) else {}


def max_durations(flow: Flow, report: Callable[[str], None]) -> Iterator[tuple[int, timedelta]]:
    """(index, duration) of each MAX_DURATION entry; a bad duration is reported."""
    for index, item in enumerate(flow.sla):
        if str(item.get("type", "")).upper() != "MAX_DURATION":
            continue
        try:
            yield index, parse_duration(item.get("duration"))
        except (DurationError, TypeError, ValueError) as exc:
            report(f"sla {item.get('id')!r}: `duration` is not an ISO-8601 duration: {exc}")


def assertions(flow: Flow) -> Iterator[dict[str, Any]]:
    for item in flow.sla:
        if str(item.get("type", "")).upper() == "EXECUTION_ASSERTION":
            yield dict(item)


def labels(item: dict[str, Any]) -> dict[str, str]:
    raw = item.get("labels") or {}
    if isinstance(raw, list):
        return {str(x.get("key")): str(x.get("value")) for x in raw if isinstance(x, dict)}
    return {str(k): str(v) for k, v in dict(raw).items()}
