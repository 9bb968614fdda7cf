"""Renders for a component's event loop: in place while cheap, else off the loop.

:func:`budget.evaluate_async` around :func:`template.render_value_async`, with the
common case (a property without any expression) answered before any of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from runtime.flow import budget, template

__all__ = ["render_value_async"]


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
