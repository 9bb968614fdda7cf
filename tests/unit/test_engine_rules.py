"""Engine rules a mutation run found unguarded: wake-ups (retry, pause, WaitFor,
timeouts), retry dates, replay, subflow requests, flow outputs, loops. Each drives the
pure engine event by event (tests/unit/engine_driver.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime.flow.engine import EngineError
from runtime.flow.events import (
    CreateExecution,
    CreateSubflow,
    DelayElapsed,
    DelayKind,
    ExecutionEnded,
    Kill,
    Log,
    Replay,
    Restart,
    Resume,
    RunTask,
    SubflowEnded,
    WakeAt,
    WorkerResult,
)
from runtime.flow.execution import Execution, to_kestra_dict
from runtime.flow.states import StateType
from tests.unit.engine_driver import LOG, T0, Run

S = StateType
MINUTE = timedelta(minutes=1)


def wakes(run: Run, kind: DelayKind) -> list[WakeAt]:
    return [c for c in run.commands if isinstance(c, WakeAt) and c.delay is kind]


def logs(run: Run) -> list[tuple[str, str, str | None]]:
    return [(c.level, c.message, c.task_id) for c in run.commands if isinstance(c, Log)]


def one(task_id: str, extra: str = "", top: str = "") -> str:
    return f"""
