"""Public holidays for the ``PublicHoliday`` condition, from the ``holidays`` package.

Kestra uses the Jollyday calendars; ``holidays`` covers the same countries (ISO
3166-1 alpha-2) and their subdivisions (ISO 3166-2 codes without the country
prefix, e.g. ``DE`` / ``BE``). Without a country Kestra takes the JVM locale's; here
it is the process locale's territory (``LC_ALL``, ``LC_TIME`` or ``LANG``), else
``US`` (what a JVM reports under the POSIX locale).
"""

from __future__ import annotations

import functools
import os
from datetime import date
from typing import Any

import holidays

from runtime.log import get_logger

log = get_logger(__name__)

__all__ = ["default_country", "is_holiday"]


def default_country() -> str:
    for name in ("LC_ALL", "LC_TIME", "LANG"):
        value = os.environ.get(name, "")
        language = value.split(".", 1)[0]
        if "_" in language:
            return language.split("_", 1)[1].upper()
    return "US"


@functools.lru_cache(maxsize=64)
def _calendar(country: str, subdivision: str | None) -> Any:
    return holidays.country_holidays(country, subdiv=subdivision)


def is_holiday(day: date, country: Any, subdivision: Any) -> bool:
    """Whether ``day`` is a public holiday in ``country`` (and ``subdivision``).
    An unknown country or subdivision is logged and does not hold."""
    code = str(country).strip().upper() if country not in (None, "") else default_country()
    sub = None if subdivision in (None, "") else str(subdivision).strip().upper()
    if sub is not None and sub.startswith(f"{code}-"):
        sub = sub[len(code) + 1 :]  # ISO 3166-2 written whole: DE-BE
    try:
        return day in _calendar(code, sub)
    except NotImplementedError as exc:
        log.warning("trigger.public_holiday_unknown", country=code, subdivision=sub, error=str(exc))
        return False
