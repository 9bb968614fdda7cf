"""The engine, one rule at a time: small flows, simulated outcomes, expected ends."""

from __future__ import annotations

from datetime import timedelta

import pytest

from runtime.flow.engine import EngineError, apply
from runtime.flow.events import (
    DelayElapsed,
    DelayKind,
    ExecutionCreated,
    Kill,
    Replay,
    Restart,
    Resume,
    RunTask,
    WakeAt,
    WorkerResult,
)
from runtime.flow.execution import new_execution
from runtime.flow.states import StateType
from services.dry_run import EPOCH, DryRun
from tests.unit.engine_helpers import flow_of, history, order, outcomes, run, sim, states

S = StateType


def seq(*ids: str, extra: str = "") -> str:
    tasks = "".join(
        f"  - id: {i}\n    type: io.kestra.plugin.core.log.Log\n    message: {i}\n" for i in ids
    )
    return f"id: t\nnamespace: company.team\ntasks:\n{tasks}{extra}"


# -- sequential, errors, finally ---------------------------------------------------
def test_sequential_tasks_run_in_order_and_succeed() -> None:
    ex = run(seq("a", "b", "c"))
    assert ex.state.current is S.SUCCESS
    assert order(ex) == ["a", "b", "c"]
    assert all(history(r) == ["CREATED", "RUNNING", "SUCCESS"] for r in ex.task_run_list)
    assert [h.state.value for h in ex.state.histories] == ["CREATED", "RUNNING", "SUCCESS"]
    assert all(len(r.attempts) == 1 for r in ex.task_run_list)


def test_a_failure_stops_the_sequence_and_fails_the_execution() -> None:
    ex = run(seq("a", "b", "c"), {"b": S.FAILED})
    assert ex.state.current is S.FAILED
    assert states(ex) == {"a": "SUCCESS", "b": "FAILED"}


def test_errors_run_after_a_failure_and_the_execution_still_fails() -> None:
    extra = (
        "errors:\n  - id: e1\n    type: io.kestra.plugin.core.log.Log\n    message: x\n"
        "  - id: e2\n    type: io.kestra.plugin.core.log.Log\n    message: y\n"
    )
    ex = run(seq("a", "b", extra=extra), {"a": S.FAILED})
    assert order(ex) == ["a", "e1", "e2"]
    assert ex.state.current is S.FAILED
    assert run(seq("a", extra=extra)).task_run_list[-1].task_id == "a"  # no failure, no errors


def test_finally_runs_after_success_and_after_failure() -> None:
    extra = (
        "finally:\n  - id: f\n    type: io.kestra.plugin.core.log.Log\n    message: x\n"
        "errors:\n  - id: e\n    type: io.kestra.plugin.core.log.Log\n    message: x\n"
    )
    ok = run(seq("a", extra=extra))
    assert order(ok) == ["a", "f"]
    assert ok.state.current is S.SUCCESS
    bad = run(seq("a", extra=extra), {"a": S.FAILED})
    assert order(bad) == ["a", "e", "f"]
    assert bad.state.current is S.FAILED
    failing_finally = run(seq("a", extra=extra), {"f": S.FAILED})
    assert failing_finally.state.current is S.FAILED


def test_allow_failure_turns_a_failure_into_a_warning_and_goes_on() -> None:
    text = seq("a", "c").replace(
        "  - id: c",
        "  - id: b\n    type: io.kestra.plugin.core.log.Log\n    message: b\n"
        "    allowFailure: true\n  - id: c",
    )
    ex = run(text, {"b": S.FAILED})
    assert states(ex) == {"a": "SUCCESS", "b": "WARNING", "c": "SUCCESS"}
    assert ex.state.current is S.WARNING
    b = ex.runs_of("b")[0]
    assert b.attempts[0].state.current is S.FAILED  # the attempt keeps what happened


