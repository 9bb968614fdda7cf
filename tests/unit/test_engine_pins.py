"""Engine rules no other test pinned: each was changed by a mutation and every test
still passed. They drive the pure engine (``apply``) event by event, as the executor
does, and hold whatever runs it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime.flow.engine import guess_state
from runtime.flow.events import (
    DelayElapsed,
    DelayKind,
    KillTask,
    Restart,
    RunTask,
    SubflowEnded,
    WakeAt,
    WorkerResult,
)
from runtime.flow.states import StateType
from tests.unit.engine_driver import LOG, T0, Run

S = StateType


# -- Subflow ---------------------------------------------------------------------------
SUBFLOW = f"""
id: t
namespace: company.team
tasks:
  - id: sub
    type: io.kestra.plugin.core.flow.Subflow
    namespace: company.team
    flowId: child
    TRANSMIT
    retry:
      type: constant
      interval: PT1S
      maxAttempt: 3
  - id: after
    type: {LOG}
    message: after
"""


def test_a_retried_subflow_ignores_the_late_end_of_its_first_child() -> None:
    run = Run(SUBFLOW.replace("TRANSMIT", "transmitFailed: true"))
    (first,) = run.children_created()
    sub = run.run_of("sub").id
    run.send(SubflowEnded(at=T0, task_run_id=sub, execution_id=first.execution_id, state=S.FAILED))
    assert run.run_of("sub").state.current is S.RETRYING
    run.send(DelayElapsed(at=T0, delay=DelayKind.RETRY, task_run_id=sub, attempt=1))
    second = run.children_created()[-1]
    assert second.execution_id != first.execution_id
    before = run.execution

    # the first child's end, delivered late (or again): the second attempt is running
    for state in (S.SUCCESS, S.FAILED):
        late = SubflowEnded(at=T0, task_run_id=sub, execution_id=first.execution_id, state=state)
        assert run.send(late) == []
        assert run.execution is before

    run.send(
        SubflowEnded(at=T0, task_run_id=sub, execution_id=second.execution_id, state=S.SUCCESS)
    )
    assert run.run_of("sub").state.current is S.SUCCESS
    assert len(run.run_of("sub").attempts) == 2
    assert [c.task_id for c in run.commands if isinstance(c, RunTask)] == ["after"]


@pytest.mark.parametrize(
    ("transmit", "child", "task_end"),
    [
        ("true", S.WARNING, S.WARNING),
        ("false", S.WARNING, S.SUCCESS),
        ("false", S.FAILED, S.SUCCESS),
        ("true", S.SUCCESS, S.SUCCESS),
    ],
)
def test_transmit_failed_passes_a_child_warning_on_as_a_warning(
    transmit: str, child: StateType, task_end: StateType
) -> None:
    run = Run(SUBFLOW.replace("TRANSMIT", f"transmitFailed: {transmit}"))
    (created,) = run.children_created()
    sub = run.run_of("sub").id
    run.send(SubflowEnded(at=T0, task_run_id=sub, execution_id=created.execution_id, state=child))
    assert run.run_of("sub").state.current is task_end
    assert run.run_of("sub").outputs == {
        "executionId": created.execution_id,
        "state": child.value,
        "outputs": {},
    }
    # a warning is not a failure: the flow goes on either way
    assert [c.task_id for c in run.commands if isinstance(c, RunTask)] == ["after"]


# -- scopes ---------------------------------------------------------------------------
PARALLEL = f"""
id: t
namespace: company.team
tasks:
  - id: p
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - id: a
        type: {LOG}
        message: a
      - id: b
        type: {LOG}
        message: b
