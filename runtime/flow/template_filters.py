"""Kestra's expression filters, tests, operators and pure functions on plain data.

Every filter receives the value on its left. A missing value (undefined variable)
passes through untouched so that ``??`` and ``default`` can still replace it; a
null value makes most filters return null, as Kestra's do.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import functools
import hashlib
import json
import random
import re
import unicodedata
import urllib.parse
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

import msgspec
from jinja2 import Undefined

from runtime.flow import budget, jq_process
from runtime.flow import template_dates as dates
from runtime.flow.template_values import (
    ExpressionFailure,
    check_size,
    is_number,
    java_str,
    kind_of,
    require,
    to_json,
)

Filter = Callable[..., Any]

JAVA_WHITESPACE = "".join(chr(code) for code in range(33))  # what Java's trim() strips


# ---- strings ------------------------------------------------------------------------


def _text(value: Any, name: str) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, (Mapping, list, tuple)):
        raise ExpressionFailure(f"the `{name}` filter needs a string, not a {kind_of(value)}")
    return java_str(value)


def _capitalize(value: Any) -> str:
    text = _text(value, "capitalize")
    return text[:1].upper() + text[1:]


def _title(value: Any) -> str:
    out, start = [], True
    for char in _text(value, "title"):
        out.append(char.upper() if start else char)
        start = char.isspace()
    return "".join(out)


def _abbreviate(value: Any, length: int) -> str:
    text = _text(value, "abbreviate")
    if len(text) <= length:
        return text
    return text[: max(length - 3, 0)] + "..."


def _slugify(value: Any) -> str:
    # Kestra's rule: whitespace to dashes, strip accents and non-word characters,
    # underscores to dashes, squeeze and trim dashes, lowercase (ASCII word chars only).
    text = re.sub(r"\s", "-", java_str(value))
    text = unicodedata.normalize("NFD", text)
    text = re.sub(r"[^A-Za-z0-9_-]", "", text).replace("_", "-")
    return re.sub(r"-{2,}", "-", text).strip("-").lower()


def _java_replacement(replacement: str) -> Callable[[re.Match[str]], str]:
    """Expand Java's ``$1``/``${name}`` replacement syntax against a match."""

    def expand(match: re.Match[str]) -> str:
        out, i = [], 0
        while i < len(replacement):
            char = replacement[i]
            if char == "\\" and i + 1 < len(replacement):
                out.append(replacement[i + 1])
                i += 2
            elif char == "$" and replacement.startswith("{", i + 1):
                end = replacement.index("}", i)
                out.append(match.group(replacement[i + 2 : end]) or "")
                i = end + 1
            elif char == "$" and i + 1 < len(replacement) and replacement[i + 1].isdigit():
                out.append(match.group(int(replacement[i + 1])) or "")
                i += 2
            else:
                out.append(char)
                i += 1
        return "".join(out)

    return expand


def _replace(value: Any, replace_pairs: Any, regexp: bool = False) -> Any:
    if not isinstance(replace_pairs, Mapping):
        raise ExpressionFailure("`replace` takes a map of search: replacement pairs")
    if isinstance(value, Mapping):
        return {key: _replace(item, replace_pairs, regexp) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_replace(item, replace_pairs, regexp) for item in value]
    text = java_str(value)
    for search, replacement in replace_pairs.items():
        if regexp:
            text = budget.regex_sub(
                java_str(search), _java_replacement(java_str(replacement)), text
            )
        else:
            text = text.replace(java_str(search), java_str(replacement))
        check_size(text)
    return text


def split_regex(value: Any, delimiter: str, limit: int = 0) -> list[str]:
    text = _text(value, "split")
    parts = budget.regex_split(delimiter, text, max(limit - 1, 0) if limit > 0 else 0)
    if limit == 0:
        while parts and parts[-1] == "":
            parts.pop()
    return parts


def _substring_before(value: Any, separator: str) -> str:
    text = _text(value, "substringBefore")
    if not separator:
        return ""
    index = text.find(separator)
    return text if index < 0 else text[:index]


