"""Kestra's expression operators and the Java methods templates may call on plain data.

The translated templates call these for Pebble operators Jinja lacks or spells
differently (``~``, ``contains``, ``..``, boolean ``and``/``or``), for the
intercepted arithmetic (numbers only, so no string bombs), for ``{% for %}``
iteration and for ``obj.method(...)`` calls, which only reach the short tables
below and never a Python attribute.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from jinja2 import Undefined

from runtime.flow.template_filters import JAVA_WHITESPACE, split_regex
from runtime.flow.template_values import (
    MAX_TEXT,
    ExpressionFailure,
    Missing,
    check_size,
    is_number,
    java_str,
    kind_of,
    require,
)

MAX_RANGE = 1_000_000  # Kestra's own cap on range()


def arithmetic(operator: str, left: Any, right: Any) -> Any:
    """The intercepted binary operators: numbers only, except ``+`` on strings/lists."""
    require(left)
    require(right)
    if is_number(left) and is_number(right):
        try:
            if operator == "%":
                remainder = abs(left) % abs(right)  # Java's sign follows the dividend
                return -remainder if left < 0 else remainder
            if operator == "**":
                raise ExpressionFailure("`**` is not an operator in Kestra expressions")
            return {
                "+": lambda: left + right,
                "-": lambda: left - right,
                "*": lambda: left * right,
                "/": lambda: left / right,
                "//": lambda: left // right,
            }[operator]()
        except ZeroDivisionError:
            raise ExpressionFailure("division by zero") from None
        except TypeError:
            raise ExpressionFailure(f"cannot combine these numbers with `{operator}`") from None
    if operator == "+" and isinstance(left, str) and isinstance(right, str):
        if len(left) + len(right) > MAX_TEXT:
            raise ExpressionFailure(
                f"the expression would build a string over {MAX_TEXT} characters"
            )
        return left + right
    if operator == "+" and isinstance(left, (list, tuple)) and isinstance(right, (list, tuple)):
        return [*left, *right]
    raise ExpressionFailure(
        f"`{operator}` needs numbers, but got a {kind_of(left)} and a {kind_of(right)}"
        + ("; use `~` to join strings" if operator == "+" else "")
    )


def concat(left: Any, right: Any) -> str:
    """The ``~`` operator: text of both sides, null as empty."""
    left_text, right_text = java_str(require(left)), java_str(require(right))
    if len(left_text) + len(right_text) > MAX_TEXT:
        raise ExpressionFailure(f"the expression would build a string over {MAX_TEXT} characters")
    return left_text + right_text


def contains(container: Any, item: Any) -> bool:
    """Pebble's ``contains``: membership in lists, keys of maps, substrings of strings."""
    container, item = require(container), require(item)
    if container is None:
        return False
    wanted = list(item) if isinstance(item, (list, tuple)) else [item]
    if isinstance(container, str):
        return all(java_str(part) in container for part in wanted)
    if isinstance(container, (list, tuple, Mapping)):
        try:
            return all(part in container for part in wanted)
        except TypeError:
            return False
    raise ExpressionFailure(f"`contains` needs a list, map or string, not a {kind_of(container)}")


def truth(value: Any) -> bool:
    """Boolean result of ``and``/``or`` (a missing operand raises)."""
    return bool(require(value))


