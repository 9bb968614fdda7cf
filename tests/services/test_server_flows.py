"""The one-process server on the memory backend: what makes executions start or wait
(Flow triggers, Schedule triggers, concurrency limits) and subflows."""

from __future__ import annotations

import asyncio
import itertools
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from backends.memory import MemoryBackend
from backends.protocols import Backend
from runtime.flow.events import ExecutionEnded
from runtime.flow.execution import Execution, new_execution
from runtime.flow.ids import derived_id, new_id
from services import triggers
from services.flows import FlowCache, deploy_source
from tests.services.server_helpers import (
    NS,
    S,
    drained,
    ended,
    get,
    running,
    start,
    until,
)

# -- flow triggers ---------------------------------------------------------------------------
UPSTREAM = f"""
id: upstream
namespace: {NS}
inputs:
  - id: fail
    type: BOOLEAN
    defaults: false
tasks:
  - id: maybe_fail
    type: io.kestra.plugin.core.execution.Fail
    condition: "{{{{ inputs.fail }}}}"
"""
DOWNSTREAM = f"""
id: downstream
namespace: {NS}
inputs:
  - id: upstream_id
    type: STRING
tasks:
  - id: echo
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ inputs.upstream_id }}}} {{{{ trigger.state }}}}"
triggers:
  - id: after_upstream
    type: io.kestra.plugin.core.trigger.Flow
    inputs:
      upstream_id: "{{{{ trigger.executionId }}}}"
    conditions:
      - type: io.kestra.plugin.core.condition.ExecutionFlow
        namespace: {NS}
        flowId: upstream
      - type: io.kestra.plugin.core.condition.ExecutionStatus
        in: [SUCCESS]
"""


def downstream_of(upstream_id: str) -> str:
    return derived_id(NS, "downstream", "after_upstream", upstream_id)


@pytest.mark.asyncio
async def test_a_flow_trigger_runs_the_downstream_flow_after_upstream_success(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, UPSTREAM)
    await deploy_source(backend.flows, DOWNSTREAM)
    async with asyncio.timeout(10), running(tmp_path, backend):
        ok = await ended(backend, await start(backend, "upstream"))
        failed = await ended(backend, await start(backend, "upstream", {"fail": True}))
        downstream = await ended(backend, downstream_of(ok.id))
        await drained(backend)
        assert await backend.executions.get(downstream_of(failed.id)) is None
    assert (ok.state.current, failed.state.current) == (S.SUCCESS, S.FAILED)
    assert downstream.state.current is S.SUCCESS
    assert downstream.inputs == {"upstream_id": ok.id}
    assert downstream.trigger is not None
    assert (downstream.trigger["executionId"], downstream.trigger["state"]) == (ok.id, "SUCCESS")
    assert downstream.task_run_list[0].outputs == {"value": f"{ok.id} SUCCESS"}
    found = await backend.executions.search(namespace=NS, flow_id="downstream")
    assert [e.id for e in found] == [downstream.id]