def _substring_after(value: Any, separator: str) -> str:
    text = _text(value, "substringAfter")
    index = text.find(separator)
    return "" if index < 0 else text[index + len(separator) :]


def _substring_before_last(value: Any, separator: str) -> str:
    text = _text(value, "substringBeforeLast")
    index = text.rfind(separator) if separator else -1
    return text if index < 0 else text[:index]


def _substring_after_last(value: Any, separator: str) -> str:
    text = _text(value, "substringAfterLast")
    index = text.rfind(separator) if separator else -1
    return "" if index < 0 else text[index + len(separator) :]


def _escape_char(value: Any, type: str) -> str:
    text = java_str(value)
    kind = str(type).lower()
    if kind == "single":
        return text.replace("'", "\\'")
    if kind == "double":
        return text.replace('"', '\\"')
    if kind == "shell":
        return text.replace("'", "'\\''")
    raise ExpressionFailure("`escapeChar` type must be 'single', 'double' or 'shell'")


def _indent(value: Any, amount: int, prefix: str = " ", *, first_line: bool = False) -> str:
    text = java_str(value)
    if not text:
        return text
    if not isinstance(amount, int) or amount < 0:
        raise ExpressionFailure("the indent amount must be an integer >= 0")
    newline = next((nl for nl in ("\r\n", "\n\r", "\n", "\r") if nl in text), "\n")
    pad = prefix * amount
    check_size(pad * (text.count(newline) + 1))
    if first_line:
        text = newline + text
    return text.replace(newline, newline + pad)


def _urlencode(value: Any) -> str:
    # Java's URLEncoder keeps `*` and encodes `~`.
    return urllib.parse.quote_plus(java_str(value), safe="*").replace("~", "%7E")


