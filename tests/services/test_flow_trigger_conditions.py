"""Flow triggers with the core condition types, and joins over several upstream flows
(MultipleCondition, preconditions), on the memory and SQLite backends."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from backends.memory import MemoryBackend
from backends.protocols import Backend
from backends.sqlite import SqliteBackend
from runtime.flow.execution import new_execution
from runtime.flow.ids import derived_id, new_id
from services.executor import submit
from services.flows import deploy_source
from tests.services.server_helpers import NS, S, drained, ended, running

LEFT = f"""
id: left
namespace: {NS}
tasks:
  - id: ok
    type: io.kestra.plugin.core.debug.Return
    format: left
"""
RIGHT = LEFT.replace("id: left", "id: right")
BROKEN = f"""
id: broken
namespace: {NS}
tasks:
  - id: ko
    type: io.kestra.plugin.core.execution.Fail
"""
JOINED = f"""
id: joined
namespace: {NS}
tasks:
  - id: ran
    type: io.kestra.plugin.core.debug.Return
    format: "{{{{ trigger.flowId }}}}"
triggers:
  - id: both
    type: io.kestra.plugin.core.trigger.Flow
    conditions:
      - id: join
        type: io.kestra.plugin.core.condition.MultipleCondition
        window: PT1H
        conditions:
          ok:
            type: io.kestra.plugin.core.condition.ExecutionStatus
            in: [SUCCESS]
          from_left:
            type: io.kestra.plugin.core.condition.ExecutionFlow
            namespace: {NS}
            flowId: left
          from_right:
            type: io.kestra.plugin.core.condition.ExecutionFlow
            namespace: {NS}
            flowId: right
"""
PRE_JOINED = f"""
id: pre_joined
namespace: {NS}
tasks:
  - id: ran
    type: io.kestra.plugin.core.debug.Return
    format: joined
triggers:
  - id: both
    type: io.kestra.plugin.core.trigger.Flow
    preconditions:
      id: both
      flows:
        - namespace: {NS}
          flowId: left
          states: [SUCCESS]
        - namespace: {NS}
          flowId: right
          states: [SUCCESS]
      where:
        - id: labelled_left
          filters:
            - field: FLOW_ID
              type: EQUAL_TO
              value: left
            - field: EXPRESSION
              type: IS_TRUE
              value: "{{{{ labels.team == 'a' }}}}"
"""
PICKY = f"""
id: picky
namespace: {NS}
inputs:
  # required, and no trigger gives it: Kestra starts the execution all the same
  - id: never_given
    type: STRING
tasks:
  - id: ran
    type: io.kestra.plugin.core.debug.Return
    format: picky
triggers:
  - id: filtered
    type: io.kestra.plugin.core.trigger.Flow
    conditions:
      - type: io.kestra.plugin.core.condition.Or
        conditions:
          - type: io.kestra.plugin.core.condition.ExecutionFlow
            namespace: {NS}
            flowId: left
          - type: io.kestra.plugin.core.condition.ExecutionFlow
            namespace: {NS}
            flowId: broken
      - type: io.kestra.plugin.core.condition.Not
        conditions:
          - type: io.kestra.plugin.core.condition.ExecutionStatus
            in: [FAILED]
      - type: io.kestra.plugin.core.condition.ExecutionLabels
        labels:
          team: a
      - type: io.kestra.plugin.core.condition.Expression
        expression: "{{{{ execution.flowId == 'left' and flow.id == 'picky' }}}}"
      - type: io.kestra.plugin.core.condition.Or
        conditions:
          - type: io.kestra.plugin.core.condition.Weekend
          - type: io.kestra.plugin.core.condition.Not
            conditions:
              - type: io.kestra.plugin.core.condition.Weekend
      - type: io.kestra.plugin.core.condition.DateTimeBetween
        after: "2020-01-01T00:00:00Z"
      - type: io.kestra.plugin.core.condition.FlowNamespace
        namespace: {NS}
"""


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    if request.param == "memory":
        return MemoryBackend()
    return SqliteBackend(tmp_path / "db.sqlite")  # the server starts and stops it


async def _start(backend: Backend, flow_id: str, labels: dict[str, str] | None = None) -> str:
    record = await backend.flows.get(NS, flow_id)
    assert record is not None
    execution = new_execution(
        id=new_id(),
        namespace=NS,
        flow_id=flow_id,
        flow_revision=record.revision,
        at=backend.clock(),
        labels=labels,
    )
    await submit(backend, execution)
    return execution.id


def _fired(flow_id: str, trigger_id: str, upstream_id: str) -> str:
    return derived_id(NS, flow_id, trigger_id, upstream_id)


@pytest.mark.slow
@pytest.mark.asyncio
async def test_joins_fire_once_every_upstream_flow_has_ended(
    tmp_path: Path, backend: Backend
) -> None:
    await backend.start()  # to deploy before the server runs
    for source in (LEFT, RIGHT, BROKEN, JOINED, PRE_JOINED, PICKY):
        await deploy_source(backend.flows, source)
    async with asyncio.timeout(30), running(tmp_path, backend):
        left = await ended(backend, await _start(backend, "left", {"team": "a"}))
        broken = await ended(backend, await _start(backend, "broken", {"team": "a"}))
        await drained(backend)
        # one side of each join only: nothing yet
        assert await backend.executions.get(_fired("joined", "both", left.id)) is None
        assert await backend.executions.get(_fired("pre_joined", "both", left.id)) is None
        right = await ended(backend, await _start(backend, "right"))
        joined = await ended(backend, _fired("joined", "both", right.id))
        pre_joined = await ended(backend, _fired("pre_joined", "both", right.id))
        picky = await ended(backend, _fired("picky", "filtered", left.id))
        await drained(backend)
        # the join started over: the next right alone fires nothing
        again = await ended(backend, await _start(backend, "right"))
        await drained(backend)
        assert await backend.executions.get(_fired("joined", "both", again.id)) is None
        for upstream in (broken, right):
            assert await backend.executions.get(_fired("picky", "filtered", upstream.id)) is None
        joins = await backend.executions.search(namespace=NS, flow_id="joined")
    assert broken.state.current is S.FAILED
    assert joined.state.current is S.SUCCESS
    assert joined.task_run_list[0].outputs == {"value": "right"}
    assert pre_joined.state.current is S.SUCCESS
    assert picky.state.current is S.SUCCESS
    assert [e.id for e in joins] == [joined.id]
