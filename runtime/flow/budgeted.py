"""Renders for a component's event loop: in place while cheap, else off the loop.

:func:`budget.evaluate_async` around :func:`template.render_value_async`, with the
common case (a property without any expression) answered before any of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from runtime.flow import budget, template

__all__ = ["property_of", "render_value_async"]


async def render_value_async(
    value: Any, variables: Mapping[str, Any], services: template.TemplateServices | None
) -> Any:
    """Render ``value`` as :func:`template.render_value_async` does, under the budget,
    never holding the loop past its slice."""
    if isinstance(value, str):
        if not template.has_expression(value):
            return value
    elif not isinstance(value, (Mapping, list, tuple)):
        return value
    return await budget.evaluate_async(
        lambda bridged: template.render_value_async(value, variables, services=bridged), services
    )


def property_of(task: Any, source: str) -> str | None:
    """The path of the property of ``task`` holding the template ``source``
    (``message``, ``values.greeting``), for errors a person reads; None if none does."""
    if isinstance(task, msgspec.Struct):
        for name in task.__struct_fields__:
            found = _find(getattr(task, name), source)
            if found is not None:
                return name + found
    return None


def _find(value: Any, source: str) -> str | None:
    if isinstance(value, str):
        return "" if value == source else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == source:
                return f".{key}"
            found = _find(item, source)
            if found is not None:
                return f".{key}{found}"
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = _find(item, source)
            if found is not None:
                return f"[{index}]{found}"
    return None