id: t
namespace: company.team
{top}
tasks:
  - id: {task_id}
    type: {LOG}
    message: hi
{extra}
"""


# -- flow timeout ---------------------------------------------------------------------------
def test_a_flow_timeout_due_after_the_end_changes_nothing() -> None:
    run = Run(one("a", top="timeout: PT1M"))
    run.report("a", S.SUCCESS)
    assert run.execution.state.current is S.SUCCESS
    ended = run.execution
    assert run.send(DelayElapsed(at=T0 + MINUTE, delay=DelayKind.FLOW_TIMEOUT)) == []
    assert run.execution is ended


def test_a_flow_timeout_logs_an_error_naming_the_limit() -> None:
    run = Run(one("a", top="timeout: PT1M"))
    run.send(DelayElapsed(at=T0 + MINUTE, delay=DelayKind.FLOW_TIMEOUT))
    assert ("ERROR", "flow timeout of 0:01:00 reached: killing", None) in logs(run)
    assert run.execution.state.current is S.FAILED


# -- retries ---------------------------------------------------------------------------------
def retrying(retry: str) -> str:
    return one("a", extra="    retry:\n" + "".join(f"      {line}\n" for line in retry.split(";")))


def test_the_next_attempt_is_due_an_interval_after_the_last_one_ended() -> None:
    run = Run(retrying("type: constant;interval: PT10S;maxAttempt: 3"))
    a = run.run_of("a").id
    ended_at = T0 + timedelta(seconds=5)
    run.send(WorkerResult(at=T0, task_run_id=a, attempt=1, state=S.RUNNING))
    run.send(WorkerResult(at=ended_at, task_run_id=a, attempt=1, state=S.FAILED))
    (wake,) = wakes(run, DelayKind.RETRY)
    assert (wake.when, wake.task_run_id, wake.attempt) == (ended_at + timedelta(seconds=10), a, 1)
    # a second failure: the wake-up names the second attempt
    run.send(DelayElapsed(at=wake.when, delay=DelayKind.RETRY, task_run_id=a, attempt=1))
    run.report("a", S.FAILED, at=wake.when + timedelta(seconds=1))
    second = wakes(run, DelayKind.RETRY)[-1]
    assert (second.attempt, second.when) == (2, wake.when + timedelta(seconds=11))


def test_a_retry_wake_up_for_an_older_attempt_starts_nothing() -> None:
    run = Run(retrying("type: constant;interval: PT10S;maxAttempt: 5"))
    a = run.run_of("a").id
    run.report("a", S.FAILED)
    first = DelayElapsed(at=T0, delay=DelayKind.RETRY, task_run_id=a, attempt=1)
    run.send(first)
    run.report("a", S.FAILED)
    assert run.run_of("a").state.current is S.RETRYING
    before = run.execution
    assert run.send(first) == []  # delivered again: attempt 3 must wait for its own
    assert run.execution is before
    # and a wake-up for a run that is not retrying (it runs) starts nothing either
    run.send(DelayElapsed(at=T0, delay=DelayKind.RETRY, task_run_id=a, attempt=2))
    running = run.execution
    assert run.send(DelayElapsed(at=T0, delay=DelayKind.RETRY, task_run_id=a)) == []
    assert run.execution is running


def test_random_retry_delays_stay_in_range_and_differ_between_attempts() -> None:
    run = Run(retrying("type: random;minInterval: PT10S;maxInterval: PT20S;maxAttempt: 6"))
    a = run.run_of("a").id
    delays = []
    for attempt in range(1, 6):
        run.report("a", S.FAILED, at=T0)
        wake = wakes(run, DelayKind.RETRY)[-1]
        delays.append(wake.when - T0)
        run.send(DelayElapsed(at=T0, delay=DelayKind.RETRY, task_run_id=a, attempt=attempt))
    assert all(timedelta(seconds=10) <= d <= timedelta(seconds=20) for d in delays), delays
    assert len(set(delays)) > 1, delays  # drawn per attempt, not once
    # the same events give the same dates: the draw is derived, not random
    again = Run(retrying("type: random;minInterval: PT10S;maxInterval: PT20S;maxAttempt: 6"))
    again.report("a", S.FAILED, at=T0)
    assert wakes(again, DelayKind.RETRY)[0].when - T0 == delays[0]


def test_a_retry_due_exactly_at_max_duration_still_runs() -> None:
    run = Run(retrying("type: constant;interval: PT10S;maxDuration: PT20S;maxAttempt: 9"))
    a = run.run_of("a").id
    for attempt, at in ((1, T0), (2, T0 + timedelta(seconds=10))):
        run.report("a", S.FAILED, at=at)
        run.send(DelayElapsed(at=at, delay=DelayKind.RETRY, task_run_id=a, attempt=attempt))
    # the first attempt started at T0; the third would start at T0 + 20 s: allowed
    run.report("a", S.FAILED, at=T0 + timedelta(seconds=10))
    assert wakes(run, DelayKind.RETRY)[-1].when == T0 + timedelta(seconds=20)
    assert run.run_of("a").state.current is S.RETRYING


def test_retry_as_a_new_execution_ends_this_one_retried_and_creates_the_next() -> None:
    retry = "type: constant;interval: PT1M;maxAttempt: 3;behavior: CREATE_NEW_EXECUTION"
    run = Run(retrying(retry))
    a = run.run_of("a").id
    run.report("a", S.FAILED, at=T0)
    (wake,) = wakes(run, DelayKind.NEW_EXECUTION)
    assert (wake.when, wake.task_run_id) == (T0 + MINUTE, a)
    assert run.run_of("a").state.current is S.RETRIED
    assert run.execution.state.current is S.RETRIED
    assert [c.state for c in run.commands if isinstance(c, ExecutionEnded)] == [S.RETRIED]

    run.send(DelayElapsed(at=wake.when, delay=DelayKind.NEW_EXECUTION, task_run_id=a))
    (created,) = [c.execution for c in run.commands if isinstance(c, CreateExecution)]
    assert created.id != run.execution.id
    assert created.original_id == run.execution.id
    assert created.state.current is S.CREATED
    assert (created.task_run_list, created.outputs, created.memo) == ((), None, None)
    assert created.metadata.attempt_number == 2
    assert (created.namespace, created.flow_id) == ("company.team", "t")


def test_retry_as_a_new_execution_stops_at_max_attempt_counting_executions() -> None:
    retry = "type: constant;interval: PT1M;maxAttempt: 2;behavior: CREATE_NEW_EXECUTION"
    first = Run(retrying(retry))
    first.report("a", S.FAILED)
    first.send(DelayElapsed(at=T0 + MINUTE, delay=DelayKind.NEW_EXECUTION))
    (created,) = [c.execution for c in first.commands if isinstance(c, CreateExecution)]
    second = Run(retrying(retry))
    second.execution = created
    second.send_created()
    second.report("a", S.FAILED)
    assert wakes(second, DelayKind.NEW_EXECUTION) == []
    assert second.execution.state.current is S.FAILED


# -- pauses ----------------------------------------------------------------------------------
def paused(behavior: str = "", duration: str = "pauseDuration: PT1H") -> Run:
    return Run(f"""
id: t
namespace: company.team
tasks:
  - id: p
    type: io.kestra.plugin.core.flow.Pause
    {duration}
    {behavior}
  - id: after
    type: {LOG}
    message: after
""")


@pytest.mark.parametrize(
    ("behavior", "task_end", "execution_end"),
    [
        ("RESUME", S.SUCCESS, S.SUCCESS),
        ("WARN", S.WARNING, S.WARNING),
        ("FAIL", S.FAILED, S.FAILED),
        ("CANCEL", S.CANCELLED, S.CANCELLED),
    ],
)
def test_a_pause_ends_as_its_behavior_says_when_its_duration_passes(
    behavior: str, task_end: StateType, execution_end: StateType
) -> None:
    run = paused(f"behavior: {behavior}")
    assert run.execution.state.current is S.PAUSED
    (wake,) = wakes(run, DelayKind.PAUSE)
    assert wake.when == T0 + timedelta(hours=1)
    p = run.run_of("p").id
    run.send(DelayElapsed(at=wake.when, delay=DelayKind.PAUSE, task_run_id=p))
    assert run.run_of("p").state.current is task_end
    if task_end is not S.FAILED:
        assert run.execution.state.current is S.RUNNING  # no longer PAUSED
        run.report("after", S.SUCCESS)
    assert run.execution.state.current is execution_end


def test_a_pause_wake_up_after_a_resume_changes_nothing() -> None:
    run = paused()
    p = run.run_of("p").id
    run.send(Resume(at=T0))
    assert run.run_of("p").state.current is S.SUCCESS
    before = run.execution
    assert run.send(DelayElapsed(at=T0, delay=DelayKind.PAUSE, task_run_id=p)) == []
    assert run.execution is before


def test_the_execution_stays_paused_until_its_last_pause_ends() -> None:
    run = Run("""
