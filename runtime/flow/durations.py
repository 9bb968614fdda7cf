"""ISO-8601 durations as Kestra writes them (java.time.Duration): ``PT1.5S``, ``P1D``,
``PT1H30M``, ``P2DT3H``. Years and months are refused: they have no fixed length."""

from __future__ import annotations

import re
from datetime import timedelta

_PATTERN = re.compile(
    r"""^(?P<sign>[-+]?)P
        (?:(?P<weeks>[-+]?\d+)W)?
        (?:(?P<days>[-+]?\d+)D)?
        (?:T
          (?:(?P<hours>[-+]?\d+)H)?
          (?:(?P<minutes>[-+]?\d+)M)?
          (?:(?P<seconds>[-+]?\d+(?:[.,]\d{1,9})?)S)?
        )?$""",
    re.VERBOSE | re.IGNORECASE,
)


class DurationError(ValueError):
    """Not an ISO-8601 duration."""


def parse_duration(text: object) -> timedelta:
    """Parse ``PT1.5S`` and friends; DurationError with a hint when malformed."""
    if isinstance(text, timedelta):
        return text
    if not isinstance(text, str):
        raise DurationError(f"expected an ISO-8601 duration such as PT30S, got {text!r}")
    match = _PATTERN.match(text.strip())
    if (
        match is None
        or text.strip().upper().endswith("T")
        or not any(match.group(g) for g in ("weeks", "days", "hours", "minutes", "seconds"))
    ):
        raise DurationError(
            f"{text!r} is not an ISO-8601 duration: write e.g. PT30S (30 seconds), "
            "PT5M (5 minutes), PT1H30M, P1D (1 day) or PT0.5S"
        )
    parts = {k: v for k, v in match.groupdict().items() if k != "sign" and v}
    seconds = float(parts.pop("seconds", "0").replace(",", "."))
    value = timedelta(
        weeks=int(parts.get("weeks", 0)),
        days=int(parts.get("days", 0)),
        hours=int(parts.get("hours", 0)),
        minutes=int(parts.get("minutes", 0)),
        seconds=seconds,
    )
    return -value if match.group("sign") == "-" else value


def format_duration(value: timedelta) -> str:
    """The ISO-8601 form of ``value`` as java.time.Duration prints it (``PT1M30S``)."""
    total = value.total_seconds()
    if total == 0:
        return "PT0S"
    sign = "-" if total < 0 else ""
    total = abs(total)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    out = f"{sign}PT"
    if hours:
        out += f"{int(hours)}H"
    if minutes:
        out += f"{int(minutes)}M"
    if seconds:
        out += f"{seconds:g}S" if seconds != int(seconds) else f"{int(seconds)}S"
    return out
