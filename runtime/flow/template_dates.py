"""Dates for Kestra's temporal filters: java.time patterns and arithmetic on datetimes.

Inputs are converted like Kestra does: ISO-8601 strings (with ``Z``, an offset, an
optional ``[Zone/Id]`` suffix, or none), date-only strings (start of day), integers
as epoch seconds, and datetimes. Output is always converted to the target zone,
which is the ``timeZone`` argument or UTC (Kestra uses the server's zone; servers
run in UTC). Patterns follow ``java.time.format.DateTimeFormatter`` with English
names; localized styles (``full``, ``long``, ``medium``, ``short``) and the letters
``W``, ``F``, ``g`` are not supported and say so.
"""

from __future__ import annotations

import calendar
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from runtime.flow.template_values import ExpressionFailure, is_number, kind_of

_MONTHS = [calendar.month_name[i] for i in range(1, 13)]
_DAYS = [calendar.day_name[i] for i in range(7)]
_OFFSET_RE = re.compile(r"(?:UTC|GMT)?([+-])(\d{1,2})(?::?(\d{2}))?(?::?(\d{2}))?")
_ZONE_SUFFIX_RE = re.compile(r"(.*)\[([^\]]+)\]")
_PATTERN_LETTERS = "GuyYDMLdQqwEecahKkHmsSAnNVvzOXxZ"
_UNSUPPORTED_LETTERS = "WFBgp"

# Kestra's named formats; `iso` is also the default output of date, dateAdd and now().
PRESETS = {
    "iso": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX",
    "iso_sec": "yyyy-MM-dd'T'HH:mm:ssXXX",
    "sql": "yyyy-MM-dd HH:mm:ss.SSSSSS",
    "sql_seq": "yyyy-MM-dd HH:mm:ss",
    "iso_local_date": "yyyy-MM-dd",
}

_UNIT_SECONDS = {
    "NANOS": 1e-9,
    "MICROS": 1e-6,
    "MILLIS": 1e-3,
    "SECONDS": 1,
    "MINUTES": 60,
    "HOURS": 3600,
    "HALF_DAYS": 43200,
}
_UNIT_MONTHS = {"MONTHS": 1, "YEARS": 12, "DECADES": 120, "CENTURIES": 1200, "MILLENNIA": 12000}


def zone(name: str | None) -> tzinfo:
    """The zone for a ``timeZone`` argument: an IANA id, ``Z``/``UTC`` or an offset."""
    if name is None or name in ("Z", "UTC", "GMT", "UT"):
        return UTC
    if not isinstance(name, str):
        raise ExpressionFailure(f"timeZone must be a string, not a {kind_of(name)}")
    match = _OFFSET_RE.fullmatch(name)
    if match:
        sign, hours, minutes, seconds = match.groups()
        delta = timedelta(hours=int(hours), minutes=int(minutes or 0), seconds=int(seconds or 0))
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ExpressionFailure(
            f"unknown time zone `{name}`; use an IANA id such as `Europe/Paris` or an offset"
        ) from None