def test_allow_warning_turns_a_warning_into_success() -> None:
    text = seq("a").replace("message: a", "message: a\n    allowWarning: true")
    assert run(text, {"a": S.WARNING}).state.current is S.SUCCESS
    assert run(seq("a"), {"a": S.WARNING}).state.current is S.WARNING


def test_run_if_false_skips_the_task() -> None:
    text = seq("a", "b").replace("message: a", 'message: a\n    runIf: "{{ inputs.go }}"')
    ex = run(text, inputs={"go": False})
    assert states(ex) == {"a": "SKIPPED", "b": "SUCCESS"}
    assert ex.state.current is S.SUCCESS
    assert states(run(text, inputs={"go": True}))["a"] == "SUCCESS"


def test_disabled_tasks_are_not_run() -> None:
    text = seq("a", "b").replace("message: a", "message: a\n    disabled: true")
    assert order(run(text)) == ["b"]


# -- parallel, dag ------------------------------------------------------------------
PARALLEL = """
id: t
namespace: company.team
tasks:
  - id: p
    type: io.kestra.plugin.core.flow.Parallel
    concurrent: {concurrent}
    tasks:
      - {{id: a, type: io.kestra.plugin.core.log.Log, message: a}}
      - {{id: b, type: io.kestra.plugin.core.log.Log, message: b}}
      - {{id: c, type: io.kestra.plugin.core.log.Log, message: c}}
  - id: after
    type: io.kestra.plugin.core.log.Log
    message: done
"""


def test_parallel_starts_every_child_before_any_ends() -> None:
    simulation = sim(PARALLEL.format(concurrent=0))
    commands = simulation.step("exec", ExecutionCreated(at=EPOCH))
    assert sorted(c.task_id for c in commands if isinstance(c, RunTask)) == ["a", "b", "c"]
    ex = simulation.run()
    assert ex.state.current is S.SUCCESS
    assert order(ex)[-1] == "after"


def test_parallel_concurrency_limit_caps_running_children() -> None:
    simulation = sim(PARALLEL.format(concurrent=2))
    commands = simulation.step("exec", ExecutionCreated(at=EPOCH))
    assert [c.task_id for c in commands if isinstance(c, RunTask)] == ["a", "b"]
    assert simulation.run().state.current is S.SUCCESS


def test_parallel_failure_stops_new_children_and_fails() -> None:
    ex = run(PARALLEL.format(concurrent=1), {"a": S.FAILED})
    assert order(ex) == ["p", "a"]
    assert states(ex)["p"] == "FAILED"
    assert ex.state.current is S.FAILED


def test_dag_respects_depends_on() -> None:
    text = """
id: t
namespace: company.team
tasks:
  - id: d
    type: io.kestra.plugin.core.flow.Dag
    tasks:
      - task: {id: load, type: io.kestra.plugin.core.log.Log, message: x}
        dependsOn: [extract, clean]
      - task: {id: extract, type: io.kestra.plugin.core.log.Log, message: x}
      - task: {id: clean, type: io.kestra.plugin.core.log.Log, message: x}
        dependsOn: [extract]
"""
    ex = run(text)
    assert order(ex) == ["d", "extract", "clean", "load"]
    assert ex.state.current is S.SUCCESS


# -- branching ------------------------------------------------------------------------
IF = """
id: t
namespace: company.team
inputs:
  - id: n
    type: INT
tasks:
  - id: check
    type: io.kestra.plugin.core.flow.If
    condition: "{{ inputs.n > 3 }}"
    then:
      - {id: big, type: io.kestra.plugin.core.log.Log, message: big}
    else:
      - {id: small, type: io.kestra.plugin.core.log.Log, message: small}
"""


def test_if_takes_then_or_else_and_records_the_result() -> None:
    big = run(IF, inputs={"n": 5})
    assert order(big) == ["check", "big"]
    assert big.runs_of("check")[0].outputs == {"evaluationResult": True}
    small = run(IF, inputs={"n": 1})
    assert order(small) == ["check", "small"]
    assert small.state.current is S.SUCCESS