"""


@pytest.mark.parametrize("first", ["a", "b"])
def test_a_scope_whose_children_ended_killed_and_failed_is_killed(first: str) -> None:
    run = Run(PARALLEL)
    ends = {"a": S.FAILED, "b": S.KILLED}
    second = "b" if first == "a" else "a"
    run.report(first, ends[first])
    assert run.run_of("p").state.current is S.RUNNING  # waits for its other child
    run.report(second, ends[second])
    assert run.run_of("p").state.current is S.KILLED
    assert run.execution.state.current is S.KILLED


def test_the_guessed_state_puts_killed_before_failed_before_warning_before_paused() -> None:
    def guess(*states: StateType, **allow: bool) -> StateType:
        runs = []
        for i, state in enumerate(states):
            run = Run(PARALLEL).run_of("p")
            runs.append(run.with_state(S.RUNNING, T0).with_state(state, T0 + timedelta(i)))
        return guess_state(runs, **allow)

    assert guess(S.FAILED, S.KILLED, S.WARNING) is S.KILLED
    assert guess(S.WARNING, S.FAILED, S.SUCCESS) is S.FAILED
    assert guess(S.SUCCESS, S.PAUSED, S.WARNING) is S.WARNING
    assert guess(S.SUCCESS, S.PAUSED) is S.PAUSED
    assert guess(S.SUCCESS, S.SKIPPED) is S.SUCCESS
    assert guess(S.SUCCESS, S.FAILED, allow_failure=True) is S.WARNING
    assert guess(S.FAILED, allow_failure=True, allow_warning=True) is S.SUCCESS
    assert guess(S.WARNING, allow_warning=True) is S.SUCCESS
    assert guess(S.WARNING, allow_failure=True) is S.WARNING
    assert guess(S.KILLED, allow_failure=True, allow_warning=True) is S.KILLED


# -- restart ----------------------------------------------------------------------------
TIMED_OUT = f"""
id: t
namespace: company.team
timeout: PT1M
tasks:
  - id: p
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - id: a
        type: {LOG}
        message: a
      - id: b
        type: {LOG}
        message: b
"""


def test_a_restart_after_a_flow_timeout_runs_the_failed_branch_and_keeps_the_killed_one() -> None:
    run = Run(TIMED_OUT)
    run.report("a", S.FAILED)
    b = run.run_of("b").id
    run.send(WorkerResult(at=T0, task_run_id=b, attempt=1, state=S.RUNNING))
    late = T0 + timedelta(minutes=1)
    commands = run.send(DelayElapsed(at=late, delay=DelayKind.FLOW_TIMEOUT))
    assert commands[-1] == KillTask(at=late, task_run_id=b)
    run.send(WorkerResult(at=late, task_run_id=b, attempt=1, state=S.KILLED))
    assert run.execution.state.current is S.FAILED  # a flow timeout ends FAILED

    run.send(Restart(at=late))
    assert run.execution.state.current is S.RUNNING
    assert run.run_of("a").state.current is S.RESTARTED
    assert run.run_of("b").state.current is S.KILLED  # restart re-runs FAILED runs only
    run.report("a", S.SUCCESS, at=late)
    assert run.run_of("a").state.current is S.SUCCESS
    assert len(run.run_of("a").attempts) == 2
    # The timeout was the first attempt's: the restarted execution did not time out,
    # so it ends as its runs say, KILLED (b) over SUCCESS (a), not FAILED.
    assert run.run_of("p").state.current is S.KILLED
    assert run.execution.state.current is S.KILLED
    assert run.execution.metadata.attempt_number == 2


ERRORS_WITH_TIMEOUT = f"""
id: t
namespace: company.team
tasks:
  - id: a
    type: {LOG}
    message: a
errors:
  - id: handle
    type: io.kestra.plugin.core.flow.Sequential
    timeout: PT1H
    tasks:
      - id: notify
        type: {LOG}
        message: notify
"""


def test_a_run_recreated_after_a_restart_is_a_new_generation_that_old_wake_ups_miss() -> None:
    run = Run(ERRORS_WITH_TIMEOUT)
    run.report("a", S.FAILED)
    first = run.run_of("handle")
    (first_timeout,) = [c for c in run.commands if isinstance(c, WakeAt)]
    assert (first_timeout.delay, first_timeout.task_run_id) == (DelayKind.TIMEOUT, first.id)
    run.report("notify", S.SUCCESS)
    assert run.execution.state.current is S.FAILED

    later = T0 + timedelta(minutes=10)
    run.send(Restart(at=later))
    assert run.execution.runs_of("handle") == []  # the errors branch is dropped
    run.report("a", S.FAILED, at=later)
    again = run.run_of("handle")
    assert again.id != first.id
    assert again.state.current is S.RUNNING

    # the first generation's timeout comes due while the new handler still runs
    stale = DelayElapsed(at=first_timeout.when, delay=DelayKind.TIMEOUT, task_run_id=first.id)
    assert run.send(stale) == []
    assert run.run_of("handle").state.current is S.RUNNING
    run.report("notify", S.SUCCESS, at=first_timeout.when)
    assert run.run_of("handle").state.current is S.SUCCESS
    assert run.execution.state.current is S.FAILED