id: t
namespace: company.team
tasks:
  - id: both
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - id: p1
        type: io.kestra.plugin.core.flow.Pause
        pauseDuration: PT1M
      - id: p2
        type: io.kestra.plugin.core.flow.Pause
        pauseDuration: PT2M
""")
    assert run.execution.state.current is S.PAUSED
    run.send(DelayElapsed(at=T0, delay=DelayKind.PAUSE, task_run_id=run.run_of("p1").id))
    assert run.execution.state.current is S.PAUSED  # p2 still waits
    run.send(DelayElapsed(at=T0, delay=DelayKind.PAUSE, task_run_id=run.run_of("p2").id))
    assert run.execution.state.current is S.SUCCESS


def test_resuming_one_of_two_pauses_leaves_the_other_paused() -> None:
    run = Run(f"""
id: t
namespace: company.team
tasks:
  - id: both
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - {{id: p1, type: io.kestra.plugin.core.flow.Pause}}
      - {{id: p2, type: io.kestra.plugin.core.flow.Pause}}
  - {{id: after, type: {LOG}, message: x}}
""")
    run.send(Resume(at=T0, task_run_id=run.run_of("p1").id, inputs={"ok": 1}))
    assert run.run_of("p1").state.current is S.SUCCESS
    assert run.run_of("p1").outputs == {"onResume": {"ok": 1}}
    assert run.run_of("p2").state.current is S.PAUSED
    run.send(Resume(at=T0))
    assert run.run_of("p2").state.current is S.SUCCESS
    assert run.run_of("p2").outputs is None


# -- flowable timeouts --------------------------------------------------------------------------
SEQ_TIMEOUT = f"""
id: t
namespace: company.team
tasks:
  - id: s
    type: io.kestra.plugin.core.flow.Sequential
    timeout: PT1M
    tasks:
      - {{id: a, type: {LOG}, message: a}}
      - {{id: b, type: {LOG}, message: b}}
"""


def test_a_flowable_timeout_kills_its_children_and_fails_it() -> None:
    run = Run(SEQ_TIMEOUT)
    s, a = run.run_of("s").id, run.run_of("a").id
    (wake,) = wakes(run, DelayKind.TIMEOUT)
    assert (wake.when, wake.task_run_id) == (T0 + MINUTE, s)
    run.send(WorkerResult(at=T0, task_run_id=a, attempt=1, state=S.RUNNING))
    run.send(DelayElapsed(at=wake.when, delay=DelayKind.TIMEOUT, task_run_id=s))
    assert ("ERROR", "task 's' timed out after 0:01:00", "s") in logs(run)
    assert run.run_of("s").state.current is S.RUNNING  # until a reports its end
    run.send(WorkerResult(at=wake.when, task_run_id=a, attempt=1, state=S.KILLED))
    assert run.run_of("a").state.current is S.KILLED
    assert run.run_of("s").state.current is S.FAILED
    assert run.execution.runs_of("b") == []
    assert run.execution.state.current is S.FAILED


def test_a_flowable_timeout_due_after_it_ended_changes_nothing() -> None:
    run = Run(SEQ_TIMEOUT)
    run.report("a", S.SUCCESS)
    run.report("b", S.SUCCESS)
    assert run.execution.state.current is S.SUCCESS
    done = run.execution
    s = run.run_of("s").id
    assert run.send(DelayElapsed(at=T0 + MINUTE, delay=DelayKind.TIMEOUT, task_run_id=s)) == []
    assert run.execution is done


def test_a_pause_not_resumed_within_its_timeout_fails_and_the_execution_runs_on() -> None:
    run = Run(f"""
id: t
namespace: company.team
tasks:
  - id: both
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - {{id: p, type: io.kestra.plugin.core.flow.Pause, timeout: PT1M}}
      - {{id: a, type: {LOG}, message: a}}
""")
    assert run.execution.state.current is S.PAUSED
    p = run.run_of("p").id
    run.send(DelayElapsed(at=T0 + MINUTE, delay=DelayKind.TIMEOUT, task_run_id=p))
    assert run.run_of("p").state.current is S.FAILED
    assert run.execution.state.current is S.RUNNING  # a still runs
    run.report("a", S.SUCCESS)
    assert run.execution.state.current is S.FAILED


# -- WaitFor ---------------------------------------------------------------------------------
def waiting(condition: str, frequency: str = "interval: PT5S", extra: str = "") -> Run:
    return Run(f"""
