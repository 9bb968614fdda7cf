"""The filter that keeps aiokafka's reconnect errors from flooding the log."""

from __future__ import annotations

import logging

import pytest

from backends.kafka import quiet


def _record(message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("aiokafka.conn", level, __file__, 1, message, args, None)


def test_repeats_are_dropped_and_counted_on_the_next_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = [100.0]
    monkeypatch.setattr(quiet.time, "monotonic", lambda: now[0])
    repeats = quiet.Repeats(interval=30)
    template = "Unable connect to node with id %s: %s"
    assert repeats.filter(_record(template, 1, "refused")) is True
    assert [repeats.filter(_record(template, 1, "refused")) for _ in range(5)] == [False] * 5
    # another kind of line is not held back by the first kind's repeats
    assert repeats.filter(_record("Unable to update metadata from %s", [1])) is True
    # info lines (group joins) always pass
    assert repeats.filter(_record(template, 1, "x", level=logging.INFO)) is True
    now[0] += 31
    again = _record(template, 1, "refused")
    assert repeats.filter(again) is True
    assert again.getMessage() == (
        "Unable connect to node with id 1: refused (5 more like it in the last 30 s not logged)"
    )


def test_every_aiokafka_logger_gets_the_filter_once() -> None:
    quiet.quiet_aiokafka()
    quiet.quiet_aiokafka()
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.consumer.fetcher"):
        assert logging.getLogger(name).filters.count(quiet._installed) == 1