def _base64decode(value: Any) -> str:
    try:
        return base64.b64decode(_text(value, "base64decode"), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise ExpressionFailure(f"`base64decode` got invalid base64: {exc}") from None


def _digest(algorithm: str) -> Filter:
    def digest(value: Any) -> str:
        return hashlib.new(algorithm, java_str(value).encode()).hexdigest()

    return digest


# ---- collections --------------------------------------------------------------------


def _sequence(value: Any, name: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    raise ExpressionFailure(f"the `{name}` filter needs a list, not a {kind_of(value)}")


def _first(value: Any) -> Any:
    if isinstance(value, str):
        return value[:1]
    items = _sequence(value, "first")
    return items[0] if items else None


def _last(value: Any) -> Any:
    if isinstance(value, str):
        return value[-1:]
    items = _sequence(value, "last")
    return items[-1] if items else None


def _length(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, (str, list, tuple, Mapping)):
        return len(value)
    return 0


def _keys(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return list(value.keys())
    return list(range(len(_sequence(value, "keys"))))


def _values(value: Any) -> list[Any]:
    if isinstance(value, Mapping):
        return list(value.values())
    raise ExpressionFailure(f"the `values` filter needs a map, not a {kind_of(value)}")


def _sorted(value: Any, name: str, *, reverse: bool = False) -> list[Any]:
    try:
        return sorted(_sequence(value, name), reverse=reverse)
    except TypeError:
        raise ExpressionFailure(f"`{name}` cannot order values of different types") from None


def _reverse(value: Any) -> Any:
    if isinstance(value, str):
        return value[::-1]
    return _sequence(value, "reverse")[::-1]


def _slice(value: Any, fromIndex: int = 0, toIndex: int | None = None) -> Any:
    if not isinstance(value, str):
        value = _sequence(value, "slice")
    return value[fromIndex:toIndex]


def _merge(value: Any, other: Any) -> Any:
    if isinstance(value, Mapping) and isinstance(other, Mapping):
        return {**value, **other}
    if isinstance(value, (list, tuple)) and isinstance(other, (list, tuple)):
        return [*value, *other]
    raise ExpressionFailure(f"cannot merge a {kind_of(value)} with a {kind_of(other)}")


def _chunk(value: Any, size: int) -> list[list[Any]]:
    items = _sequence(value, "chunk")
    if not isinstance(size, int) or size <= 0:
        raise ExpressionFailure("the chunk size must be a positive integer")
    return [items[i : i + size] for i in range(0, len(items), size)]


def _distinct(value: Any) -> list[Any]:
    seen: set[str] = set()
    out = []
    for item in _sequence(value, "distinct"):
        key = to_json(item)
        if key not in seen:
            seen.add(key)
            out.append(item)
    return out


def _join(value: Any, separator: str = "") -> str:
    items = _sequence(value, "join")
    return check_size(java_str(separator).join(java_str(item) for item in items))


# ---- numbers ------------------------------------------------------------------------


def _abs(value: Any) -> Any:
    if not is_number(value):
        raise ExpressionFailure(f"the `abs` filter needs a number, not a {kind_of(value)}")
    return abs(value)


def _number(value: Any, type: str | None = None) -> Any:
    if not isinstance(value, str):
        raise ExpressionFailure(f"the `number` filter parses strings, not a {kind_of(value)}")
    text = value.strip()
    kind = (type or "").upper()
    try:
        if kind in ("INT", "LONG", "BIGINTEGER"):
            return int(text, 0) if text.lower().startswith(("0x", "-0x")) else int(text)
        if kind in ("FLOAT", "DOUBLE"):
            return float(text)
        if kind == "BIGDECIMAL":
            return Decimal(text)
        if kind:
            raise ExpressionFailure(
                f"unknown number type `{type}`; use INT, LONG, FLOAT, DOUBLE, BIGDECIMAL "
                "or BIGINTEGER"
            )
        if re.fullmatch(r"[+-]?(0[xX][0-9a-fA-F]+|\d+)", text):
            return int(text, 0) if "x" in text.lower() else int(text)
        return float(text)
    except (ValueError, InvalidOperation):
        raise ExpressionFailure(f"`{value}` is not a number") from None


def _number_format(value: Any, pattern: str) -> str:
    """A subset of java.text.DecimalFormat: ``0``, ``#``, ``,`` and ``.``."""
    if not is_number(value):
        raise ExpressionFailure(f"`numberFormat` needs a number, not a {kind_of(value)}")
    integer_part, _, fraction_part = pattern.partition(".")
    if re.search(r"[^0#,]", integer_part + fraction_part):
        raise ExpressionFailure(f"numberFormat supports only 0 # , . in patterns, got `{pattern}`")
    min_fraction = fraction_part.count("0")
    max_fraction = len(fraction_part)
    number = Decimal(repr(value) if isinstance(value, float) else value)
    rounded = number.quantize(Decimal(1).scaleb(-max_fraction), rounding=ROUND_HALF_EVEN)
    text = f"{abs(rounded):.{max_fraction}f}"
    whole, _, fraction = text.partition(".")
    fraction = fraction.rstrip("0").ljust(min_fraction, "0")
    whole = whole.lstrip("0").rjust(integer_part.count("0"), "0")
    if "," in integer_part:
        group = len(integer_part) - integer_part.rindex(",") - 1
        if group > 0:
            chunks: list[str] = []
            while len(whole) > group:
                chunks.insert(0, whole[-group:])
                whole = whole[:-group]
            whole = ",".join([whole, *chunks]) if whole else ",".join(chunks)
    sign = "-" if rounded < 0 and (whole.strip("0,") or fraction.strip("0")) else ""
    return sign + (whole or ("" if fraction else "0")) + (f".{fraction}" if fraction else "")


# ---- JSON, YAML, jq -----------------------------------------------------------------


def from_json(value: Any) -> Any:
    """``fromJson(string)``: parse JSON text; other values pass through."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as exc:
        raise ExpressionFailure(f"fromJson got invalid JSON: {exc}") from None


def from_yaml(value: Any) -> Any:
    """``yaml(string)``: parse YAML text; any other value is written as YAML."""
    if isinstance(value, str):
        try:
            return msgspec.yaml.decode(value)
        except msgspec.DecodeError as exc:
            raise ExpressionFailure(f"invalid YAML: {exc}") from None
    try:
        return msgspec.yaml.encode(value).decode()
    except (TypeError, msgspec.EncodeError) as exc:
        raise ExpressionFailure(f"cannot write a {kind_of(value)} as YAML: {exc}") from None


def _jq(value: Any, expression: str) -> list[Any]:
    # Kestra parses string inputs as JSON and always returns the list of results.
    # libjq cannot be interrupted: the program runs in a child process under budget.
    text = value if isinstance(value, str) else to_json(value)
    return jq_process.run_jq(expression, text, budget.active())


# ---- dates --------------------------------------------------------------------------


def _check_locale(locale: str | None) -> None:
    if locale is not None and not str(locale).lower().startswith("en"):
        raise ExpressionFailure(f"locale `{locale}` is not supported; dates use English names")


def _date(
    value: Any,
    format: str | None = None,
    existingFormat: str | None = None,
    timeZone: str | None = None,
    locale: str | None = None,
) -> str:
    _check_locale(locale)
    tz = dates.zone(timeZone)
    return dates.format_date(dates.to_datetime(value, tz, existingFormat), format, tz)


def _date_add(
    value: Any,
    amount: int,
    unit: str,
    format: str | None = None,
    timeZone: str | None = None,
    existingFormat: str | None = None,
    locale: str | None = None,
) -> str:
    _check_locale(locale)
    tz = dates.zone(timeZone)
    moment = dates.add(dates.to_datetime(value, tz, existingFormat), amount, unit)
    return dates.format_date(moment, format, tz)


def _timestamp(per_second: int) -> Filter:
    def timestamp(
        value: Any,
        existingFormat: str | None = None,
        timeZone: str | None = None,
    ) -> int:
        return dates.epoch(
            dates.to_datetime(value, dates.zone(timeZone), existingFormat), per_second
        )

    return timestamp


#: set by :func:`runtime.flow.template.fixed_now`: the engine renders with the time of
#: the event it applies, so ``now()`` does not make it read the clock.
FIXED_NOW: contextvars.ContextVar[datetime | None] = contextvars.ContextVar(
    "template_fixed_now", default=None
)


def now(
    format: str | None = None,
    timeZone: str | None = None,
    locale: str | None = None,
) -> str:
    """``now()``: the current time, as an ISO-8601 string by default."""
    _check_locale(locale)
    tz = dates.zone(timeZone)
    fixed = FIXED_NOW.get()
    current = fixed.astimezone(tz) if fixed is not None else datetime.now(tz)
    return dates.format_date(current, format, tz)


# ---- default and the filter table ---------------------------------------------------


def is_empty(value: Any) -> bool:
    """Pebble's `empty` test: null, missing, blank string, empty list or map."""
    if value is None or isinstance(value, Undefined):
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, (list, tuple, Mapping)):
        return not value
    return False


def _default(value: Any, fallback: Any) -> Any:
    return fallback if is_empty(value) else value


def _propagating(name: str, function: Filter, *, accepts_null: bool) -> Filter:
    """Wrap a filter: missing inputs pass through, null inputs give null, args are checked."""

    def apply(value: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(value, Undefined):
            return value
        if value is None and not accepts_null:
            return None
        for argument in (*args, *kwargs.values()):
            require(argument)
        try:
            return function(value, *args, **kwargs)
        except TypeError as exc:
            if "argument" in str(exc):
                raise ExpressionFailure(f"wrong arguments for the `{name}` filter: {exc}") from None
            raise

    return apply


_FILTERS: dict[str, Filter] = {
    "abbreviate": _abbreviate,
    "abs": _abs,
    "base64decode": _base64decode,
    "base64encode": lambda v: base64.b64encode(java_str(v).encode()).decode(),
    "capitalize": _capitalize,
    "chunk": _chunk,
    "date": _date,
    "dateAdd": _date_add,
    "distinct": _distinct,
    "endsWith": lambda v, suffix: java_str(v).endswith(java_str(suffix)),
    "escapeChar": _escape_char,
    "first": _first,
    "indent": _indent,
    "join": _join,
    "jq": _jq,
    "json": to_json,
    "keys": _keys,
    "last": _last,
    "length": _length,
    "lower": lambda v: _text(v, "lower").lower(),
    "md5": _digest("md5"),
    "merge": _merge,
    "nindent": functools.partial(_indent, first_line=True),
    "number": _number,
    "numberFormat": _number_format,
    "numberformat": _number_format,
    "replace": _replace,
    "reverse": _reverse,
    "rsort": lambda v: _sorted(v, "rsort", reverse=True),
    "sha1": _digest("sha1"),
    "sha256": _digest("sha256"),
    "sha512": _digest("sha512"),
    "slice": _slice,
    "slugify": _slugify,
    "sort": lambda v: _sorted(v, "sort"),
    "split": split_regex,
    "startsWith": lambda v, prefix: java_str(v).startswith(java_str(prefix)),
    "string": java_str,
    "substringAfter": _substring_after,
    "substringAfterLast": _substring_after_last,
    "substringBefore": _substring_before,
    "substringBeforeLast": _substring_before_last,
    "timestamp": _timestamp(1),
    "timestampMicro": _timestamp(1_000_000),
    "timestampMilli": _timestamp(1_000),
    "timestampNano": _timestamp(1_000_000_000),
    "title": _title,
    "toJson": to_json,
    "trim": lambda v: _text(v, "trim").strip(JAVA_WHITESPACE),
    "upper": lambda v: _text(v, "upper").upper(),
    "urldecode": lambda v: urllib.parse.unquote_plus(java_str(v)),
    "urlencode": _urlencode,
    "values": _values,
    "yaml": from_yaml,
}
_NULL_AWARE = frozenset({"length", "json", "toJson", "yaml", "string"})

FILTERS: dict[str, Filter] = {
    name: _propagating(name, function, accepts_null=name in _NULL_AWARE)
    for name, function in _FILTERS.items()
}
FILTERS["default"] = _default


# ---- tests --------------------------------------------------------------------------


def _is_json(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    try:
        json.loads(value)
    except json.JSONDecodeError:
        return False
    return True


def _integer(value: Any, test: str) -> int:
    value = require(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ExpressionFailure(f"`is {test}` needs an integer, not a {kind_of(value)}")
    return value


TESTS: dict[str, Callable[..., bool]] = {
    "defined": lambda v: not isinstance(v, Undefined),
    "null": lambda v: v is None or isinstance(v, Undefined),
    "empty": is_empty,
    "even": lambda v: _integer(v, "even") % 2 == 0,
    "odd": lambda v: _integer(v, "odd") % 2 == 1,
    "iterable": lambda v: isinstance(require(v), (list, tuple, Mapping)),
    "map": lambda v: isinstance(require(v), Mapping),
    "json": lambda v: _is_json(require(v)),
}


# ---- functions ----------------------------------------------------------------------


def extreme(pick: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``max(...)`` / ``min(...)`` over their arguments."""

    def function(*values: Any) -> Any:
        if not values:
            raise ExpressionFailure(f"{name}() needs at least one argument")
        try:
            return pick(require(v) for v in values)
        except TypeError:
            raise ExpressionFailure(f"{name}() cannot compare values of different types") from None

    return function


def random_int(lower: int, upper: int) -> int:
    """``randomInt(lower, upper)``: lower inclusive, upper exclusive."""
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (lower, upper)):
        raise ExpressionFailure("randomInt bounds must be integers")
    if upper <= lower:
        raise ExpressionFailure("randomInt needs lower < upper")
    return random.randrange(lower, upper)


def new_uuid() -> str:
    """``uuid()``: a random UUID."""
    return str(uuid.uuid4())