id: t
namespace: company.team
tasks:
  - id: w
    type: io.kestra.plugin.core.flow.WaitFor
    condition: "{condition}"
    checkFrequency:
      {frequency}
    {extra}
    tasks:
      - {{id: probe, type: {LOG}, message: x}}
""")


def probe_once(run: Run, iteration: int, at: object = T0) -> None:
    (probe,) = [r for r in run.execution.runs_of("probe") if r.iteration == iteration]
    job = [c for c in run.commands if isinstance(c, RunTask) and c.task_run_id == probe.id][-1]
    run.send(WorkerResult(at=T0, task_run_id=probe.id, attempt=job.attempt, state=S.SUCCESS))


def test_wait_for_counts_iterations_and_waits_an_interval_between_them() -> None:
    run = waiting("{{ false }}", "interval: PT5S\n      maxIterations: 3")
    w = run.run_of("w").id
    assert run.run_of("w").outputs == {"iterationCount": 1}
    for iteration in range(2):
        probe_once(run, iteration)
        wake = wakes(run, DelayKind.WAIT_FOR)[-1]
        assert (wake.when, wake.task_run_id, wake.attempt) == (
            T0 + timedelta(seconds=5),
            w,
            iteration,
        )
        assert run.run_of("w").state.current is S.RUNNING
        stale = DelayElapsed(at=T0, delay=DelayKind.WAIT_FOR, task_run_id=w, attempt=iteration + 1)
        before = run.execution
        assert run.send(stale) == []  # a wake-up for a later iteration: not yet
        assert run.execution is before
        run.send(DelayElapsed(at=T0, delay=DelayKind.WAIT_FOR, task_run_id=w, attempt=iteration))
        assert run.run_of("w").outputs == {"iterationCount": iteration + 2}
        assert len(run.execution.runs_of("probe")) == iteration + 2
    probe_once(run, 2)
    # the limit reached, without failOnMaxReached: the loop ends as its runs did
    assert run.run_of("w").state.current is S.SUCCESS
    assert ("WARNING", "WaitFor 'w' reached its limit", "w") in logs(run)
    assert len(run.execution.runs_of("probe")) == 3


def test_wait_for_fails_at_its_limit_when_told_to() -> None:
    run = waiting("{{ false }}", "interval: PT5S\n      maxIterations: 1", "failOnMaxReached: true")
    probe_once(run, 0)
    assert run.run_of("w").state.current is S.FAILED
    assert run.execution.state.current is S.FAILED


def test_wait_for_stops_after_its_max_duration() -> None:
    run = waiting(
        "{{ false }}", "interval: PT5S\n      maxDuration: PT5S", "failOnMaxReached: true"
    )
    w = run.run_of("w").id
    probe_once(run, 0)
    assert run.run_of("w").state.current is S.RUNNING  # 0 s of 5 s spent
    later = T0 + timedelta(seconds=5)
    run.send(DelayElapsed(at=later, delay=DelayKind.WAIT_FOR, task_run_id=w, attempt=0))
    (probe,) = [r for r in run.execution.runs_of("probe") if r.iteration == 1]
    run.send(WorkerResult(at=later, task_run_id=probe.id, attempt=1, state=S.SUCCESS))
    assert run.run_of("w").state.current is S.FAILED


def test_wait_for_with_a_broken_condition_fails_and_says_why() -> None:
    run = waiting("{{ nothing.here }}")
    probe_once(run, 0)
    assert run.run_of("w").state.current is S.FAILED
    (error,) = [m for level, m, task in logs(run) if level == "ERROR"]
    assert error.startswith("WaitFor condition of 'w': ")


def test_wait_for_ends_once_the_condition_holds() -> None:
    run = waiting("{{ true }}")
    probe_once(run, 0)
    assert run.run_of("w").state.current is S.SUCCESS
    assert wakes(run, DelayKind.WAIT_FOR) == []


# -- loops ----------------------------------------------------------------------------------------
def looping(values: str) -> Run:
    return Run(f"""
id: t
namespace: company.team
tasks:
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    concurrencyLimit: 0
    values: {values}
    tasks:
      - {{id: item, type: {LOG}, message: "{{{{ taskrun.value }}}}"}}
