"""PythonFunction: importable callables run in the worker's process pool."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from runtime.actors.pool import ProcessPool
from runtime.tasks.context import TaskFailure
from tests.unit.task_context import TaskContext, load_task

pytestmark = pytest.mark.slow


@pytest_asyncio.fixture
async def ctx(tmp_path: Path) -> AsyncIterator[TaskContext]:
    async with ProcessPool(1, name="python-call-test") as pool:
        yield TaskContext(tmp_path, pool=pool, variables={"inputs": {"n": 7}})


def call(props: str) -> Any:
    body = "\n".join("  " + line for line in props.strip().splitlines())
    return load_task(f"- id: fn\n  type: io.kestra.plugin.runtime.PythonFunction\n{body}")


@pytest.mark.asyncio
async def test_calls_the_function_in_a_pool_process_with_rendered_arguments(
    ctx: TaskContext,
) -> None:
    task = call(
        """
function: tests.unit.task_functions:describe
args: ["{{ inputs.n }}", 2]
kwargs: {label: "n={{ inputs.n }}"}
"""
    )
    out = await task.run(ctx)
    value = out["value"]
    assert value["args"] == ["7", 2]
    assert value["kwargs"] == {"label": "n=7"}
    assert value["pid"] != os.getpid()

    square = call("function: tests.unit.task_functions:square\nargs: [12]")
    assert await square.run(ctx) == {"value": 144}
    dotted = call("function: tests.unit.task_functions:Holder.double\nargs: [4]")
    assert await dotted.run(ctx) == {"value": 8}
    pair = call("function: tests.unit.task_functions:pair")
    assert await pair.run(ctx) == {"value": [1, 2]}


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("props", "message"),
    [
        ("function: no_such_module.sub:fn", "cannot import module 'no_such_module.sub'"),
        ("function: tests.unit.task_functions:missing", "has no attribute 'missing'"),
        ("function: tests.unit.task_functions:NOT_CALLABLE", "is a int, not a callable"),
        ("function: tests.unit.task_functions:not_json", "returned a set, which is not JSON"),
        ("function: tests.unit.task_functions", "must be written 'package.module:callable'"),
        (
            "function: tests.unit.task_functions:explode\nargs: [boom]",
            "tests.unit.task_functions:explode raised ValueError: boom",
        ),
    ],
)
async def test_failures_name_the_function(ctx: TaskContext, props: str, message: str) -> None:
    with pytest.raises(TaskFailure, match=message):
        await call(props).run(ctx)


@pytest.mark.asyncio
async def test_timeout_kills_the_pool_process(ctx: TaskContext) -> None:
    task = call("function: tests.unit.task_functions:nap\nargs: [30]\ntimeout: PT0.5S")
    with pytest.raises(TaskFailure, match=r"did not finish within 0\.5 s"):
        await task.run(ctx)
    assert ctx.pool.statistics().timed_out == 1
    # The pool replaced the killed process and still serves calls.
    fast = call("function: tests.unit.task_functions:square\nargs: [3]")
    assert await fast.run(ctx) == {"value": 9}