def test_if_with_an_empty_branch_succeeds() -> None:
    ex = run(
        IF.replace(
            "    else:\n      - {id: small, type: io.kestra.plugin.core.log.Log, message: small}\n",
            "",
        ),
        inputs={"n": 1},
    )
    assert order(ex) == ["check"]
    assert ex.state.current is S.SUCCESS


SWITCH = """
id: t
namespace: company.team
tasks:
  - id: sw
    type: io.kestra.plugin.core.flow.Switch
    value: "{{ inputs.kind }}"
    cases:
      csv:
        - {id: read_csv, type: io.kestra.plugin.core.log.Log, message: x}
      json:
        - {id: read_json, type: io.kestra.plugin.core.log.Log, message: x}
DEFAULTS"""


def test_switch_picks_the_case_then_defaults_then_fails() -> None:
    defaults = (
        "    defaults:\n      - {id: other, type: io.kestra.plugin.core.log.Log, message: x}\n"
    )
    with_defaults = SWITCH.replace("DEFAULTS", defaults)
    assert order(run(with_defaults, inputs={"kind": "json"})) == ["sw", "read_json"]
    ex = run(with_defaults, inputs={"kind": "xml"})
    assert order(ex) == ["sw", "other"]
    assert ex.runs_of("sw")[0].outputs == {"value": "xml", "defaults": True}
    none = run(SWITCH.replace("DEFAULTS", ""), inputs={"kind": "xml"})
    assert none.state.current is S.FAILED


# -- loops ------------------------------------------------------------------------------
FOREACH = """
id: t
namespace: company.team
tasks:
  - id: each
    type: io.kestra.plugin.core.flow.ForEach
    values: {values}
    concurrencyLimit: {limit}
    tasks:
      - {{id: one, type: io.kestra.plugin.core.log.Log, message: "{{{{ taskrun.value }}}}"}}
      - id: two
        type: io.kestra.plugin.core.debug.Return
        format: "{{{{ outputs.one[taskrun.value].value }}}}"
"""


def test_foreach_sequential_iterations_run_in_order() -> None:
    ex = run(FOREACH.format(values='["a", "b"]', limit=1))
    assert order(ex) == ["each", "one[a]", "two[a]", "one[b]", "two[b]"]
    assert ex.state.current is S.SUCCESS
    assert [r.iteration for r in ex.task_run_list[1:]] == [0, 0, 1, 1]


def test_foreach_unlimited_starts_every_iteration_at_once() -> None:
    simulation = sim(FOREACH.format(values="[1, 2, 3]", limit=0))
    commands = simulation.step("exec", ExecutionCreated(at=EPOCH))
    assert [c.task_id for c in commands if isinstance(c, RunTask)] == ["one", "one", "one"]
    ex = simulation.run()
    assert ex.state.current is S.SUCCESS
    assert sorted(r.value for r in ex.runs_of("two")) == ["1", "2", "3"]


def test_foreach_values_from_a_template_and_a_failure_stops_new_iterations() -> None:
    text = FOREACH.format(values='"{{ inputs.items }}"', limit=1)
    ex = run(
        text,
        {"one": lambda r, a: (S.FAILED if r.value == "y" else S.SUCCESS, None)},
        inputs={"items": ["x", "y", "z"]},
    )
    assert order(ex) == ["each", "one[x]", "two[x]", "one[y]"]
    assert ex.state.current is S.FAILED