""")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ('\'["a", "b", "a"]\'', ["a", "b"]),  # a JSON string; each value once
        ("[1, {x: 2}, 1]", ["1", '{"x":2}']),  # not strings: JSON, compact
        ("{k: v, n: 1}", ['{"key":"k","value":"v"}', '{"key":"n","value":1}']),
    ],
)
def test_loop_values_are_strings_each_run_once(values: str, expected: list[str]) -> None:
    run = looping(values)
    assert [r.value for r in run.execution.runs_of("item")] == expected
    assert run.run_of("each").memo == {"values": expected}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ("'not json'", "task 'each': values must be a list or a JSON array, got 'not json'"),
        ("'3'", "task 'each': values must be a list, got int"),
    ],
)
def test_loop_values_that_are_not_a_list_fail_the_loop(values: str, message: str) -> None:
    run = looping(values)
    assert run.run_of("each").state.current is S.FAILED
    assert ("ERROR", message, "each") in logs(run)
    assert run.execution.state.current is S.FAILED


# -- subflow requests ---------------------------------------------------------------------------
def test_a_subflow_request_carries_rendered_inputs_labels_and_revision() -> None:
    run = Run(
        """
id: t
namespace: company.team
tasks:
  - id: call
    type: io.kestra.plugin.core.flow.Subflow
    namespace: other.ns
    flowId: child
    revision: 3
    inheritLabels: true
    wait: false
    inputs:
      who: "{{ flow.id }}"
      me: "{{ task.id }} {{ taskrun.id }}"
    labels:
      - {key: from, value: "{{ flow.namespace }}"}
      - {key: task, value: "{{ task.id }}/{{ taskrun.id }}"}
""",
        labels={"team": "data"},
    )
    (request,) = run.children_created()
    call = run.run_of("call")
    assert request == CreateSubflow(
        at=T0,
        task_run_id=call.id,
        execution_id=request.execution_id,
        namespace="other.ns",
        flow_id="child",
        revision=3,
        inputs={"who": "t", "me": f"call {call.id}"},
        # the child shares the parent's correlation id (here its execution id, `e`)
        labels={
            "team": "data",
            "system.correlationId": "e",
            "from": "company.team",
            "task": f"call/{call.id}",
        },
        wait=False,
    )
    assert call.state.current is S.SUCCESS
    assert call.outputs == {"executionId": request.execution_id}
    assert len(call.attempts) == 1


def test_a_subflow_whose_inputs_cannot_render_fails_and_says_why() -> None:
    run = Run("""
id: t
namespace: company.team
tasks:
  - id: call
    type: io.kestra.plugin.core.flow.Subflow
    namespace: company.team
    flowId: child
    inputs:
      x: "{{ missing.value }}"
""")
    assert run.children_created() == []
    assert run.run_of("call").state.current is S.FAILED
    (error,) = [m for level, m, task in logs(run) if level == "ERROR" and task == "call"]
    assert error.startswith("subflow 'call': ")
    assert run.execution.state.current is S.FAILED


# -- flow outputs -----------------------------------------------------------------------------
def with_output(kind: str, value: str) -> Run:
    run = Run(one("a", top=f'outputs:\n  - {{id: o, type: {kind}, value: "{value}"}}'))
    run.report("a", S.SUCCESS)
    return run


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("INT", "42", 42),
        ("FLOAT", "1.5", 1.5),
        ("BOOLEAN", "true", True),
        ("BOOLEAN", "false", False),
        ("BOOL", "true", True),
        ("JSON", '{\\"a\\": [1]}', {"a": [1]}),
        ("STRING", "7", "7"),
    ],
)
def test_flow_outputs_take_their_declared_type(kind: str, value: str, expected: object) -> None:
    run = with_output(kind, value)
    assert run.execution.state.current is S.SUCCESS
    assert run.execution.outputs == {"o": expected}
    ended = [c for c in run.commands if isinstance(c, ExecutionEnded)]
    assert [e.outputs for e in ended] == [{"o": expected}]


def test_a_flow_output_of_the_wrong_type_fails_the_execution_and_says_which() -> None:
    run = with_output("INT", "forty")
    assert run.execution.state.current is S.FAILED
    assert ("ERROR", "flow outputs: output 'o' is not a valid INT: 'forty'", None) in logs(run)


# -- replay ---------------------------------------------------------------------------------------
NESTED = f"""
id: t
namespace: company.team
tasks:
  - id: first
    type: {LOG}
    message: first
  - id: s
    type: io.kestra.plugin.core.flow.Sequential
    tasks:
      - {{id: a, type: {LOG}, message: a}}
      - {{id: b, type: {LOG}, message: b}}
  - id: last
    type: {LOG}
    message: last