@pytest.mark.asyncio
async def test_a_flow_trigger_never_triggers_its_own_flow(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, UPSTREAM)
    await deploy_source(
        backend.flows,
        f"""
id: watcher
namespace: {NS}
tasks:
  - id: note
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.flowId }}}} ended"
triggers:
  - id: on_namespace
    type: io.kestra.plugin.core.trigger.Flow
    conditions:
      - type: io.kestra.plugin.core.condition.ExecutionNamespace
        namespace: {NS}
""",
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        upstream = await ended(backend, await start(backend, "upstream"))
        watcher = await ended(backend, derived_id(NS, "watcher", "on_namespace", upstream.id))
        await asyncio.sleep(0.3)  # time enough for a chain to show
        found = await backend.executions.search(namespace=NS, flow_id="watcher", limit=100)
    assert [e.id for e in found] == [watcher.id]


@pytest.mark.asyncio
async def test_a_flow_trigger_fires_only_for_the_states_it_lists(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, UPSTREAM)
    await deploy_source(
        backend.flows,
        f"""
id: alert
namespace: {NS}
tasks:
  - id: note
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.executionId }}}} {{{{ trigger.state }}}}"
triggers:
  - id: on_failure
    type: io.kestra.plugin.core.trigger.Flow
    states: [FAILED, WARNING]
    conditions:
      - type: io.kestra.plugin.core.condition.ExecutionFlow
        namespace: {NS}
        flowId: upstream
""",
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        ok = await ended(backend, await start(backend, "upstream"))
        failed = await ended(backend, await start(backend, "upstream", {"fail": True}))
        await ended(backend, derived_id(NS, "alert", "on_failure", failed.id))
        await drained(backend)
        assert await backend.executions.get(derived_id(NS, "alert", "on_failure", ok.id)) is None


@pytest.mark.asyncio
async def test_a_newly_deployed_flow_trigger_sees_the_next_upstream_end(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deploy_source(backend.flows, UPSTREAM)
    async with asyncio.timeout(10), running(tmp_path, backend):
        first = await ended(backend, await start(backend, "upstream"))
        await deploy_source(backend.flows, DOWNSTREAM)
        second = await ended(backend, await start(backend, "upstream"))
        downstream = await ended(backend, downstream_of(second.id))
        await drained(backend)
        found = await backend.executions.search(namespace=NS, flow_id="downstream", limit=100)
    assert (first.state.current, second.state.current) == (S.SUCCESS, S.SUCCESS)
    # one downstream run, for the end after the deployment only
    assert [e.id for e in found] == [downstream.id]
    assert downstream.state.current is S.SUCCESS
    assert downstream.inputs == {"upstream_id": second.id}


@pytest.mark.asyncio
async def test_flow_triggers_never_see_the_flows_of_another_backend() -> None:
    """A later server in the same process (e.g. the next `flow test`) with a new
    FlowCache: at one time a module-level cache keyed by id(FlowCache) served it the
    flows of the previous backend."""
    first, second = MemoryBackend(), MemoryBackend()
    await deploy_source(first.flows, DOWNSTREAM)  # `second` has no Flow trigger at all
    upstream = new_execution(
        id=new_id(), namespace=NS, flow_id="upstream", flow_revision=1, at=first.clock()
    )
    end = ExecutionEnded(at=first.clock(), execution_id=upstream.id, state=S.SUCCESS)

    async def triggered(backend: Backend, cache: FlowCache) -> list[str]:
        async with backend.transaction() as tx:
            candidates = await triggers.flows_with_flow_triggers(tx, cache)
            found = await triggers.flow_trigger_executions(tx, candidates, upstream, end)
        return [e.flow_id for e in found]

    in_first = await triggered(first, FlowCache(first))
    in_second = await triggered(second, FlowCache(second))
    assert (in_first, in_second) == (["downstream"], [])


# -- concurrency, schedules, subflows ---------------------------------------------------------
@pytest.mark.asyncio
async def test_concurrency_limit_queues_executions_and_runs_them_one_after_another(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deploy_source(
        backend.flows,
        f"""
id: single
namespace: {NS}
concurrency:
  limit: 1
tasks:
  - id: nap
    type: io.kestra.plugin.core.flow.Sleep
    duration: PT0.2S
""",
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        ids = [await start(backend, "single") for _ in range(3)]
        executions = [await ended(backend, i) for i in ids]
    assert [e.state.current for e in executions] == [S.SUCCESS] * 3
    for later in executions[1:]:
        assert S.QUEUED in [h.state for h in later.state.histories], later.state.histories

    def window(execution: Execution) -> tuple[Any, Any]:
        running = [h.date for h in execution.state.histories if h.state is S.RUNNING]
        return running[-1], execution.state.end_date

    windows = [window(e) for e in executions]
    for (_, end), (start_next, _) in itertools.pairwise(windows):
        assert end <= start_next, windows


@pytest.mark.slow
@pytest.mark.asyncio
async def test_a_schedule_trigger_fires_through_the_server(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await deploy_source(
        backend.flows,
        f"""
id: ticking
namespace: {NS}
tasks:
  - id: when
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.date }}}}"
triggers:
  - id: every_second
    type: io.kestra.plugin.core.trigger.Schedule
    cron: "* * * * * *"
    withSeconds: true
""",
    )

    async def fired() -> bool:
        found = await backend.executions.search(namespace=NS, flow_id="ticking")
        return any(e.state.current is S.SUCCESS for e in found)

    async with asyncio.timeout(10), running(tmp_path, backend):
        await until(fired, 5, "a scheduled execution succeeded")
    found = await backend.executions.search(namespace=NS, flow_id="ticking", limit=100)
    done = [e for e in found if e.state.current is S.SUCCESS]
    for execution in done:
        assert execution.trigger is not None
        date = execution.trigger["date"]
        when = datetime.fromisoformat(date)
        assert when.microsecond == 0, date
        assert execution.task_run_list[0].outputs == {"value": date}
        assert execution.id == derived_id(NS, "ticking", "every_second", when.isoformat())


@pytest.mark.asyncio
async def test_subflow_runs_the_child_and_returns_its_outputs_and_failure(
    tmp_path: Path,
) -> None:
    backend = MemoryBackend()
    await deploy_source(
        backend.flows,
        f"""
id: child
namespace: {NS}
inputs:
  - id: name
    type: STRING
  - id: fail
    type: BOOLEAN
    defaults: false
tasks:
  - id: maybe_fail
    type: io.kestra.plugin.core.execution.Fail
    condition: "{{{{ inputs.fail }}}}"
outputs:
  - id: greeting
    type: STRING
    value: "hello {{{{ inputs.name }}}}"
""",
    )
    await deploy_source(
        backend.flows,
        f"""
id: parent
namespace: {NS}
inputs:
  - id: fail
    type: BOOLEAN
    defaults: false
tasks:
  - id: call
    type: io.kestra.plugin.core.flow.Subflow
    namespace: {NS}
    flowId: child
    inputs:
      name: Ada
      fail: "{{{{ inputs.fail }}}}"
  - id: use
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ outputs.call.outputs.greeting }}}}"
""",
    )
    async with asyncio.timeout(10), running(tmp_path, backend):
        ok = await ended(backend, await start(backend, "parent"))
        bad = await ended(backend, await start(backend, "parent", {"fail": True}))
        ok_child = await get(backend, ok.runs_of("call")[0].outputs["executionId"])  # type: ignore[index]
        bad_child = await get(backend, bad.runs_of("call")[0].outputs["executionId"])  # type: ignore[index]

    assert ok.state.current is S.SUCCESS
    assert ok.runs_of("use")[0].outputs == {"value": "hello Ada"}
    assert ok.runs_of("call")[0].outputs == {
        "executionId": ok_child.id,
        "state": "SUCCESS",
        "outputs": {"greeting": "hello Ada"},
    }
    assert (ok_child.state.current, ok_child.parent_id) == (S.SUCCESS, ok.id)
    assert ok_child.inputs == {"name": "Ada", "fail": False}

    assert bad.state.current is S.FAILED
    assert bad.runs_of("call")[0].state.current is S.FAILED
    assert bad.runs_of("use") == []
    assert (bad_child.state.current, bad_child.parent_id) == (S.FAILED, bad.id)