def to_datetime(value: Any, tz: tzinfo, existing_format: str | None = None) -> datetime:
    """Convert a filter input to an aware datetime (naive values are placed in `tz`)."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=tz)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, 12, tzinfo=tz)
    if is_number(value):
        return datetime.fromtimestamp(float(value), tz)
    if not isinstance(value, str):
        raise ExpressionFailure(f"a {kind_of(value)} is not a date")
    if existing_format is not None:
        return _parse_with_pattern(value, existing_format, tz)
    text = value.strip()
    zone_id: tzinfo | None = None
    suffix = _ZONE_SUFFIX_RE.fullmatch(text)
    if suffix:
        text, zone_id = suffix.group(1), zone(suffix.group(2))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise ExpressionFailure(
            f"`{value}` is not an ISO-8601 date; pass existingFormat to parse other layouts"
        ) from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=zone_id or tz)
    return parsed.astimezone(zone_id) if zone_id else parsed


def add(moment: datetime, amount: int, unit: str) -> datetime:
    """``ZonedDateTime.plus(amount, ChronoUnit.valueOf(unit))``."""
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise ExpressionFailure(f"dateAdd amount must be an integer, not a {kind_of(amount)}")
    unit_name = str(unit).upper()
    if unit_name in _UNIT_SECONDS:
        # Time units are exact durations: add on the instant, not the wall clock.
        tz = moment.tzinfo
        step = timedelta(seconds=amount * _UNIT_SECONDS[unit_name])
        return (moment.astimezone(UTC) + step).astimezone(tz)
    if unit_name in ("DAYS", "WEEKS"):
        local = moment.replace(tzinfo=None) + timedelta(
            days=amount * (7 if unit_name == "WEEKS" else 1)
        )
        return local.replace(tzinfo=moment.tzinfo)
    if unit_name in _UNIT_MONTHS:
        months = moment.year * 12 + moment.month - 1 + amount * _UNIT_MONTHS[unit_name]
        year, month = divmod(months, 12)
        if not 1 <= year <= 9999:
            raise ExpressionFailure("dateAdd went past the supported years 1 to 9999")
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        return moment.replace(year=year, month=month + 1, day=day)
    raise ExpressionFailure(
        f"unknown dateAdd unit `{unit}`; use one of NANOS, MICROS, MILLIS, SECONDS, MINUTES, "
        "HOURS, HALF_DAYS, DAYS, WEEKS, MONTHS, YEARS, DECADES, CENTURIES, MILLENNIA"
    )


def epoch(moment: datetime, per_second: int) -> int:
    """Whole units since the epoch (1 = seconds, 1000 = milliseconds, ...)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    micros = (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds
    return micros * per_second // 1_000_000


def format_date(moment: datetime, fmt: str | None, tz: tzinfo) -> str:
    """Format `moment` in zone `tz` with a Kestra preset or a java.time pattern."""
    local = moment.astimezone(tz)
    name = "iso" if fmt is None else fmt
    if name in PRESETS:
        return _format_pattern(local, PRESETS[name])
    if name in _ISO_FORMATS:
        return _ISO_FORMATS[name](local)
    if name in ("full", "long", "medium", "short"):
        raise ExpressionFailure(
            f"the localized date style `{name}` is not supported; use a pattern"
        )
    return _format_pattern(local, name)


# ---- java.time patterns -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Field:
    letter: str
    count: int


@functools.lru_cache(maxsize=256)
def _compile_pattern(pattern: str) -> tuple[_Field | str, ...]:
    parts: list[_Field | str] = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "'":
            end = pattern.find("'", i + 1)
            while end != -1 and pattern.startswith("''", end):
                end = pattern.find("'", end + 2)
            if end == -1:
                raise ExpressionFailure(f"unclosed quote in date pattern `{pattern}`")
            parts.append(pattern[i + 1 : end].replace("''", "'") if end > i + 1 else "'")
            i = end + 1
        elif char.isascii() and char.isalpha():
            if char in _UNSUPPORTED_LETTERS:
                raise ExpressionFailure(
                    f"pattern letter `{char}` is not supported (in `{pattern}`)"
                )
            if char not in _PATTERN_LETTERS:
                raise ExpressionFailure(f"unknown pattern letter `{char}` in `{pattern}`")
            count = 1
            while i + count < len(pattern) and pattern[i + count] == char:
                count += 1
            parts.append(_Field(char, count))
            i += count
        elif char in "#{}":
            raise ExpressionFailure(f"reserved character `{char}` in date pattern `{pattern}`")
        else:
            if char not in "[]":  # optional sections: every field is available when formatting
                parts.append(char)
            i += 1
    return tuple(parts)


def _format_pattern(moment: datetime, pattern: str) -> str:
    out: list[str] = []
    for part in _compile_pattern(pattern):
        out.append(part if isinstance(part, str) else _format_field(moment, part))
    return "".join(out)


def _pad(number: int, count: int) -> str:
    return f"{number:0{count}d}" if number >= 0 else f"-{-number:0{count}d}"


def _format_field(moment: datetime, field: _Field) -> str:
    letter, count = field.letter, field.count
    if letter in "yu":
        return f"{moment.year % 100:02d}" if count == 2 else _pad(moment.year, count)
    if letter == "Y":
        year = moment.isocalendar().year
        return f"{year % 100:02d}" if count == 2 else _pad(year, count)
    if letter in "ML":
        return _text_or_number(moment.month, count, _MONTHS[moment.month - 1])
    if letter == "d":
        return _pad(moment.day, count)
    if letter == "D":
        return _pad(moment.timetuple().tm_yday, count)
    if letter in "Qq":
        quarter = (moment.month - 1) // 3 + 1
        if count >= 3:
            return f"Q{quarter}" if count == 3 else f"{quarter}{_ordinal(quarter)} quarter"
        return _pad(quarter, count)
    if letter == "w":
        return _pad(moment.isocalendar().week, count)
    if letter in "Eec":
        day = _DAYS[moment.weekday()]
        if letter != "E" and count <= 2:
            return str((moment.weekday() + 1) % 7 + 1)  # US numbering, Sunday = 1
        return day if count == 4 else day[0] if count == 5 else day[:3]
    if letter == "a":
        return "AM" if moment.hour < 12 else "PM"
    if letter == "G":
        return "AD" if count <= 3 else "Anno Domini" if count == 4 else "A"
    if letter in "hKkH":
        hour = moment.hour
        value = {"H": hour, "k": hour or 24, "K": hour % 12, "h": hour % 12 or 12}[letter]
        return _pad(value, count)
    if letter == "m":
        return _pad(moment.minute, count)
    if letter == "s":
        return _pad(moment.second, count)
    if letter == "S":
        return f"{moment.microsecond * 1000:09d}"[:count].ljust(count, "0")
    if letter == "n":
        return _pad(moment.microsecond * 1000, count)
    if letter in "AN":
        since_midnight = (moment.hour * 3600 + moment.minute * 60 + moment.second) * 10**6
        micros = since_midnight + moment.microsecond
        return _pad(micros // 1000 if letter == "A" else micros * 1000, count)
    return _format_zone(moment, letter, count)


def _format_zone(moment: datetime, letter: str, count: int) -> str:
    offset = moment.utcoffset() or timedelta(0)
    if letter == "V":
        key = getattr(moment.tzinfo, "key", None)
        return key if isinstance(key, str) else _offset(offset, "XXX")
    if letter in "zv":
        return moment.tzname() or _offset(offset, "XXX")
    if letter == "O":
        if not offset:
            return "GMT"
        text = _offset(offset, "xxx")
        return "GMT" + (
            text if count == 4 else text[0] + str(int(text[1:3])) + _short_minutes(text)
        )
    if letter == "Z":
        if count == 4:
            return "GMT" + _offset(offset, "xxx") if offset else "GMT"
        return _offset(offset, "XXX" if count == 5 else "xx")
    if count > 5:
        raise ExpressionFailure(f"too many pattern letters `{letter * count}`")
    return _offset(offset, letter * count)


def _short_minutes(text: str) -> str:
    return "" if text[4:6] == "00" else ":" + text[4:6]


def _offset(offset: timedelta, style: str) -> str:
    """Offsets for X/x patterns: X.. print ``Z`` for zero, x.. print ``+00``."""
    total = int(offset.total_seconds())
    if total == 0 and style[0] == "X":
        return "Z"
    sign = "-" if total < 0 else "+"
    hours, rest = divmod(abs(total), 3600)
    minutes, seconds = divmod(rest, 60)
    count, colon = len(style), ":" if len(style) in (3, 5) else ""
    text = f"{sign}{hours:02d}"
    if count == 1:
        return text + (f"{minutes:02d}" if minutes else "")
    text += f"{colon}{minutes:02d}"
    if count >= 4 and seconds:
        text += f"{colon}{seconds:02d}"
    return text


def _text_or_number(number: int, count: int, name: str) -> str:
    if count <= 2:
        return _pad(number, count)
    return name if count == 4 else name[0] if count == 5 else name[:3]


def _ordinal(number: int) -> str:
    return {1: "st", 2: "nd", 3: "rd"}.get(number, "th")


def _fraction(moment: datetime) -> str:
    return f".{moment.microsecond:06d}".rstrip("0") if moment.microsecond else ""


def _iso_time(moment: datetime) -> str:
    return moment.strftime("%H:%M:%S") + _fraction(moment)


def _iso_offset(moment: datetime) -> str:
    return _offset(moment.utcoffset() or timedelta(0), "XXXXX")


def _iso_zone(moment: datetime) -> str:
    key = getattr(moment.tzinfo, "key", None)
    return f"[{key}]" if isinstance(key, str) else ""


_ISO_FORMATS: dict[str, Callable[[datetime], str]] = {
    "iso_date": lambda m: m.strftime("%Y-%m-%d") + _iso_offset(m),
    "iso_time": lambda m: _iso_time(m) + _iso_offset(m),
    "iso_offset_time": lambda m: _iso_time(m) + _iso_offset(m),
    "iso_local_time": _iso_time,
    "iso_local_date_time": lambda m: m.strftime("%Y-%m-%dT") + _iso_time(m),
    "iso_date_time": lambda m: (
        m.strftime("%Y-%m-%dT") + _iso_time(m) + _iso_offset(m) + _iso_zone(m)
    ),
    "iso_zoned_date_time": lambda m: (
        m.strftime("%Y-%m-%dT") + _iso_time(m) + _iso_offset(m) + _iso_zone(m)
    ),
    "iso_instant": lambda m: m.astimezone(UTC).strftime("%Y-%m-%dT") + _iso_time(m) + "Z",
    "iso_ordinal_date": lambda m: m.strftime("%Y-%j") + _iso_offset(m),
    "iso_week_date": lambda m: "{}-W{:02d}-{}".format(*m.isocalendar()) + _iso_offset(m),
    "rfc_1123_date_time": lambda m: (
        f"{_DAYS[m.weekday()][:3]}, {m.day} "
        + f"{_MONTHS[m.month - 1][:3]} {m.year:04d} "
        + m.strftime("%H:%M:%S ")
        + ("GMT" if not m.utcoffset() else _offset(m.utcoffset() or timedelta(0), "xx"))
    ),
}


# ---- parsing with existingFormat ----------------------------------------------------


_NUMERIC_GROUPS = {"y": "year", "u": "year", "M": "month", "L": "month", "d": "day"}
_NUMERIC_GROUPS |= {"H": "hour", "k": "hour", "h": "hour12", "K": "hour12", "m": "minute"}
_NUMERIC_GROUPS |= {"s": "second", "D": "yday"}


def _field_regex(letter: str, count: int, pattern: str) -> tuple[str | None, str]:
    """The named group and regex that parse one pattern field."""
    if letter in "ML" and count >= 3:
        names = _MONTHS if count == 4 else [m[:3] for m in _MONTHS]
        return "monthname", "|".join(names)
    if letter in "yu":
        if count == 2:
            return "year2", r"\d{2}"
        return "year", r"[+-]?\d{4,9}" if count >= 4 else r"\d{1,9}"
    if letter in _NUMERIC_GROUPS:
        return _NUMERIC_GROUPS[letter], rf"\d{{{count}}}" if count >= 2 else r"\d{1,3}"
    if letter == "S":
        return "fraction", rf"\d{{{count}}}"
    if letter == "n":
        return "nanos", r"\d{1,9}"
    if letter == "a":
        return "ampm", "AM|PM"
    if letter == "E":
        return None, "|".join(_DAYS + [d[:3] for d in _DAYS])
    if letter in "XxZO":
        return "offset", r"Z|(?:GMT)?[+-]\d{2}(?::?\d{2})?(?::?\d{2})?|GMT"
    if letter in "Vz":
        return "zone", r"[A-Za-z][A-Za-z0-9_/+-]*"
    raise ExpressionFailure(f"pattern letter `{letter}` cannot be parsed (in `{pattern}`)")


@functools.lru_cache(maxsize=256)
def _parse_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    seen: set[str] = set()
    for part in _compile_pattern(pattern):
        if isinstance(part, str):
            out.append(re.escape(part))
            continue
        group, regex = _field_regex(part.letter, part.count, pattern)
        if group is None or group in seen:
            out.append(f"(?:{regex})")
        else:
            seen.add(group)
            out.append(f"(?P<{group}>{regex})")
    return re.compile("".join(out), re.IGNORECASE)


def _parse_with_pattern(text: str, pattern: str, tz: tzinfo) -> datetime:
    match = _parse_regex(pattern).fullmatch(text.strip())
    if match is None:
        raise ExpressionFailure(f"`{text}` does not match the date pattern `{pattern}`")
    fields = {name: value for name, value in match.groupdict().items() if value is not None}
    if "year2" in fields:
        fields["year"] = str(2000 + int(fields.pop("year2")))
    if "monthname" in fields:
        prefix = fields.pop("monthname")[:3].lower()
        fields["month"] = str([m[:3].lower() for m in _MONTHS].index(prefix) + 1)
    hour = int(fields.get("hour", 0))
    if "hour12" in fields:
        hour = int(fields["hour12"]) % 12 + (12 if fields.get("ampm", "").upper() == "PM" else 0)
    micro = int(fields.get("fraction", "0").ljust(6, "0")[:6]) + int(fields.get("nanos", 0)) // 1000
    try:
        if "yday" in fields and "month" not in fields:
            base = date(int(fields["year"]), 1, 1) + timedelta(days=int(fields["yday"]) - 1)
            fields |= {"month": str(base.month), "day": str(base.day)}
        moment = datetime(
            int(fields["year"]),
            int(fields["month"]),
            int(fields["day"]),
            hour,
            int(fields.get("minute", 0)),
            int(fields.get("second", 0)),
            micro,
        )
    except KeyError as exc:
        raise ExpressionFailure(
            f"the pattern `{pattern}` has no {exc.args[0]}; a date needs a year, month and day"
        ) from None
    except ValueError as exc:
        raise ExpressionFailure(f"`{text}` is not a valid date: {exc}") from None
    if "offset" in fields:
        offset = fields["offset"].upper().removeprefix("GMT")
        return moment.replace(tzinfo=zone(offset) if offset not in ("", "Z") else UTC)
    if "zone" in fields:
        return moment.replace(tzinfo=zone(fields["zone"]))
    return moment.replace(tzinfo=tz)