"""


def finished_nested() -> Run:
    run = Run(NESTED)
    for task_id in ("first", "a", "b", "last"):
        run.report(task_id, S.SUCCESS)
    assert run.execution.state.current is S.SUCCESS
    return run


def replayed(run: Run, task_id: str | None) -> object:
    target = run.run_of(task_id).id if task_id else None
    later = T0 + MINUTE
    run.send(Replay(at=later, new_execution_id="again", task_run_id=target))
    (created,) = [c.execution for c in run.commands if isinstance(c, CreateExecution)]
    return created


def test_a_replay_from_a_nested_task_keeps_what_came_before_under_new_ids() -> None:
    run = finished_nested()
    source = run.execution
    again = replayed(run, "b")
    assert run.execution is source  # the source execution is left alone
    assert again.id == "again"
    assert again.original_id == source.id
    assert (again.outputs, again.memo) == (None, None)
    assert again.metadata.attempt_number == 2
    assert [h.state for h in again.state.histories][-1] is S.RESTARTED
    assert [r.task_id for r in again.task_run_list] == ["first", "s", "a", "b"]
    ids = {r.task_id: r for r in again.task_run_list}
    old = {r.task_id: r for r in source.task_run_list}
    assert all(ids[t].id != old[t].id for t in ids)  # every run renamed
    assert all(r.execution_id == "again" for r in again.task_run_list)
    assert ids["a"].parent_task_run_id == ids["s"].id
    assert ids["b"].parent_task_run_id == ids["s"].id
    assert ids["s"].parent_task_run_id is None
    assert ids["first"].state == old["first"].state  # before the cut: as it was
    assert ids["a"].state == old["a"].state
    assert ids["s"].state.current is S.RUNNING  # an ancestor runs again
    assert ids["b"].state.current is S.RESTARTED  # the target starts again


def test_a_replay_runs_the_target_again_and_continues_after_it() -> None:
    run = finished_nested()
    again = Run(NESTED)
    again.execution = replayed(run, "b")
    again.send_created()
    jobs = [c for c in again.commands if isinstance(c, RunTask)]
    assert [(j.task_id, j.attempt) for j in jobs][-1:] == [("b", 2)]
    again.report("b", S.SUCCESS)
    again.report("last", S.SUCCESS)
    assert again.execution.state.current is S.SUCCESS


def test_a_replay_from_scratch_is_a_new_created_execution() -> None:
    run = finished_nested()
    again = replayed(run, None)
    assert again.state.current is S.CREATED
    assert again.task_run_list == ()
    assert again.original_id == run.execution.id


def test_a_replay_from_an_unknown_task_run_is_refused() -> None:
    run = finished_nested()
    with pytest.raises(EngineError, match="has no task run 'nope' to replay from"):
        run.send(Replay(at=T0, new_execution_id="again", task_run_id="nope"))


# -- children a task ran itself (WorkingDirectory) ----------------------------------------------
WORKING_DIRECTORY = f"""
id: t
namespace: company.team
tasks:
  - id: wd
    type: io.kestra.plugin.core.flow.WorkingDirectory
    tasks:
      - {{id: one, type: {LOG}, message: one}}
      - {{id: two, type: {LOG}, message: two}}
      - {{id: three, type: {LOG}, message: three}}
"""


def test_children_a_working_directory_reports_become_its_task_runs() -> None:
    run = Run(WORKING_DIRECTORY)
    wd = run.run_of("wd")
    started = T0 + timedelta(seconds=1)
    ended = T0 + timedelta(seconds=3)
    children = [
        {"taskId": "one", "state": "SUCCESS", "outputs": {"v": 1}},
        {"taskId": "two", "state": "SKIPPED"},
        {"taskId": "three", "state": "WARNING"},
        {"taskId": "stranger", "state": "SUCCESS"},  # not a child of wd: ignored
        {"taskId": "one", "state": "NOT-A-STATE"},  # unreadable: ignored
        "not a dict",
    ]
    outputs = {"outputs": {"one": {"v": 1}}, "children": children}
    run.send(
        WorkerResult(
            at=ended,
            task_run_id=wd.id,
            attempt=1,
            state=S.SUCCESS,
            outputs=outputs,
            started=started,
        )
    )
    assert run.run_of("wd").state.current is S.SUCCESS
    by_task = {r.task_id: r for r in run.execution.task_run_list if r.task_id != "wd"}
    assert sorted(by_task) == ["one", "three", "two"]
    one, two, three = by_task["one"], by_task["two"], by_task["three"]
    assert all(r.parent_task_run_id == wd.id for r in by_task.values())
    assert all(r.execution_id == "e" and r.value is None for r in by_task.values())
    assert (one.state.current, two.state.current, three.state.current) == (
        S.SUCCESS,
        S.SKIPPED,
        S.WARNING,
    )
    assert one.outputs == {"v": 1}
    assert [h.state for h in one.state.histories] == [S.CREATED, S.RUNNING, S.SUCCESS]
    assert [h.date for h in one.state.histories] == [started, started, ended]
    assert [h.state for h in two.state.histories] == [S.CREATED, S.SKIPPED]
    assert two.attempts == ()
    assert [a.state.current for a in one.attempts] == [S.SUCCESS]
    assert one.attempts[0].state.start_date == started
    assert len({one.id, two.id, three.id, wd.id}) == 4
    assert run.execution.state.current is S.SUCCESS


def test_children_reported_again_are_not_added_twice() -> None:
    run = Run(WORKING_DIRECTORY)
    wd = run.run_of("wd").id
    report = WorkerResult(
        at=T0,
        task_run_id=wd,
        attempt=1,
        state=S.FAILED,
        outputs={"children": [{"taskId": "one", "state": "SUCCESS"}]},
    )
    run.send(report)
    assert len(run.execution.runs_of("one")) == 1
    before = run.execution
    assert run.send(report) == []
    assert run.execution is before


# -- more rules found unguarded by the mutation run ------------------------------------------
def test_a_kill_of_an_ended_execution_changes_nothing() -> None:
    run = Run(one("a"))
    run.report("a", S.SUCCESS)
    done = run.execution
    assert run.send(Kill(at=T0)) == []
    assert run.execution is done


def test_killing_a_paused_execution_ends_the_pause_killed_at_once() -> None:
    run = paused(duration="")
    assert run.execution.state.current is S.PAUSED
    run.send(Kill(at=T0))
    assert run.run_of("p").state.current is S.KILLED
    assert run.execution.state.current is S.KILLED
    assert run.execution.runs_of("after") == []


def test_a_resume_sets_the_execution_running_and_the_flow_goes_on() -> None:
    run = paused(duration="")
    commands = run.send(Resume(at=T0))
    assert run.execution.state.current is S.RUNNING
    assert [c.task_id for c in commands if isinstance(c, RunTask)] == ["after"]


def test_a_subflow_end_closes_the_running_attempt_with_the_childs_state() -> None:
    run = Run(
        f"""