def test_nested_foreach_outputs_nest_by_value() -> None:
    text = """
id: t
namespace: company.team
tasks:
  - id: outer
    type: io.kestra.plugin.core.flow.ForEach
    values: ["a", "b"]
    tasks:
      - id: inner
        type: io.kestra.plugin.core.flow.ForEach
        values: [1, 2]
        tasks:
          - {id: leaf, type: io.kestra.plugin.core.log.Log, message: x}
"""
    ex = run(text, {"leaf": lambda r, a: (S.SUCCESS, {"v": r.value})})
    from runtime.flow.context import outputs_map

    assert outputs_map(ex.task_run_list)["leaf"] == {
        "a": {"1": {"v": "1"}, "2": {"v": "2"}},
        "b": {"1": {"v": "1"}, "2": {"v": "2"}},
    }
    assert ex.state.current is S.SUCCESS


def test_each_sequential_and_each_parallel_still_run() -> None:
    body = """
id: t
namespace: company.team
tasks:
  - id: each
    type: {kind}
    value: ["x", "y"]
    tasks:
      - {{id: one, type: io.kestra.core.tasks.log.Log, message: m}}
      - {{id: two, type: io.kestra.core.tasks.log.Log, message: m}}
"""
    ex = run(body.format(kind="io.kestra.core.tasks.flows.EachSequential"))
    assert order(ex) == ["each", "one[x]", "two[x]", "one[y]", "two[y]"]
    simulation = sim(body.format(kind="io.kestra.plugin.core.flow.EachParallel"))
    first = simulation.step("exec", ExecutionCreated(at=EPOCH))
    assert len([c for c in first if isinstance(c, RunTask)]) == 4
    assert simulation.run().state.current is S.SUCCESS


def test_allow_failure_flowable_ends_in_warning() -> None:
    text = """
id: t
namespace: company.team
tasks:
  - id: guard
    type: io.kestra.plugin.core.flow.AllowFailure
    tasks:
      - {id: flaky, type: io.kestra.plugin.core.log.Log, message: x}
  - {id: next, type: io.kestra.plugin.core.log.Log, message: x}
"""
    ex = run(text, {"flaky": S.FAILED})
    assert states(ex) == {"guard": "WARNING", "flaky": "FAILED", "next": "SUCCESS"}
    assert ex.state.current is S.WARNING


def test_local_errors_of_a_flowable_run_and_the_flowable_fails() -> None:
    text = """
id: t
namespace: company.team
tasks:
  - id: block
    type: io.kestra.plugin.core.flow.Sequential
    tasks:
      - {id: a, type: io.kestra.plugin.core.log.Log, message: x}
    errors:
      - {id: local, type: io.kestra.plugin.core.log.Log, message: x}
  - {id: b, type: io.kestra.plugin.core.log.Log, message: x}
"""
    ex = run(text, {"a": S.FAILED})
    assert order(ex) == ["block", "a", "local"]
    assert states(ex)["block"] == "FAILED"
    assert ex.state.current is S.FAILED


# -- retries ------------------------------------------------------------------------------
RETRY = """
id: t
namespace: company.team
tasks:
  - id: flaky
    type: io.kestra.plugin.core.log.Log
    message: x
    retry:
      type: {kind}
      maxAttempt: 3
      {extra}
"""


def test_constant_retry_runs_new_attempts_until_success() -> None:
    simulation = sim(
        RETRY.format(kind="constant", extra="interval: PT10S"),
        {"flaky": [S.FAILED, S.FAILED, S.SUCCESS]},
    )
    ex = simulation.run()
    flaky = ex.runs_of("flaky")[0]
    assert [a.state.current for a in flaky.attempts] == [S.FAILED, S.FAILED, S.SUCCESS]
    assert history(flaky) == [
        "CREATED",
        "RUNNING",
        "RETRYING",
        "RUNNING",
        "RETRYING",
        "RUNNING",
        "SUCCESS",
    ]
    assert ex.state.current is S.SUCCESS
    waits = [c for c in simulation.commands if isinstance(c, WakeAt)]
    assert [w.when - w.at for w in waits] == [timedelta(seconds=10)] * 2


