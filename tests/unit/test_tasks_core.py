"""The small core tasks: Log, Return, Echo, OutputValues, Sleep, Fail; KV and state."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from runtime.flow.registry import default_registry
from runtime.tasks.context import TaskFailure
from runtime.tasks.core import CORE_TASKS
from runtime.tasks.python_call import PythonFunction
from tests.unit.task_context import TaskContext, load_task


@pytest.fixture
def ctx(tmp_path: Path) -> TaskContext:
    return TaskContext(tmp_path, variables={"inputs": {"name": "World", "n": 3}})


def test_every_core_task_runs_and_python_function_is_registered() -> None:
    for cls in CORE_TASKS:
        assert "run" in cls.__dict__, f"{cls.__name__} has no run()"
    assert default_registry().resolve("io.kestra.plugin.runtime.PythonFunction") is PythonFunction


@pytest.mark.asyncio
async def test_log_renders_each_message_at_its_level(ctx: TaskContext) -> None:
    task = load_task(
        """
        - id: hello
          type: io.kestra.plugin.core.log.Log
          level: WARN
          message:
            - "Hello {{ inputs.name }}"
            - "n = {{ inputs.n + 1 }}"
        """
    )
    assert await task.run(ctx) is None
    assert ctx.log.lines == [("WARN", "Hello World"), ("WARN", "n = 4")]


@pytest.mark.asyncio
async def test_log_default_level_and_trace(ctx: TaskContext) -> None:
    await load_task("- {id: a, type: io.kestra.core.tasks.log.Log, message: hi}").run(ctx)
    await load_task("- {id: b, type: io.kestra.plugin.core.log.Log, message: t, level: TRACE}").run(
        ctx
    )
    assert ctx.log.lines == [("INFO", "hi"), ("TRACE", "t")]


@pytest.mark.asyncio
async def test_log_unknown_level_fails_clearly(ctx: TaskContext) -> None:
    task = load_task("- {id: a, type: io.kestra.plugin.core.log.Log, message: x, level: LOUD}")
    with pytest.raises(TaskFailure, match="unknown log level 'LOUD'; use one of TRACE"):
        await task.run(ctx)


@pytest.mark.asyncio
async def test_return_outputs_the_rendered_format(ctx: TaskContext) -> None:
    task = load_task(
        "- {id: r, type: io.kestra.plugin.core.debug.Return, format: '{{ inputs.name | upper }}'}"
    )
    assert await task.run(ctx) == {"value": "WORLD"}


@pytest.mark.asyncio
async def test_echo_logs(ctx: TaskContext) -> None:
    task = load_task(
        "- {id: e, type: io.kestra.core.tasks.debugs.Echo, format: 'x={{ inputs.n }}', "
        "level: ERROR}"
    )
    assert await task.run(ctx) is None
    assert ctx.log.lines == [("ERROR", "x=3")]


@pytest.mark.asyncio
async def test_output_values(ctx: TaskContext) -> None:
    task = load_task(
        """
        - id: out
          type: io.kestra.plugin.core.output.OutputValues
          values:
            greeting: "Hi {{ inputs.name }}"
            nested: {list: ["{{ inputs.n }}", 2]}
        """
    )
    assert await task.run(ctx) == {"values": {"greeting": "Hi World", "nested": {"list": ["3", 2]}}}


@pytest.mark.asyncio
async def test_sleep_waits_and_is_cancellable(ctx: TaskContext) -> None:
    short = load_task("- {id: s, type: io.kestra.plugin.core.flow.Sleep, duration: PT0.05S}")
    started = time.monotonic()
    assert await short.run(ctx) is None
    assert time.monotonic() - started >= 0.05

    long = load_task("- {id: s, type: io.kestra.plugin.core.flow.Sleep, duration: PT1H}")
    runner = asyncio.create_task(long.run(ctx))
    await asyncio.sleep(0.01)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await runner


@pytest.mark.asyncio
async def test_fail(ctx: TaskContext) -> None:
    always = load_task(
        "- {id: f, type: io.kestra.plugin.core.execution.Fail, "
        "errorMessage: 'bad input {{ inputs.name }}'}"
    )
    with pytest.raises(TaskFailure, match=r"^bad input World$"):
        await always.run(ctx)
    default = load_task("- {id: f, type: io.kestra.core.tasks.executions.Fail}")
    with pytest.raises(TaskFailure, match=r"^Task failure$"):
        await default.run(ctx)
    holds = load_task(
        "- {id: f, type: io.kestra.plugin.core.execution.Fail, condition: '{{ inputs.n > 2 }}'}"
    )
    with pytest.raises(TaskFailure):
        await holds.run(ctx)
    passes = load_task(
        "- {id: f, type: io.kestra.plugin.core.execution.Fail, condition: '{{ inputs.n > 5 }}'}"
    )
    assert await passes.run(ctx) is None


# -- KV -----------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_kv_set_get_delete(ctx: TaskContext) -> None:
    put = load_task(
        "- {id: s, type: io.kestra.plugin.core.kv.Set, key: 'user_{{ inputs.n }}', "
        "value: {name: '{{ inputs.name }}'}}"
    )
    assert await put.run(ctx) is None
    entry = await ctx.kv.get("company.team", "user_3")
    assert entry is not None
    assert entry.value == {"name": "World"}

    get = load_task("- {id: g, type: io.kestra.plugin.core.kv.Get, key: user_3}")
    assert await get.run(ctx) == {"value": {"name": "World"}}

    delete = load_task("- {id: d, type: io.kestra.plugin.core.kv.Delete, key: user_3}")
    assert await delete.run(ctx) == {"deleted": True}
    assert await delete.run(ctx) == {"deleted": False}
    assert await get.run(ctx) == {"value": None}


@pytest.mark.asyncio
async def test_kv_missing_keys_with_error_on_missing(ctx: TaskContext) -> None:
    get = load_task(
        "- {id: g, type: io.kestra.plugin.core.kv.Get, key: nope, errorOnMissing: true}"
    )
    with pytest.raises(TaskFailure, match="No value found for key 'nope' in namespace"):
        await get.run(ctx)
    delete = load_task(
        "- {id: d, type: io.kestra.plugin.core.kv.Delete, key: nope, errorOnMissing: true}"
    )
    with pytest.raises(TaskFailure, match="'nope'"):
        await delete.run(ctx)


@pytest.mark.asyncio
async def test_kv_overwrite_false_refuses_an_existing_key(ctx: TaskContext) -> None:
    first = load_task(
        "- {id: s, type: io.kestra.plugin.core.kv.Set, key: k, value: one, overwrite: false}"
    )
    await first.run(ctx)
    second = load_task(
        "- {id: s, type: io.kestra.plugin.core.kv.Set, key: k, value: two, overwrite: false}"
    )
    with pytest.raises(TaskFailure, match="key already exists and `overwrite` is false"):
        await second.run(ctx)
    entry = await ctx.kv.get("company.team", "k")
    assert entry is not None
    assert entry.value == "one"


@pytest.mark.asyncio
async def test_kv_namespace_type_and_ttl(ctx: TaskContext) -> None:
    put = load_task(
        "- {id: s, type: io.kestra.plugin.core.kv.Set, key: n, value: '42', kvType: NUMBER, "
        "namespace: other.ns, ttl: PT1H}"
    )
    await put.run(ctx)
    entry = await ctx.kv.get("other.ns", "n")
    assert entry is not None
    assert entry.value == 42
    assert entry.expires_at is not None
    assert await ctx.kv.get("company.team", "n") is None
    as_json = load_task(
        "- {id: s, type: io.kestra.plugin.core.kv.Set, key: j, value: '{\"a\": [1]}', kvType: JSON}"
    )
    await as_json.run(ctx)
    entry = await ctx.kv.get("company.team", "j")
    assert entry is not None
    assert entry.value == {"a": [1]}
    bad = load_task(
        "- {id: s, type: io.kestra.plugin.core.kv.Set, key: b, value: maybe, kvType: BOOLEAN}"
    )
    with pytest.raises(TaskFailure, match="'maybe' is not a valid BOOLEAN"):
        await bad.run(ctx)


# -- state --------------------------------------------------------------------------
@pytest.mark.asyncio
async def test_state_round_trip_merges(ctx: TaskContext) -> None:
    put = load_task(
        "- {id: s, type: io.kestra.plugin.core.state.Set, name: st, "
        "data: {'{{ inputs.name }}': 1, b: two}}"
    )
    out = await put.run(ctx)
    assert out["count"] == 2
    assert out["key"] == "kestra:///company.team/states/flow/st.json"
    more = load_task("- {id: s, type: io.kestra.plugin.core.state.Set, name: st, data: {b: 3}}")
    assert (await more.run(ctx))["count"] == 2

    get = load_task("- {id: g, type: io.kestra.core.tasks.states.Get, name: st}")
    assert await get.run(ctx) == {"count": 2, "data": {"World": 1, "b": 3}}

    delete = load_task("- {id: d, type: io.kestra.plugin.core.state.Delete, name: st}")
    assert await delete.run(ctx) == {"deleted": True}
    assert await get.run(ctx) == {"count": 0, "data": {}}
    missing = load_task(
        "- {id: g, type: io.kestra.plugin.core.state.Get, name: st, errorOnMissing: true}"
    )
    with pytest.raises(TaskFailure, match="Unable to find the state file 'st'"):
        await missing.run(ctx)


@pytest.mark.asyncio
async def test_state_isolation_by_taskrun_value_flow_and_namespace(tmp_path: Path) -> None:
    one = TaskContext(tmp_path, variables={"taskrun": {"value": "a/../b"}})
    two = TaskContext(tmp_path, variables={"taskrun": {"value": "c"}}, storage=one.storage)
    other_flow = TaskContext(tmp_path, flow_id="other", storage=one.storage)
    put = load_task("- {id: s, type: io.kestra.plugin.core.state.Set, data: {x: 1}}")
    get = load_task("- {id: g, type: io.kestra.plugin.core.state.Get}")
    await put.run(one)
    assert (await get.run(one))["data"] == {"x": 1}
    assert (await get.run(two))["data"] == {}
    assert (await get.run(other_flow))["data"] == {}

    shared_put = load_task(
        "- {id: s, type: io.kestra.plugin.core.state.Set, namespace: true, taskrunValue: false, "
        "data: {y: 2}}"
    )
    shared_get = load_task(
        "- {id: g, type: io.kestra.plugin.core.state.Get, namespace: true, taskrunValue: false}"
    )
    await shared_put.run(one)
    assert (await shared_get.run(other_flow))["data"] == {"y": 2}


@pytest.mark.asyncio
async def test_state_name_cannot_be_a_path(ctx: TaskContext) -> None:
    task = load_task("- {id: s, type: io.kestra.plugin.core.state.Set, name: ../x, data: {a: 1}}")
    with pytest.raises(TaskFailure, match="invalid state name"):
        await task.run(ctx)