id: t
namespace: company.team
tasks:
  - id: sub
    type: io.kestra.plugin.core.flow.Subflow
    namespace: company.team
    flowId: child
    transmitFailed: false
  - {{id: after, type: {LOG}, message: x}}
"""
    )
    (request,) = run.children_created()
    sub = run.run_of("sub")
    assert [a.state.current for a in sub.attempts] == [S.RUNNING]
    later = T0 + MINUTE
    run.send(
        SubflowEnded(
            at=later, task_run_id=sub.id, execution_id=request.execution_id, state=S.FAILED
        )
    )
    (attempt,) = run.run_of("sub").attempts
    assert attempt.state.current is S.FAILED  # the child's end, though the task succeeds
    assert attempt.state.end_date == later
    assert run.run_of("sub").state.current is S.SUCCESS


def test_engine_log_lines_name_the_task_run() -> None:
    run = Run(SEQ_TIMEOUT)
    s = run.run_of("s").id
    run.send(DelayElapsed(at=T0 + MINUTE, delay=DelayKind.TIMEOUT, task_run_id=s))
    # past the execution's own "Flow started" line (no task run)
    (line,) = [c for c in run.commands if isinstance(c, Log) and c.task_run_id is not None]
    assert (line.task_run_id, line.task_id, line.level) == (s, "s", "ERROR")


def test_a_retry_policy_on_a_flowable_applies_to_its_children_not_to_itself() -> None:
    run = Run(
        f"""
id: t
namespace: company.team
tasks:
  - id: s
    type: io.kestra.plugin.core.flow.Sequential
    retry:
      type: constant
      interval: PT10S
      maxAttempt: 2
    tasks:
      - {{id: a, type: {LOG}, message: a}}