def test_retry_gives_up_after_max_attempt() -> None:
    ex = run(RETRY.format(kind="constant", extra="interval: PT1S"), {"flaky": S.FAILED})
    assert len(ex.runs_of("flaky")[0].attempts) == 3
    assert ex.state.current is S.FAILED


def test_warning_on_retry_marks_a_late_success_as_warning() -> None:
    text = RETRY.format(kind="constant", extra="interval: PT1S\n      warningOnRetry: true")
    assert run(text, {"flaky": [S.FAILED, S.SUCCESS]}).state.current is S.WARNING


def test_exponential_retry_delays_grow_and_are_capped() -> None:
    text = RETRY.format(
        kind="exponential", extra="interval: PT1S\n      maxInterval: PT3S"
    ).replace("maxAttempt: 3", "maxAttempt: 5")
    simulation = sim(text, {"flaky": S.FAILED})
    simulation.run()
    waits = [(c.when - c.at).total_seconds() for c in simulation.commands if isinstance(c, WakeAt)]
    assert waits == [1.0, 2.0, 3.0, 3.0]


def test_retry_max_duration_stops_retrying() -> None:
    text = RETRY.format(kind="constant", extra="interval: PT10S\n      maxDuration: PT15S").replace(
        "maxAttempt: 3", "maxAttempt: 10"
    )
    ex = run(text, {"flaky": S.FAILED})
    assert len(ex.runs_of("flaky")[0].attempts) == 2


def test_flow_level_retry_applies_to_tasks_without_their_own() -> None:
    text = seq("a") + "retry:\n  type: constant\n  interval: PT1S\n  maxAttempt: 2\n"
    assert run(text, {"a": [S.FAILED, S.SUCCESS]}).state.current is S.SUCCESS


# -- duplicates and stale events ------------------------------------------------------------
def test_duplicate_and_stale_worker_results_change_nothing() -> None:
    flow = flow_of(seq("a", "b"))
    ex = new_execution(id="e", namespace="company.team", flow_id="t", flow_revision=1, at=EPOCH)
    ex, cmds = apply(ex, flow, ExecutionCreated(at=EPOCH))
    a = next(c for c in cmds if isinstance(c, RunTask))
    done = WorkerResult(at=EPOCH, task_run_id=a.task_run_id, attempt=1, state=S.SUCCESS)
    ex, cmds = apply(ex, flow, done)
    assert [c.task_id for c in cmds if isinstance(c, RunTask)] == ["b"]
    again, cmds = apply(ex, flow, done)
    assert again is ex
    assert cmds == []
    stale, cmds = apply(
        ex, flow, WorkerResult(at=EPOCH, task_run_id=a.task_run_id, attempt=1, state=S.FAILED)
    )
    assert stale is ex
    assert cmds == []
    unknown, cmds = apply(
        ex, flow, WorkerResult(at=EPOCH, task_run_id="nope", attempt=1, state=S.SUCCESS)
    )
    assert unknown is ex
    assert cmds == []
    twice, cmds = apply(ex, flow, ExecutionCreated(at=EPOCH))
    assert twice is ex
    assert cmds == []


# -- subflows, pauses, waits ------------------------------------------------------------------
CHILD = """
id: child
namespace: company.team
inputs:
  - {id: who, type: STRING}
tasks:
  - {id: greet, type: io.kestra.plugin.core.debug.Return, format: "hi {{ inputs.who }}"}
outputs:
  - {id: greeting, type: STRING, value: "{{ outputs.greet.value }}"}
"""

PARENT = """
id: t
namespace: company.team
tasks:
  - id: call
    type: io.kestra.plugin.core.flow.Subflow
    namespace: company.team
    flowId: child
    inputs:
      who: "{{ execution.id }}"
    transmitFailed: TRANSMIT
  - {id: after, type: io.kestra.plugin.core.log.Log, message: x}
"""


