"""The cost of the template budgets on the hot path (issue 13's "done means").

Renders the properties the worker renders for two flows, the way it renders them
(``budget.evaluate_async`` around ``render_value_async``), and the same properties
with the budget machinery taken out (no meter, filters and helpers unwrapped, no
loop slice), alternating rounds in one run so the machine's noise hits both:

* ``sequential_40``: the 40 sequential Return tasks of the end-to-end measure;
* ``webhook_pair``: the throughput measure's webhook flow (OutputValues, then a Log
  of its output);
* ``filtered``: a few common filters and operators, where the wrappers do work
  (not in the issue's target; shown so the cost is not hidden).

``python -m bench.budget [--rounds N]`` prints a table; the target is a ratio
≤ 1.1 for the first two.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import statistics
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import jinja2

from bench.e2e import sequential_source
from bench.throughput import pair_source
from runtime.flow import budget, budgeted, template
from runtime.flow import template_filters as filters
from runtime.flow import template_operators as operators
from runtime.flow.context import variables
from runtime.flow.execution import new_execution
from runtime.flow.model import Flow
from runtime.flow.parse import parse_flow
from runtime.flow.template_pebble import HELPER, translate

TARGET = 1.1
#: the properties each task renders on the worker (what its ``run`` passes to render)
_RENDERED = {
    "io.kestra.plugin.core.debug.Return": ("format",),
    "io.kestra.plugin.core.output.OutputValues": ("values",),
    "io.kestra.plugin.core.log.Log": ("message", "level"),
}
_FILTERED = (
    "{{ inputs.name | upper }}",
    "{{ inputs.count * 2 + 1 }}",
    "{{ (inputs.name ~ '-' ~ execution.id) | lower | length }}",
    "{{ inputs.items | join(',') }}",
    "{{ inputs.data | toJson }}",
)


class _Unmetered(budget.Meter):
    """A meter that counts nothing: the render without budgets."""

    def check(self) -> None:
        pass

    def charge(self, size: int) -> None:
        pass

    def charge_value(self, value: Any) -> None:
        pass

    def add(self, size: int) -> None:
        pass

    def tick(self) -> None:
        pass


_UNMETERED = _Unmetered(budget.limits(), None)


class _BareEnvironment(template._Environment):
    """The sandbox as it was before budgets: plain filters and helpers."""

    def __init__(self) -> None:
        super().__init__(is_async=True, functions=template._ASYNC_FUNCTIONS)
        self.filters = dict(filters.FILTERS)
        self.globals[f"{HELPER}concat"] = operators.concat
        self.globals[f"{HELPER}range"] = operators.inclusive_range

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        return operators.arithmetic(operator, left, right)


_BARE = _BareEnvironment()


@functools.lru_cache(maxsize=4096)
def _bare_compile(source: str) -> jinja2.Template:
    return _BARE.from_string(translate(source, template._NAMES))


async def _bare_render_value(value: Any, variables: Mapping[str, Any]) -> Any:
    # The same renderer with a meter that counts nothing and no loop slice: what
    # is left of the budget machinery is a few no-op calls per render.
    return await template.render_value_async(value, variables, None, _UNMETERED)


async def _bare_filtered(value: Any, variables: Mapping[str, Any]) -> Any:
    # Filters, functions and helpers as they were before budgets (unwrapped).
    state = template._RenderState(variables, None, _UNMETERED)
    chunks = _bare_compile(value).generate_async(variables, **{template._STATE: state})
    async with contextlib.aclosing(chunks):
        return "".join([chunk async for chunk in chunks])


async def _budgeted_render_value(value: Any, variables: Mapping[str, Any]) -> Any:
    # as the worker's WorkerRunContext.render does it
    return await budgeted.render_value_async(value, variables, None)


Case = tuple[Any, dict[str, Any]]
Render = Callable[[Any, Mapping[str, Any]], Awaitable[Any]]


def _flow_cases(flow: Flow) -> list[Case]:
    """(property value, variables) for each property each task renders on the worker."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    execution = new_execution(
        id="5Lq8bXbLl3WZJ2qYh0UFy1",
        namespace=flow.namespace,
        flow_id=flow.id,
        flow_revision=1,
        at=at,
    )
    outputs = {"values": {"values": {"greeting": f"hello {execution.id}"}}}
    cases: list[Case] = []
    for task in flow.tasks:
        context = variables(flow, execution, task=task, outputs=outputs)
        for name in _RENDERED.get(task.type, ()):
            value = getattr(task, name)
            if value is not None:
                cases.append((value, context))
    if not cases:
        raise RuntimeError(f"flow {flow.id}: no property to render")
    return cases


