"""Values as Kestra's expressions see them: lookups, missing values, printing.

Shared by the template modules. Everything a template reads goes through
:func:`lookup`, which only ever indexes plain data (mappings, lists, strings) and
never touches a Python attribute: that is the heart of the sandbox.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any, NoReturn

from jinja2 import StrictUndefined, Undefined
from jinja2.runtime import LoopContext
from jinja2.utils import missing

# Upper bound on any single string a template builds (output, concatenation, indent).
MAX_TEXT = 16 * 1024 * 1024

# Pebble's loop variables are zero-based where Jinja's `index`/`revindex` are not.
_LOOP_ATTRIBUTES = {
    "index": "index0",
    "revindex": "revindex0",
    "first": "first",
    "last": "last",
    "length": "length",
}


class ExpressionFailure(Exception):
    """A filter, function or operator refused its operands; surfaces as a TemplateError."""


class SandboxViolation(ExpressionFailure):
    """The template tried to reach past plain data into Python internals."""


class Missing(StrictUndefined):
    """An undefined value that says what was looked up, and in what.

    Chained lookups on a missing value return the same object, so the error names
    the first missing step (``outputs.missing.value`` reports ``missing``).
    """

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        name: object = self._undefined_name  # Jinja types it as a string; indexes are ints
        owner = self._undefined_obj
        if owner is missing:
            return f"`{name}` is not defined"
        if owner is None:
            return f"`{name}` cannot be read from a null value"
        if isinstance(owner, Mapping):
            keys = [str(key) for key in list(owner)[:10]]
            if not keys:
                return f"`{name}` is not a key of an empty map"
            more = ", ..." if len(owner) > len(keys) else ""
            return f"`{name}` is not a key here (available keys: {', '.join(keys)}{more})"
        if isinstance(owner, (list, tuple, str)) and isinstance(name, int):
            return f"index `{name}` is out of range (size {len(owner)})"
        return f"`{name}` does not exist on a {kind_of(owner)}"


def is_missing(value: object) -> bool:
    """True for undefined values (missing variables, keys or indexes)."""
    return isinstance(value, Undefined)


def require(value: Any) -> Any:
    """Return `value`, or raise the missing-variable error it stands for."""
    if isinstance(value, Undefined):
        fail_missing(value)
    return value


def fail_missing(value: Undefined) -> NoReturn:
    """Raise the UndefinedError of a missing value."""
    value._fail_with_undefined_error()


def kind_of(value: object) -> str:
    """A short, user-facing name for a value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, Undefined):
        return "missing value"
    return type(value).__name__


def is_number(value: object) -> bool:
    """True for ints, floats and decimals, but not booleans."""
    return isinstance(value, (int, float, Decimal)) and not isinstance(value, bool)


def lookup(obj: Any, key: Any) -> Any:
    """Resolve ``obj.key`` / ``obj[key]`` with Pebble's rules, on plain data only."""
    if isinstance(obj, Undefined):
        return obj
    if isinstance(obj, Mapping):
        try:
            return obj[key]
        except KeyError:
            pass
        except TypeError:
            raise ExpressionFailure(f"a {kind_of(key)} cannot be used as a map key") from None
        if is_number(key):
            # Loop values arrive as strings; `outputs.t[1]` should still find key "1".
            text = java_str(key)
            if text in obj:
                return obj[text]
        return Missing(obj=obj, name=key)
    if isinstance(key, str) and key.startswith("__"):
        raise SandboxViolation(f"access to `{key}` is not allowed in expressions")
    if isinstance(obj, (list, tuple, str)):
        index = key
        if isinstance(key, str) and key.isdigit():
            index = int(key)
        if isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(obj):
            return obj[index]
        return Missing(obj=obj, name=key)
    if isinstance(obj, LoopContext) and key in _LOOP_ATTRIBUTES:
        return getattr(obj, _LOOP_ATTRIBUTES[key])
    return Missing(obj=obj, name=key)


def java_float(value: float) -> str:
    """Format a float the way Java's ``Double.toString`` does (``1.0``, ``1.0E10``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "Infinity" if value > 0 else "-Infinity"
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    magnitude = abs(value)
    if 1e-3 <= magnitude < 1e7:
        text = repr(value)
        return text if ("." in text or "e" in text) else text + ".0"
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    numerals = "".join(str(d) for d in digits).rstrip("0") or "0"
    scientific = exponent + len(digits) - 1
    mantissa = numerals[0] + "." + (numerals[1:] or "0")
    return f"{'-' if sign else ''}{mantissa}E{scientific}"


def java_str(value: Any) -> str:
    """Convert a value to text like Kestra prints it; a missing value raises."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return java_float(value)
    if isinstance(value, (Mapping, list, tuple)):
        return to_json(value)
    if isinstance(value, Undefined):
        fail_missing(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, Undefined):
        fail_missing(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (datetime, date, time)):
        return value.isoformat()
    if isinstance(value, (set, frozenset)):
        return list(value)
    raise ExpressionFailure(f"a {kind_of(value)} cannot be written as JSON")


def to_json(value: Any) -> str:
    """Compact JSON, as Kestra's Jackson writer prints maps and lists."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=_json_default)


def check_size(text: str) -> str:
    """Refuse strings past the size cap (string bombs)."""
    if len(text) > MAX_TEXT:
        raise ExpressionFailure(
            f"the expression would build a string of {len(text)} characters; "
            f"the limit is {MAX_TEXT}"
        )
    return text