def test_subflow_waits_for_the_child_and_gets_its_outputs() -> None:
    child = flow_of(CHILD)
    ex = run(
        PARENT.replace("TRANSMIT", "true"),
        {"greet": lambda r, a: (S.SUCCESS, {"value": "hi exec"})},
        flows={"c": child},
    )
    call = ex.runs_of("call")[0]
    assert call.state.current is S.SUCCESS
    assert call.outputs is not None
    assert call.outputs["outputs"] == {"greeting": "hi exec"}
    assert ex.state.current is S.SUCCESS


def test_subflow_failure_is_transmitted_unless_told_otherwise() -> None:
    child = flow_of(CHILD)
    failing = {"greet": S.FAILED}
    assert (
        run(PARENT.replace("TRANSMIT", "true"), failing, flows={"c": child}).state.current
        is S.FAILED
    )
    ex = run(PARENT.replace("TRANSMIT", "false"), failing, flows={"c": child})
    assert ex.state.current is S.SUCCESS
    assert order(ex) == ["call", "after"]


PAUSE = """
id: t
namespace: company.team
tasks:
  - id: approve
    type: io.kestra.plugin.core.flow.Pause
    DELAY
  - {id: after, type: io.kestra.plugin.core.log.Log, message: x}
"""


def test_pause_waits_for_resume_with_inputs() -> None:
    simulation = sim(PAUSE.replace("DELAY", ""))
    ex = simulation.run()
    assert ex.state.current is S.PAUSED
    assert states(ex) == {"approve": "PAUSED"}
    simulation.send("exec", Resume(at=EPOCH, inputs={"ok": True}))
    ex = simulation.run()
    assert ex.state.current is S.SUCCESS
    assert ex.runs_of("approve")[0].outputs == {"onResume": {"ok": True}}
    assert order(ex) == ["approve", "after"]


def test_pause_with_a_duration_resumes_by_itself() -> None:
    ex = run(PAUSE.replace("DELAY", "pauseDuration: PT1H"))
    assert ex.state.current is S.SUCCESS
    pause = ex.runs_of("approve")[0]
    assert pause.state.histories[-1].date - pause.state.histories[0].date == timedelta(hours=1)


def test_wait_for_repeats_until_the_condition_holds() -> None:
    text = """
id: t
namespace: company.team
tasks:
  - id: wait
    type: io.kestra.plugin.core.flow.WaitFor
    condition: "{{ outputs.probe.value == 'ready' }}"
    checkFrequency:
      interval: PT5S
    tasks:
      - {id: probe, type: io.kestra.plugin.core.debug.Return, format: x}
"""
    ready_at = 3
    ex = run(
        text,
        {
            "probe": lambda r, a: (
                S.SUCCESS,
                {"value": "ready" if r.iteration == ready_at - 1 else "no"},
            )
        },
    )
    assert ex.state.current is S.SUCCESS
    assert len(ex.runs_of("probe")) == ready_at
    assert ex.runs_of("wait")[0].outputs == {"iterationCount": ready_at}


# -- kill, concurrency, restart, replay ------------------------------------------------------
def test_kill_stops_running_tasks_and_ends_killed() -> None:
    simulation = sim(PARALLEL.format(concurrent=0))
    simulation.step("exec", ExecutionCreated(at=EPOCH))
    # let a start, then kill before anything ends
    ex = simulation.executions["exec"]
    simulation.hold_jobs()  # the tasks run until killed
    simulation.send("exec", Kill(at=EPOCH))
    ex = simulation.run()
    assert ex.state.current is S.KILLED
    assert set(states(ex).values()) == {"KILLED"}
    assert "KILLING" in history(ex.runs_of("p")[0])