def inclusive_range(start: Any, end: Any, increment: Any = 1) -> list[Any]:
    """``range(start, end, step)`` and ``a..b``: inclusive, capped at a million items."""
    start, end, increment = require(start), require(end), require(increment)
    letters = isinstance(start, str) and isinstance(end, str)
    if letters and len(start) == 1 and len(end) == 1:
        return [chr(code) for code in inclusive_range(ord(start), ord(end), increment)]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in (start, end, increment)):
        raise ExpressionFailure("range bounds and step must be integers")
    if increment == 0:
        raise ExpressionFailure("the range step cannot be 0")
    size = max((end - start) // increment + 1, 0)
    if size > MAX_RANGE:
        raise ExpressionFailure(
            f"range() cannot produce more than {MAX_RANGE} items; this one would have {size}"
        )
    return list(range(start, end + (1 if increment > 0 else -1), increment))


def iterate(value: Any) -> Iterator[Any]:
    """What ``{% for %}`` walks: list items, or map entries with ``key``/``value``."""
    value = require(value)
    if value is None:
        return iter(())
    if isinstance(value, Mapping):
        return iter([{"key": key, "value": item} for key, item in value.items()])
    if isinstance(value, (list, tuple)):
        return iter(value)
    raise ExpressionFailure(f"cannot loop over a {kind_of(value)}; loop over a list or a map")


# ---- Java-style methods -------------------------------------------------------------

_STRING_METHODS: dict[str, Callable[..., Any]] = {
    "length": len,
    "isEmpty": lambda s: not s,
    "isBlank": lambda s: not s.strip(),
    "toUpperCase": str.upper,
    "toLowerCase": str.lower,
    "trim": lambda s: s.strip(JAVA_WHITESPACE),
    "strip": str.strip,
    "contains": lambda s, x: java_str(x) in s,
    "startsWith": lambda s, x: s.startswith(java_str(x)),
    "endsWith": lambda s, x: s.endswith(java_str(x)),
    "indexOf": lambda s, x: s.find(java_str(x)),
    "lastIndexOf": lambda s, x: s.rfind(java_str(x)),
    "substring": lambda s, start, end=None: s[start:end],
    "replace": lambda s, old, new: check_size(s.replace(java_str(old), java_str(new))),
    "split": lambda s, regex: split_regex(s, regex),
    "charAt": lambda s, i: s[i],
    "equals": lambda s, x: s == x,
    "equalsIgnoreCase": lambda s, x: isinstance(x, str) and s.lower() == x.lower(),
    "matches": lambda s, regex: re.fullmatch(regex, s) is not None,
    "toString": lambda s: s,
}
_LIST_METHODS: dict[str, Callable[..., Any]] = {
    "size": len,
    "isEmpty": lambda items: not items,
    "get": lambda items, i: items[i],
    "contains": lambda items, x: x in items,
    "indexOf": lambda items, x: items.index(x) if x in items else -1,
    "toString": java_str,
}
_MAP_METHODS: dict[str, Callable[..., Any]] = {
    "size": len,
    "isEmpty": lambda m: not m,
    "get": lambda m, key: m.get(key),
    "getOrDefault": lambda m, key, fallback: m.get(key, fallback),
    "containsKey": lambda m, key: key in m,
    "containsValue": lambda m, value: value in m.values(),
    "keySet": lambda m: list(m.keys()),
    "values": lambda m: list(m.values()),
    "toString": java_str,
}
_SCALAR_METHODS: dict[str, Callable[..., Any]] = {
    "toString": java_str,
    "intValue": int,
    "longValue": int,
    "doubleValue": float,
    "floatValue": float,
    "booleanValue": bool,
    "equals": lambda a, b: a == b,
}


def method(obj: Any, name: str, *args: Any) -> Any:
    """``obj.name(args)``: a short list of Java methods on strings, lists, maps, numbers."""
    if isinstance(obj, Undefined):
        return obj
    if obj is None:
        return Missing(obj=None, name=f"{name}()")
    for arg in args:
        require(arg)
    if isinstance(obj, str):
        table = _STRING_METHODS
    elif isinstance(obj, (list, tuple)):
        table = _LIST_METHODS
    elif isinstance(obj, Mapping):
        table = _MAP_METHODS
    else:
        table = _SCALAR_METHODS
    function = table.get(name)
    if function is None:
        raise ExpressionFailure(
            f"the method `{name}()` is not available on a {kind_of(obj)}; "
            f"available: {', '.join(sorted(table))}"
        )
    try:
        return function(obj, *args)
    except (TypeError, IndexError, ValueError) as exc:
        raise ExpressionFailure(f"`{name}()` failed on a {kind_of(obj)}: {exc}") from None
