"""Kill rules the engine must keep (each was broken by a mutation no other test caught)."""

from __future__ import annotations

from runtime.flow.engine import apply
from runtime.flow.events import ExecutionCreated, Kill, RunTask, WakeAt, WorkerResult
from runtime.flow.execution import Execution, new_execution
from runtime.flow.states import StateType
from services.dry_run import EPOCH
from tests.unit.engine_helpers import flow_of

S = StateType

ONE_TASK_WITH_RETRY = """
id: t
namespace: company.team
tasks:
  - id: a
    type: io.kestra.plugin.core.log.Log
    message: hi
    retry:
      type: constant
      interval: PT1S
      maxAttempt: 5
"""


def _started(text: str) -> tuple[Execution, list[RunTask]]:
    flow = flow_of(text)
    ex = new_execution(id="e", namespace="company.team", flow_id="t", flow_revision=1, at=EPOCH)
    ex, cmds = apply(ex, flow, ExecutionCreated(at=EPOCH))
    return ex, [c for c in cmds if isinstance(c, RunTask)]


def test_a_kill_before_any_worker_report_ends_killed_at_once() -> None:
    flow = flow_of(ONE_TASK_WITH_RETRY)
    ex, jobs = _started(ONE_TASK_WITH_RETRY)
    assert [j.task_id for j in jobs] == ["a"]
    assert ex.task_run_list[0].state.current is S.CREATED
    killed, _ = apply(ex, flow, Kill(at=EPOCH))
    assert killed.state.current is S.KILLED
    assert killed.task_run_list[0].state.current is S.KILLED


def test_a_failure_reported_while_killing_is_not_retried() -> None:
    flow = flow_of(ONE_TASK_WITH_RETRY)
    ex, jobs = _started(ONE_TASK_WITH_RETRY)
    run_id = jobs[0].task_run_id
    ex, _ = apply(ex, flow, WorkerResult(at=EPOCH, task_run_id=run_id, attempt=1, state=S.RUNNING))
    ex, _ = apply(ex, flow, Kill(at=EPOCH))
    assert ex.state.current is S.KILLING
    ex, cmds = apply(
        ex, flow, WorkerResult(at=EPOCH, task_run_id=run_id, attempt=1, state=S.FAILED)
    )
    assert not [c for c in cmds if isinstance(c, RunTask | WakeAt)], cmds
    assert ex.task_run_list[0].state.current is not S.RETRYING
    assert len(ex.task_run_list[0].attempts) == 1
    assert ex.state.current is S.KILLED