@pytest.mark.parametrize(
    ("behavior", "expected"), [("QUEUE", S.QUEUED), ("CANCEL", S.CANCELLED), ("FAIL", S.FAILED)]
)
def test_concurrency_limit_behaviours(behavior: str, expected: StateType) -> None:
    flow = flow_of(seq("a") + f"concurrency:\n  limit: 1\n  behavior: {behavior}\n")
    ex = new_execution(id="e", namespace="company.team", flow_id="t", flow_revision=1, at=EPOCH)
    ex, _ = apply(ex, flow, ExecutionCreated(at=EPOCH, running=1))
    assert ex.state.current is expected
    if expected is S.QUEUED:
        ex, cmds = apply(ex, flow, ExecutionCreated(at=EPOCH, running=0))
        assert ex.state.current is S.RUNNING
        assert [c.task_id for c in cmds if isinstance(c, RunTask)] == ["a"]


def test_restart_runs_the_failed_task_again_and_continues() -> None:
    calls: dict[str, int] = {}

    def flaky(r, attempt):  # type: ignore[no-untyped-def]
        calls[r.task_id] = calls.get(r.task_id, 0) + 1
        return (S.FAILED if calls[r.task_id] == 1 else S.SUCCESS), None

    extra = "errors:\n  - {id: alert, type: io.kestra.plugin.core.log.Log, message: x}\n"
    simulation = sim(seq("a", "b", "c", extra=extra), {"b": flaky})
    ex = simulation.run()
    assert ex.state.current is S.FAILED
    assert order(ex) == ["a", "b", "alert"]
    simulation.send("exec", Restart(at=EPOCH))
    ex = simulation.run()
    assert ex.state.current is S.SUCCESS
    assert order(ex) == ["a", "b", "c"]  # the errors branch is gone
    b = ex.runs_of("b")[0]
    assert [a.state.current for a in b.attempts] == [S.FAILED, S.SUCCESS]
    assert "RESTARTED" in [h.state.value for h in ex.state.histories]
    assert ex.metadata.attempt_number == 2


def test_restarting_a_running_execution_is_refused() -> None:
    flow = flow_of(seq("a"))
    ex = new_execution(id="e", namespace="company.team", flow_id="t", flow_revision=1, at=EPOCH)
    ex, _ = apply(ex, flow, ExecutionCreated(at=EPOCH))
    with pytest.raises(EngineError, match="only a terminated or paused execution"):
        apply(ex, flow, Restart(at=EPOCH))


def test_replay_from_a_task_run_creates_a_new_execution() -> None:
    simulation = sim(seq("a", "b", "c"))
    ex = simulation.run()
    b = ex.runs_of("b")[0]
    simulation.send("exec", Replay(at=EPOCH, new_execution_id="again", task_run_id=b.id))
    simulation.run()
    again = simulation.executions["again"]
    assert again.state.current is S.SUCCESS
    assert again.original_id == "exec"
    assert order(again) == ["a", "b", "c"]
    assert again.runs_of("a")[0].attempts == ex.runs_of("a")[0].attempts  # kept, not re-run
    assert len(again.runs_of("b")[0].attempts) == 2  # b ran again


def test_flow_outputs_are_rendered_and_typed_at_the_end() -> None:
    text = (
        seq("a")
        + 'outputs:\n  - {id: n, type: INT, value: "{{ 40 + 2 }}"}\n'
        + '  - {id: s, type: STRING, value: "{{ outputs.a.value }}"}\n'
    )
    ex = run(text)
    assert ex.outputs == {"n": 42, "s": "a"}


def test_flow_timeout_kills_and_fails() -> None:
    simulation = sim(seq("a") + "timeout: PT1M\n")
    simulation.step("exec", ExecutionCreated(at=EPOCH))
    simulation.hold_jobs()  # the worker never answers
    simulation.send(
        "exec", DelayElapsed(at=EPOCH + timedelta(minutes=1), delay=DelayKind.FLOW_TIMEOUT)
    )
    ex = simulation.run()
    assert ex.state.current is S.FAILED
    assert states(ex) == {"a": "KILLED"}


def test_simulation_outcomes_helper_defaults_to_success() -> None:
    assert outcomes()(new_run(), 1) == (S.SUCCESS, {"value": "x"})