"""
    )
    a = run.run_of("a").id
    run.report("a", S.FAILED)
    assert run.run_of("a").state.current is S.RETRYING  # inherited from s
    run.send(DelayElapsed(at=T0, delay=DelayKind.RETRY, task_run_id=a, attempt=1))
    run.report("a", S.FAILED)
    # a is out of attempts; s, a flowable, is not retried itself
    assert run.run_of("a").state.current is S.FAILED
    assert run.run_of("s").state.current is S.FAILED
    assert run.execution.state.current is S.FAILED


@pytest.mark.parametrize(
    ("behavior", "retried"), [("RETRY_FAILED_TASK", True), ("CREATE_NEW_EXECUTION", False)]
)
def test_max_duration_counts_from_the_attempt_or_from_the_first_execution(
    behavior: str, retried: bool
) -> None:
    retry = f"type: constant;interval: PT2M;maxDuration: PT6M;maxAttempt: 9;behavior: {behavior}"
    run = Run(retrying(retry))
    a = run.run_of("a").id
    start = T0 + timedelta(minutes=5)  # the worker took the job 5 minutes after creation
    run.send(WorkerResult(at=start, task_run_id=a, attempt=1, state=S.RUNNING))
    run.send(WorkerResult(at=start, task_run_id=a, attempt=1, state=S.FAILED))
    # next try at T0 + 7 min: within 6 min of the attempt's start, not of the execution's
    kinds = [w.delay for w in run.commands if isinstance(w, WakeAt)]
    assert bool(kinds) is retried, kinds
    assert run.execution.state.current is (S.RUNNING if retried else S.FAILED)


def test_each_retry_as_a_new_execution_gets_its_own_stable_id() -> None:
    retry = "type: constant;interval: PT1M;maxAttempt: 3;behavior: CREATE_NEW_EXECUTION"
    ids = []
    for _ in range(2):
        run = Run(retrying(retry))
        run.report("a", S.FAILED)
        run.send(DelayElapsed(at=T0 + MINUTE, delay=DelayKind.NEW_EXECUTION))
        (created,) = [c.execution for c in run.commands if isinstance(c, CreateExecution)]
        second = Run(retrying(retry))
        second.execution = created
        second.send_created()
        second.report("a", S.FAILED)
        second.send(DelayElapsed(at=T0 + 2 * MINUTE, delay=DelayKind.NEW_EXECUTION))
        (third,) = [c.execution for c in second.commands if isinstance(c, CreateExecution)]
        ids.append((created.id, third.id))
        assert third.original_id == "e"  # the first execution of the chain
        assert third.metadata.attempt_number == 3
        assert third.metadata.original_created_date == T0
    assert ids[0] == ids[1]  # derived: the same events, the same ids
    first, third_id = ids[0]
    assert isinstance(first, str)
    assert len({"e", first, third_id}) == 3


def test_two_subflow_tasks_of_one_execution_create_two_children() -> None:
    run = Run(
        """
id: t
namespace: company.team
tasks:
  - id: both
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - {id: one, type: io.kestra.plugin.core.flow.Subflow, namespace: n, flowId: c}
      - {id: two, type: io.kestra.plugin.core.flow.Subflow, namespace: n, flowId: c}
"""
    )
    ids = [c.execution_id for c in run.children_created()]
    assert len(ids) == 2
    assert len(set(ids)) == 2


def test_restarting_drops_the_errors_runs_of_a_restarted_flowable() -> None:
    run = Run(
        f"""
id: t
namespace: company.team
tasks:
  - id: s
    type: io.kestra.plugin.core.flow.Sequential
    tasks:
      - {{id: a, type: {LOG}, message: a}}
    errors:
      - {{id: handle, type: {LOG}, message: h}}
"""
    )
    run.report("a", S.FAILED)
    run.report("handle", S.SUCCESS)
    assert run.execution.state.current is S.FAILED
    run.send(Restart(at=T0 + MINUTE))
    assert [r.task_id for r in run.execution.task_run_list] == ["s", "a"]
    run.report("a", S.SUCCESS)
    assert run.execution.state.current is S.SUCCESS


def test_restarting_without_a_failed_run_is_refused_and_says_so() -> None:
    run = Run(one("a"))
    run.report("a", S.WARNING)
    with pytest.raises(EngineError, match="execution e has no failed task run to restart"):
        run.send(Restart(at=T0))


def test_a_replay_starts_clean_and_two_replays_share_no_run_id() -> None:
    text = NESTED + 'outputs:\n  - {id: o, type: STRING, value: "{{ flow.id }}"}\n'
    run = Run(text + "timeout: PT1H\n")
    for task_id in ("first", "a", "b", "last"):
        run.report(task_id, S.SUCCESS)
    assert run.execution.outputs == {"o": "t"}
    source = run.execution
    target = run.run_of("b").id
    copies = []
    for new_id in ("again", "once-more"):
        run.send(Replay(at=T0 + MINUTE, new_execution_id=new_id, task_run_id=target))
        copies.append([c.execution for c in run.commands if isinstance(c, CreateExecution)][-1])
    for copy in copies:
        assert (copy.outputs, copy.memo) == (None, None)
        assert copy.metadata.original_created_date == source.metadata.original_created_date
    first, second = ({r.id for r in c.task_run_list} for c in copies)
    assert not first & second


def test_the_api_view_of_an_execution_leaves_the_engines_bookkeeping_out() -> None:
    run = looping("[1]")  # the ForEach keeps its values in its memo
    run.report("item", S.SUCCESS)
    assert run.run_of("each").memo is not None
    data = to_kestra_dict(run.execution)
    assert "memo" not in data
    assert all("memo" not in r for r in data["taskRunList"])
    assert [r["outputs"] for r in data["taskRunList"]] == [None, None]
    assert (data["inputs"], data["outputs"]) == ({}, None)
    assert data["state"]["current"] == "SUCCESS"
    bare = Execution(id="x", namespace="n", flow_id="f", flow_revision=1, state=run.execution.state)
    empty = to_kestra_dict(bare)  # defaults are left out on the wire: put back here
    assert (empty["taskRunList"], empty["inputs"], empty["outputs"]) == ([], {}, None)
