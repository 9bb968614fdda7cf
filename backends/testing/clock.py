"""A wall clock the test moves by hand, so leases, TTLs and delays need no sleeping."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

#: where every ManualClock starts unless told otherwise (whole seconds, UTC)
START = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


class ManualClock:
    """A ``Clock`` (callable returning aware UTC datetimes) that only moves when the
    test calls ``advance`` or ``set``. Backends under test are built with one."""

    def __init__(self, start: datetime = START) -> None:
        self._now = _aware(start)

    def __call__(self) -> datetime:
        return self._now

    def advance(self, seconds: float) -> datetime:
        """Move forward (never back) and return the new time."""
        if seconds < 0:
            raise ValueError(f"ManualClock.advance({seconds}): time only moves forward")
        self._now += timedelta(seconds=seconds)
        return self._now

    def set(self, when: datetime) -> None:
        """Jump to ``when`` (not before the current time)."""
        when = _aware(when)
        if when < self._now:
            raise ValueError(f"ManualClock.set({when.isoformat()}): time only moves forward")
        self._now = when

    def after(self, seconds: float) -> datetime:
        """The time ``seconds`` from now, without moving."""
        return self._now + timedelta(seconds=seconds)


def _aware(when: datetime) -> datetime:
    if when.tzinfo is None:
        raise ValueError(f"ManualClock needs a timezone-aware datetime, got {when.isoformat()}")
    return when.astimezone(UTC)