def new_run():  # type: ignore[no-untyped-def]
    from runtime.flow.execution import TaskRun
    from runtime.flow.states import State

    return TaskRun(
        id="r",
        execution_id="e",
        namespace="n",
        flow_id="f",
        task_id="x",
        state=State.new(S.CREATED, EPOCH),
    )


def test_simulation_runs_to_the_end() -> None:
    execution = DryRun(flow_of(seq("a", "b"))).run()
    assert execution.state.current is S.SUCCESS
    assert states(execution) == {"a": "SUCCESS", "b": "SUCCESS"}


def test_now_in_a_template_is_the_event_time() -> None:
    text = seq("a").replace(
        "message: a", "message: a\n    runIf: \"{{ now() == '2024-01-01T00:00:00Z' }}\""
    )
    text = text.replace("now() == '2024-01-01T00:00:00Z'", "now(format='yyyy') == '2024'")
    assert states(run(text)) == {"a": "SUCCESS"}  # EPOCH is 2024-01-01


def test_a_pause_not_resumed_within_its_timeout_fails() -> None:
    simulation = sim(PAUSE.replace("DELAY", "timeout: PT10M"))
    ex = simulation.run()
    assert ex.state.current is S.FAILED
    assert states(ex) == {"approve": "FAILED"}
    pause = ex.runs_of("approve")[0]
    assert pause.state.histories[-1].date - pause.state.histories[0].date == timedelta(minutes=10)


def test_a_failed_task_run_marked_success_lets_the_execution_go_on_from_it() -> None:
    extra = "errors:\n  - {id: alert, type: io.kestra.plugin.core.log.Log, message: x}\n"
    simulation = sim(seq("a", "b", "c", extra=extra), {"b": lambda r, attempt: (S.FAILED, None)})
    ex = simulation.run()
    assert order(ex) == ["a", "b", "alert"]
    b = ex.runs_of("b")[0]
    simulation.send("exec", Restart(at=EPOCH, task_run_id=b.id, state=S.SUCCESS))
    ex = simulation.run()
    assert ex.state.current is S.SUCCESS
    assert order(ex) == ["a", "b", "c"]  # b is not run again; the errors branch is gone
    assert [a.state.current for a in ex.runs_of("b")[0].attempts] == [S.FAILED]
    assert ex.runs_of("b")[0].state.current is S.SUCCESS
    assert ex.metadata.attempt_number == 2


def test_a_task_run_marked_failed_in_a_flowable_runs_the_errors_branch() -> None:
    source = (
        "id: t\nnamespace: company.team\n"
        "tasks:\n  - id: group\n    type: io.kestra.plugin.core.flow.Sequential\n"
        "    tasks:\n      - {id: a, type: io.kestra.plugin.core.debug.Return, format: x}\n"
        "      - {id: b, type: io.kestra.plugin.core.debug.Return, format: y}\n"
        "errors:\n  - {id: alert, type: io.kestra.plugin.core.log.Log, message: x}\n"
    )
    simulation = sim(source, {})
    ex = simulation.run()
    assert ex.state.current is S.SUCCESS
    a = ex.runs_of("a")[0]
    simulation.send("exec", Restart(at=EPOCH, task_run_id=a.id, state=S.FAILED))
    ex = simulation.run()
    assert ex.state.current is S.FAILED
    assert ex.runs_of("group")[0].state.current is S.FAILED
    assert [r.task_id for r in ex.task_run_list if r.task_id == "alert"] == ["alert"]


def test_marking_an_unknown_task_run_is_refused() -> None:
    flow = flow_of(seq("a"))
    ex = sim(seq("a")).run()
    assert ex.state.current is S.SUCCESS
    with pytest.raises(EngineError, match="no task run 'nope'"):
        apply(ex, flow, Restart(at=EPOCH, task_run_id="nope", state=S.SUCCESS))
