"""The PublicHoliday condition (``holidays`` calendars) on Flow and Schedule triggers."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from backends.testing.clock import ManualClock
from runtime.flow.parse import parse_flow as load_flow
from services import holidays_calendar
from services.flows import deploy_source
from services.trigger_conditions import schedule_allows
from tests.services.test_scheduler import NS, Bench

HOLIDAY = "io.kestra.plugin.core.condition.PublicHoliday"


@pytest.mark.parametrize(
    ("day", "country", "subdivision", "expected"),
    [
        (date(2024, 12, 25), "GB", None, True),
        (date(2024, 10, 3), "DE", None, True),  # German Unity Day
        (date(2024, 10, 4), "DE", None, False),
        (date(2024, 1, 6), "DE", "BY", True),  # Epiphany: Bavaria only
        (date(2024, 1, 6), "DE", None, False),
        (date(2024, 1, 6), "de", "DE-BY", True),  # lower case, ISO 3166-2 written whole
        (date(2024, 5, 1), "FR", None, True),
        (date(2024, 5, 2), "FR", None, False),
    ],
)
def test_is_holiday_follows_the_country_and_subdivision(
    day: date, country: str, subdivision: str | None, expected: bool
) -> None:
    assert holidays_calendar.is_holiday(day, country, subdivision) is expected


def test_an_unknown_country_does_not_hold_and_no_country_is_the_locales(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert holidays_calendar.is_holiday(date(2024, 1, 1), "ZZ", None) is False
    monkeypatch.setenv("LC_ALL", "fr_FR.UTF-8")
    assert holidays_calendar.default_country() == "FR"
    assert holidays_calendar.is_holiday(date(2024, 7, 14), None, None) is True
    monkeypatch.setenv("LC_ALL", "C")
    monkeypatch.delenv("LC_TIME", raising=False)
    monkeypatch.setenv("LANG", "C.UTF-8")
    assert holidays_calendar.default_country() == "US"
    assert holidays_calendar.is_holiday(date(2024, 7, 4), None, None) is True


def _flow(conditions: str) -> str:
    return f"""
id: workdays
namespace: {NS}
tasks:
  - id: hello
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.date }}}}"
triggers:
  - id: daily
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "0 9 * * *"
    conditions:
{conditions}
"""


_WORKDAYS = f"""      - type: io.kestra.plugin.core.condition.Not
        conditions:
          - type: {HOLIDAY}
            country: FR
          - type: io.kestra.plugin.core.condition.Weekend
"""


def test_schedule_conditions_read_the_date_in_the_triggers_zone() -> None:
    flow = load_flow(_flow(_WORKDAYS))
    [condition] = flow.triggers[0].conditions
    # 14 July 2030 00:30 in Paris is still 13 July in UTC: the local day is the one tested
    paris = datetime.fromisoformat("2030-07-14T00:30:00+02:00")
    assert schedule_allows(condition, flow, paris) is False
    assert schedule_allows(condition, flow, datetime(2030, 7, 12, 9, tzinfo=UTC)) is True
    explicit = {"type": HOLIDAY, "date": "{{ trigger.date }}", "country": "{{ vars.country }}"}
    flow = load_flow(_flow(_WORKDAYS).replace("triggers:", "variables:\n  country: FR\ntriggers:"))
    assert schedule_allows(explicit, flow, paris) is True


@pytest.mark.asyncio
async def test_a_schedule_skips_the_dates_its_conditions_refuse(tmp_path: Path) -> None:
    bench = Bench("memory", ManualClock(datetime(2030, 12, 23, 10, tzinfo=UTC)), tmp_path)
    await bench.backend.start()
    try:
        await deploy_source(bench.backend.flows, _flow(_WORKDAYS))
        scheduler = bench.scheduler()
        assert await bench.tick(scheduler) == 0
        fired = 0
        for day in range(24, 31):  # Tue 24 .. Mon 30 December 2030
            fired += await bench.tick(scheduler, datetime(2030, 12, day, 9, 0, 1, tzinfo=UTC))
        # Christmas (25th) is a holiday in France, the 28th and 29th a weekend
        assert await bench.dates("workdays") == [
            "2030-12-24T09:00:00Z",
            "2030-12-26T09:00:00Z",
            "2030-12-27T09:00:00Z",
            "2030-12-30T09:00:00Z",
        ]
        assert fired == 4
        state = await bench.backend.triggers.get(NS, "workdays", "daily")
        assert state is not None
        assert state.next_date == datetime(2030, 12, 31, 9, tzinfo=UTC)
    finally:
        await bench.backend.stop()