def _filtered_cases() -> list[Case]:
    context = {
        "inputs": {"name": "World", "count": 20, "items": ["a", "b", "c"], "data": {"k": [1, 2]}},
        "execution": {"id": "5Lq8bXbLl3WZJ2qYh0UFy1"},
    }
    return [(source, context) for source in _FILTERED]


async def _round(cases: list[Case], repeat: int, budgeted: bool, bare: Render) -> float:
    """Seconds per property rendered."""
    render = _budgeted_render_value if budgeted else bare
    began = time.perf_counter()
    for _ in range(repeat):
        for value, context in cases:
            await render(value, context)
    return (time.perf_counter() - began) / (repeat * len(cases))


async def _compare(
    cases: list[Case], rounds: int, repeat: int, bare_render: Render
) -> dict[str, float]:
    for value, context in cases:  # same output both ways, and both compiled
        bare = await bare_render(value, context)
        budgeted = await _budgeted_render_value(value, context)
        if bare != budgeted:
            raise RuntimeError(f"the two renders differ on {value!r}: {bare!r} vs {budgeted!r}")
    bare_times: list[float] = []
    budgeted_times: list[float] = []
    ratios: list[float] = []
    for index in range(rounds):
        # alternate which goes first, so a drift of the machine favours neither
        order = (False, True) if index % 2 == 0 else (True, False)
        paired: dict[bool, float] = {}
        for budgeted_ in order:
            paired[budgeted_] = await _round(cases, repeat, budgeted_, bare_render)
        bare_times.append(paired[False])
        budgeted_times.append(paired[True])
        ratios.append(paired[True] / paired[False])
    return {
        "properties": len(cases),
        "us_per_property_bare": statistics.median(bare_times) * 1e6,
        "us_per_property_budgeted": statistics.median(budgeted_times) * 1e6,
        # each round's two halves ran back to back: their ratio is what noise spares
        "ratio": statistics.median(ratios),
    }


def run(*, rounds: int = 41, repeat: int = 100) -> dict[str, dict[str, float]]:
    """The comparison for each set of templates."""
    sets = {
        "sequential_40": _flow_cases(parse_flow(sequential_source(40))),
        "webhook_pair": _flow_cases(parse_flow(pair_source("k3y"))),
        "filtered": _filtered_cases(),
    }

    async def measure() -> dict[str, dict[str, float]]:
        return {
            name: await _compare(
                cases, rounds, repeat, _bare_filtered if name == "filtered" else _bare_render_value
            )
            for name, cases in sets.items()
        }

    return asyncio.run(measure())


def table(result: dict[str, dict[str, float]]) -> str:
    rows = [
        "| templates | properties | µs bare | µs budgeted | ratio | target ≤ 1.1 |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in result.items():
        judged = name != "filtered"
        verdict = ("met" if r["ratio"] <= TARGET else "missed") if judged else "(not a target)"
        rows.append(
            f"| {name} | {r['properties']:.0f} | {r['us_per_property_bare']:.2f} "
            f"| {r['us_per_property_budgeted']:.2f} | {r['ratio']:.3f} | {verdict} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.budget", description=__doc__)
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--repeat", type=int, default=100)
    args = parser.parse_args(argv)
    print(table(run(rounds=args.rounds, repeat=args.repeat)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
