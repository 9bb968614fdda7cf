"""What a flow's `sla` entries, `execution.Exit` and `execution.Labels` do to a running
execution, and which outside events an execution refuses; driven through the pure
engine (``apply``) event by event, as the executor does."""

from __future__ import annotations

from datetime import timedelta

import msgspec
import pytest

from runtime.flow.engine import EngineError, kill_refusal, replay_refusal, resume_refusal
from runtime.flow.events import (
    DelayElapsed,
    DelayKind,
    ExecutionEnded,
    KillTask,
    Log,
    Restart,
    RunTask,
    WakeAt,
    WorkerResult,
)
from runtime.flow.execution import Execution
from runtime.flow.scopes import java_text
from runtime.flow.states import State, StateType
from tests.unit.engine_driver import LOG, T0, Run

S = StateType
SLEEP = "io.kestra.plugin.core.flow.Sleep"


def labels_of(execution: Execution) -> dict[str, str]:
    return {lb["key"]: lb["value"] for lb in execution.labels}


def logs(run: Run, level: str | None = None) -> list[str]:
    return [c.message for c in run.commands if isinstance(c, Log) and level in (None, c.level)]


def ended(run: Run) -> list[StateType]:
    return [c.state for c in run.commands if isinstance(c, ExecutionEnded)]


def started(run: Run) -> list[str]:
    return [c.task_id for c in run.commands if isinstance(c, RunTask)]


def succeed(run: Run, task_id: str, outputs: dict[str, object] | None = None) -> None:
    """The worker's RUNNING then SUCCESS report (with ``outputs``) for the task."""
    task_run = run.run_of(task_id)
    job = [c for c in run.commands if isinstance(c, RunTask) and c.task_run_id == task_run.id]
    attempt = job[-1].attempt
    run.send(WorkerResult(at=T0, task_run_id=task_run.id, attempt=attempt, state=S.RUNNING))
    run.send(
        WorkerResult(
            at=T0, task_run_id=task_run.id, attempt=attempt, state=S.SUCCESS, outputs=outputs
        )
    )


def killed_runs(run: Run) -> set[str]:
    return {c.task_run_id for c in run.commands if isinstance(c, KillTask)}


# -- execution.Labels ------------------------------------------------------------------
LABELS = f"""
id: t
namespace: company.team
tasks:
  - id: set
    type: io.kestra.plugin.core.execution.Labels
    labels:
      team: platform
  - id: after
    type: {LOG}
    message: after
"""


def test_a_labels_task_adds_new_keys_and_changes_existing_ones() -> None:
    run = Run(LABELS, labels={"team": "data", "tier": "gold"})
    before = labels_of(run.execution)
    succeed(run, "set", {"labels": {"team": "platform", "count": 2}})
    assert labels_of(run.execution) == {**before, "team": "platform", "count": "2"}
    keys = [lb["key"] for lb in run.execution.labels]
    assert keys.index("team") < keys.index("tier") < keys.index("count")  # kept in place
    assert started(run) == ["set", "after"]
    run.report("after", S.SUCCESS)
    assert ended(run) == [S.SUCCESS]
    assert labels_of(run.execution)["team"] == "platform"  # kept to the end


@pytest.mark.parametrize("outputs", [None, {}, {"labels": {}}, {"labels": ["team", "x"]}])
def test_a_labels_task_without_labels_changes_none(outputs: dict[str, object] | None) -> None:
    run = Run(LABELS, labels={"team": "data"})
    before = run.execution.labels
    succeed(run, "set", outputs)
    assert run.execution.labels == before
    assert run.run_of("set").state.current is S.SUCCESS


def test_a_failed_labels_task_sets_no_label() -> None:
    run = Run(LABELS, labels={"team": "data"})
    before = run.execution.labels
    task_run = run.run_of("set")
    run.send(WorkerResult(at=T0, task_run_id=task_run.id, attempt=1, state=S.RUNNING))
    run.send(
        WorkerResult(
            at=T0,
            task_run_id=task_run.id,
            attempt=1,
            state=S.FAILED,
            outputs={"labels": {"team": "x"}},
        )
    )
    assert run.execution.labels == before
    assert ended(run) == [S.FAILED]


# -- execution.Exit --------------------------------------------------------------------
EXIT = f"""
id: t
namespace: company.team
tasks:
  - id: side
    type: io.kestra.plugin.core.flow.Parallel
    tasks:
      - id: nap
        type: {SLEEP}
        duration: PT10S
      - id: decide
        type: io.kestra.plugin.core.flow.Sequential
        tasks:
          - id: stop
            type: io.kestra.plugin.core.execution.Exit
            state: WARNING
          - id: never
            type: {LOG}
            message: not reached
  - id: after
    type: {LOG}
    message: not reached either
"""


@pytest.mark.parametrize(
    ("said", "end"),
    [
        ({"state": "WARNING"}, S.WARNING),
        ({"state": "CANCELLED"}, S.CANCELLED),
        ({"state": "SUCCESS"}, S.SUCCESS),
        ({}, S.SUCCESS),  # no state said: SUCCESS
        ({"state": "NOT_A_STATE"}, S.FAILED),
    ],
)
def test_exit_kills_what_runs_and_ends_the_execution_in_its_state(
    said: dict[str, object], end: StateType
) -> None:
    run = Run(EXIT)
    assert sorted(started(run)) == ["nap", "stop"]
    nap = run.run_of("nap")
    run.send(WorkerResult(at=T0, task_run_id=nap.id, attempt=1, state=S.RUNNING))
    succeed(run, "stop", said)
    assert run.run_of("stop").state.current is S.SUCCESS
    assert run.execution.state.current is S.KILLING
    assert killed_runs(run) == {run.run_of("nap").id}
    assert f"execution.Exit: the execution ends {end.value}" in logs(run, "INFO")
    assert ended(run) == []  # the sleep has not stopped yet
    run.send(WorkerResult(at=T0, task_run_id=run.run_of("nap").id, attempt=1, state=S.KILLED))
    assert ended(run) == [end]
    assert run.execution.state.current is end
    assert sorted(started(run)) == ["nap", "stop"]  # neither `never` nor `after`


def test_exit_while_already_killing_ends_in_its_state_without_killing_again() -> None:
    run = Run(EXIT)
    nap = run.run_of("nap")
    stop = run.run_of("stop")
    run.send(WorkerResult(at=T0, task_run_id=nap.id, attempt=1, state=S.RUNNING))
    run.send(WorkerResult(at=T0, task_run_id=stop.id, attempt=1, state=S.RUNNING))
    run.send(DelayElapsed(at=T0, delay=DelayKind.FLOW_TIMEOUT))  # starts KILLING
    assert run.execution.state.current is S.KILLING
    kills = len([c for c in run.commands if isinstance(c, KillTask)])
    run.send(
        WorkerResult(
            at=T0, task_run_id=stop.id, attempt=1, state=S.SUCCESS, outputs={"state": "WARNING"}
        )
    )
    assert len([c for c in run.commands if isinstance(c, KillTask)]) == kills
    history = [h.state for h in run.execution.state.histories]
    assert history.count(S.KILLING) == 1
    run.send(WorkerResult(at=T0, task_run_id=nap.id, attempt=1, state=S.KILLED))
    assert ended(run) == [S.WARNING]


# -- sla: MAX_DURATION -----------------------------------------------------------------
MAX_DURATION = f"""
id: t
namespace: company.team
sla:
  - id: broken
    type: MAX_DURATION
    duration: not-a-duration
  - id: quick
    type: MAX_DURATION
    behavior: BEHAVIOR
    duration: PT30S
    labels:
      sla: missed
tasks:
  - id: nap
    type: {SLEEP}
    duration: PT5M
  - id: after
    type: {LOG}
    message: after
"""


def test_a_max_duration_sla_wakes_the_execution_at_its_duration() -> None:
    run = Run(MAX_DURATION.replace("BEHAVIOR", "CANCEL"))
    wakes = [c for c in run.commands if isinstance(c, WakeAt) and c.delay is DelayKind.SLA]
    assert [(w.when, w.attempt, w.task_run_id) for w in wakes] == [
        (T0 + timedelta(seconds=30), 1, None)
    ]
    (error,) = logs(run, "ERROR")
    assert "'broken'" in error
    assert "duration" in error


@pytest.mark.parametrize(
    ("behavior", "end"), [("CANCEL", S.CANCELLED), ("cancel", S.CANCELLED), ("FAIL", S.FAILED)]
)
def test_a_max_duration_sla_that_ends_kills_what_runs(behavior: str, end: StateType) -> None:
    run = Run(MAX_DURATION.replace("BEHAVIOR", behavior))
    nap = run.run_of("nap")
    run.send(WorkerResult(at=T0, task_run_id=nap.id, attempt=1, state=S.RUNNING))
    run.send(DelayElapsed(at=T0, delay=DelayKind.SLA, attempt=1))
    assert labels_of(run.execution)["sla"] == "missed"
    assert run.execution.state.current is S.KILLING
    assert killed_runs(run) == {nap.id}
    (warning,) = logs(run, "WARNING")
    assert "'quick'" in warning
    assert "(max duration exceeded)" in warning
    assert behavior.upper() in warning
    run.send(WorkerResult(at=T0, task_run_id=nap.id, attempt=1, state=S.KILLED))
    assert ended(run) == [end]
    assert started(run) == ["nap"]


@pytest.mark.parametrize("behavior", ["NONE", "SOMETHING"])
def test_a_max_duration_sla_without_an_ending_behavior_only_labels(behavior: str) -> None:
    run = Run(MAX_DURATION.replace("BEHAVIOR", behavior))
    run.send(DelayElapsed(at=T0, delay=DelayKind.SLA, attempt=1))
    assert labels_of(run.execution)["sla"] == "missed"
    assert run.execution.state.current is S.RUNNING
    assert killed_runs(run) == set()
    run.report("nap", S.SUCCESS)
    run.report("after", S.SUCCESS)
    assert ended(run) == [S.SUCCESS]


def test_a_max_duration_sla_after_the_end_changes_nothing() -> None:
    run = Run(MAX_DURATION.replace("BEHAVIOR", "FAIL"))
    run.report("nap", S.SUCCESS)
    run.report("after", S.SUCCESS)
    done = run.execution
    assert run.send(DelayElapsed(at=T0, delay=DelayKind.SLA, attempt=1)) == []
    assert run.execution is done
    assert ended(run) == [S.SUCCESS]


def test_a_max_duration_sla_while_killing_does_not_kill_again() -> None:
    run = Run(MAX_DURATION.replace("BEHAVIOR", "CANCEL"))
    nap = run.run_of("nap")
    run.send(WorkerResult(at=T0, task_run_id=nap.id, attempt=1, state=S.RUNNING))
    run.send(DelayElapsed(at=T0, delay=DelayKind.FLOW_TIMEOUT))
    assert run.execution.state.current is S.KILLING
    kills = len([c for c in run.commands if isinstance(c, KillTask)])
    run.send(DelayElapsed(at=T0, delay=DelayKind.SLA, attempt=1))
    assert len([c for c in run.commands if isinstance(c, KillTask)]) == kills
    assert [h.state for h in run.execution.state.histories].count(S.KILLING) == 1


# -- sla: EXECUTION_ASSERTION ----------------------------------------------------------
ASSERTION = """
id: t
namespace: company.team
inputs:
  - id: amount
    type: INT
    defaults: 5
sla:
  - id: check
    type: EXECUTION_ASSERTION
    behavior: BEHAVIOR
    assert: "CONDITION"
    labels:
      - key: review
        value: needed
tasks:
  - id: total
    type: io.kestra.plugin.core.debug.Return
    format: "{{ 10 }}"
"""


def assertion_run(behavior: str, holds: str, end: StateType = S.SUCCESS) -> Run:
    text = ASSERTION.replace("BEHAVIOR", behavior).replace("CONDITION", holds)
    run = Run(text)
    run.report("total", end)
    return run


@pytest.mark.parametrize(
    ("behavior", "end"),
    [("FAIL", S.FAILED), ("CANCEL", S.CANCELLED), ("NONE", S.SUCCESS), ("other", S.SUCCESS)],
)
def test_an_assertion_that_does_not_hold_applies_the_sla(behavior: str, end: StateType) -> None:
    run = assertion_run(behavior, "{{ 1 > 2 }}")
    assert ended(run) == [end]
    assert run.execution.state.current is end
    assert labels_of(run.execution)["review"] == "needed"
    (warning,) = logs(run, "WARNING")
    assert "'check'" in warning
    assert "(assertion does not hold)" in warning


def test_an_assertion_that_holds_changes_nothing() -> None:
    run = assertion_run("FAIL", "{{ 2 > 1 }}")
    assert ended(run) == [S.SUCCESS]
    assert "review" not in labels_of(run.execution)
    assert logs(run, "WARNING") == []


def test_an_assertion_without_an_ending_behavior_keeps_the_end_state() -> None:
    run = assertion_run("NONE", "{{ 1 > 2 }}", S.WARNING)
    assert ended(run) == [S.WARNING]
    assert labels_of(run.execution)["review"] == "needed"


def test_an_assertion_that_cannot_render_counts_as_violated() -> None:
    run = assertion_run("FAIL", "{{ nothing.here }}")
    assert ended(run) == [S.FAILED]
    errors = logs(run, "ERROR")
    assert len(errors) == 1
    assert "'check'" in errors[0]


# -- refusals ----------------------------------------------------------------------------
def in_state(*states: StateType) -> Execution:
    execution = Run(LABELS).execution
    history = State.new(S.CREATED, T0)
    for state in states:
        history = history.to(state, T0)
    return msgspec.structs.replace(execution, state=history)


@pytest.mark.parametrize("state", [S.RUNNING, S.PAUSED, S.CREATED])
def test_a_live_execution_can_be_killed(state: StateType) -> None:
    assert kill_refusal(in_state(state)) is None


@pytest.mark.parametrize("state", [S.KILLING, S.SUCCESS, S.FAILED, S.KILLED])
def test_an_ended_or_killing_execution_cannot_be_killed(state: StateType) -> None:
    why = kill_refusal(in_state(S.RUNNING, state))
    assert why is not None
    assert f"is {state.value}" in why


def test_only_an_ended_execution_can_be_replayed() -> None:
    running = in_state(S.RUNNING)
    why = replay_refusal(running, None)
    assert why is not None
    assert "is RUNNING" in why
    done = in_state(S.RUNNING, S.FAILED)
    assert replay_refusal(done, None) is None
    assert replay_refusal(done, done.task_run_list[0].id) is None
    missing = replay_refusal(done, "nope")
    assert missing is not None
    assert "'nope'" in missing


@pytest.mark.parametrize("state", [S.RUNNING, S.SUCCESS, S.KILLING])
def test_only_a_paused_execution_can_be_resumed(state: StateType) -> None:
    assert resume_refusal(in_state(S.RUNNING, S.PAUSED)) is None
    why = resume_refusal(in_state(S.RUNNING, state))
    assert why is not None
    assert f"is {state.value}" in why


# -- java_text: Kestra's messages quote values as Java writes them -----------------------
def test_values_are_written_as_java_writes_them() -> None:
    value = [1, None, True, False, "x", {"a": [False, None], "b": {}}, []]
    assert java_text(value) == "[1, null, true, false, x, {a=[false, null], b={}}, []]"
    assert java_text(None) == "null"
    assert java_text(2.5) == "2.5"


def test_an_each_with_a_null_value_fails_with_kestras_message() -> None:
    run = Run(
        f"""
        id: t
        namespace: company.team
        tasks:
          - id: each
            type: io.kestra.plugin.core.flow.ForEach
            values: '["a", null, {{"k": true}}]'
            tasks:
              - id: inner
                type: {LOG}
                message: hi
        """
    )
    assert ended(run) == [S.FAILED]
    assert any(
        "Found '1' null values on Each, with values=[a, null, {k=true}]" in m
        for m in logs(run, "ERROR")
    )


# -- how an execution ends: flow outputs, the parent it answers --------------------------
OUTPUTS = """
id: t
namespace: company.team
tasks:
  - id: total
    type: io.kestra.plugin.core.debug.Return
    format: "7"
outputs:
  - id: result
    type: STRING
    value: "VALUE"
"""


@pytest.mark.parametrize("end", [S.SUCCESS, S.WARNING])
def test_an_ending_execution_sends_its_outputs_to_its_parent(end: StateType) -> None:
    run = Run(OUTPUTS.replace("VALUE", "{{ outputs.total.value }}"))
    run.execution = msgspec.structs.replace(
        run.execution, parent_id="parent", parent_task_run_id="sub"
    )
    task_run = run.run_of("total")
    run.send(WorkerResult(at=T0, task_run_id=task_run.id, attempt=1, state=S.RUNNING))
    run.send(
        WorkerResult(at=T0, task_run_id=task_run.id, attempt=1, state=end, outputs={"value": "7"})
    )
    (message,) = [c for c in run.commands if isinstance(c, ExecutionEnded)]
    assert message.state is end
    assert message.execution_id == "e"
    assert message.outputs == {"result": "7"}
    assert (message.parent_id, message.parent_task_run_id) == ("parent", "sub")


def test_flow_outputs_that_cannot_render_fail_the_execution() -> None:
    run = Run(OUTPUTS.replace("VALUE", "{{ outputs.nothing.value }}"))
    run.report("total", S.SUCCESS)
    (message,) = [c for c in run.commands if isinstance(c, ExecutionEnded)]
    assert message.state is S.FAILED
    assert message.outputs is None
    (error,) = logs(run, "ERROR")
    assert error.startswith("flow outputs: ")


def test_a_failed_execution_renders_no_outputs() -> None:
    run = Run(OUTPUTS.replace("VALUE", "{{ outputs.nothing.value }}"))
    run.report("total", S.FAILED)
    (message,) = [c for c in run.commands if isinstance(c, ExecutionEnded)]
    assert message.state is S.FAILED
    assert message.outputs is None
    assert logs(run, "ERROR") == []


# -- flowables: dynamic properties, allowFailure/allowWarning, a Switch without a case ---
def test_a_flowable_property_renders_with_its_own_task_run() -> None:
    run = Run(
        f"""
        id: t
        namespace: company.team
        tasks:
          - id: each
            type: io.kestra.plugin.core.flow.ForEach
            values: ["3", "5"]
            concurrencyLimit: 0
            tasks:
              - id: seq
                type: io.kestra.plugin.core.flow.Sequential
                timeout: "PT{{{{ taskrun.value }}}}S"
                tasks:
                  - id: inner
                    type: {LOG}
                    message: hi
        """
    )
    wakes = [c for c in run.commands if isinstance(c, WakeAt) and c.delay is DelayKind.TIMEOUT]
    by_run = {c.task_run_id: c.when for c in wakes}
    seqs = {r.value: r.id for r in run.execution.runs_of("seq")}
    assert by_run == {
        seqs["3"]: T0 + timedelta(seconds=3),
        seqs["5"]: T0 + timedelta(seconds=5),
    }


@pytest.mark.parametrize(
    ("allow", "child", "scope_end", "execution_end"),
    [
        ("allowFailure: true", S.FAILED, S.WARNING, S.WARNING),
        ("allowWarning: true", S.WARNING, S.SUCCESS, S.SUCCESS),
        ("allowWarning: false", S.FAILED, S.FAILED, S.FAILED),
    ],
)
def test_a_flowable_softens_its_end_as_its_allow_settings_say(
    allow: str, child: StateType, scope_end: StateType, execution_end: StateType
) -> None:
    run = Run(
        f"""
        id: t
        namespace: company.team
        tasks:
          - id: seq
            type: io.kestra.plugin.core.flow.Sequential
            {allow}
            tasks:
              - id: inner
                type: {LOG}
                message: hi
        """
    )
    run.report("inner", child)
    assert run.run_of("seq").state.current is scope_end
    assert ended(run) == [execution_end]


@pytest.mark.parametrize(
    ("allow", "end"),
    [
        ("", S.FAILED),
        ("allowFailure: true", S.WARNING),
        ("allowWarning: true", S.FAILED),
        ("allowFailure: true\n            allowWarning: true", S.SUCCESS),
    ],
)
def test_a_switch_without_a_matching_case_fails(allow: str, end: StateType) -> None:
    run = Run(
        f"""
        id: t
        namespace: company.team
        tasks:
          - id: pick
            type: io.kestra.plugin.core.flow.Switch
            value: "{{{{ 'b' }}}}"
            {allow}
            cases:
              a:
                - id: inner
                  type: {LOG}
                  message: hi
          - id: after
            type: {LOG}
            message: after
        """
    )
    pick = run.run_of("pick")
    assert pick.state.current is end
    errors = [c for c in run.commands if isinstance(c, Log) and c.level == "ERROR"]
    assert [(c.task_run_id, c.task_id) for c in errors] == [(pick.id, "pick")]
    assert "no case for 'b'" in errors[0].message
    assert ("after" in started(run)) is (end is not S.FAILED)


# -- retry policies: inherited from the nearest ancestor, or rendered -----------------------
def test_a_task_without_a_retry_policy_takes_its_nearest_ancestors() -> None:
    run = Run(
        f"""
        id: t
        namespace: company.team
        retry:
          type: constant
          interval: PT9S
          maxAttempt: 5
        tasks:
          - id: seq
            type: io.kestra.plugin.core.flow.Sequential
            retry:
              type: constant
              interval: PT2S
              maxAttempt: 2
            tasks:
              - id: inner
                type: {LOG}
                message: hi
        """
    )
    run.report("inner", S.FAILED)
    inner = run.run_of("inner")
    assert inner.state.current is S.RETRYING
    (wake,) = [c for c in run.commands if isinstance(c, WakeAt) and c.delay is DelayKind.RETRY]
    assert wake.when == T0 + timedelta(seconds=2)
    run.send(DelayElapsed(at=T0, delay=DelayKind.RETRY, task_run_id=inner.id, attempt=1))
    run.report("inner", S.FAILED)
    assert run.run_of("inner").state.current is S.FAILED  # maxAttempt 2: no third
    assert ended(run) == [S.FAILED]


def test_a_retry_policy_that_cannot_render_retries_nothing() -> None:
    run = Run(
        f"""
        id: t
        namespace: company.team
        tasks:
          - id: inner
            type: {LOG}
            message: hi
            retry:
              type: constant
              interval: PT1S
              maxAttempt: "{{{{ taskrun.attemptsCount + 2 }}}}"
        """
    )
    run.report("inner", S.FAILED)
    assert run.run_of("inner").state.current is S.FAILED
    errors = logs(run, "ERROR")
    assert len(errors) == 1
    assert errors[0].endswith(": not retried")
    assert ended(run) == [S.FAILED]


# -- "mark as" after an execution ended by a timeout or an sla ----------------------------
@pytest.mark.parametrize(
    ("ending", "first_end"),
    [
        (DelayElapsed(at=T0, delay=DelayKind.FLOW_TIMEOUT), S.FAILED),
        (DelayElapsed(at=T0, delay=DelayKind.SLA, attempt=1), S.CANCELLED),
    ],
)
def test_a_task_run_marked_after_a_timeout_or_sla_lets_the_execution_end_as_it_goes(
    ending: DelayElapsed, first_end: StateType
) -> None:
    run = Run(MAX_DURATION.replace("BEHAVIOR", "CANCEL"))
    nap = run.run_of("nap")
    run.send(WorkerResult(at=T0, task_run_id=nap.id, attempt=1, state=S.RUNNING))
    run.send(ending)
    run.send(WorkerResult(at=T0, task_run_id=nap.id, attempt=1, state=S.KILLED))
    assert ended(run) == [first_end]
    run.send(Restart(at=T0, task_run_id=nap.id, state=S.SUCCESS))
    assert run.execution.state.current is S.RUNNING
    run.report("after", S.SUCCESS)
    assert ended(run) == [first_end, S.SUCCESS]


def test_a_task_run_is_marked_with_an_end_state_only() -> None:
    run = Run(LABELS)
    run.report("set", S.SUCCESS)
    run.report("after", S.SUCCESS)
    with pytest.raises(EngineError, match="marked with an end state, not RUNNING"):
        run.send(Restart(at=T0, task_run_id=run.run_of("set").id, state=S.RUNNING))


def test_a_switch_renders_its_value_with_its_own_task_run() -> None:
    run = Run(
        f"""
        id: t
        namespace: company.team
        tasks:
          - id: each
            type: io.kestra.plugin.core.flow.ForEach
            values: ["a", "b"]
            concurrencyLimit: 0
            tasks:
              - id: pick
                type: io.kestra.plugin.core.flow.Switch
                value: "{{{{ taskrun.value }}}}"
                cases:
                  a:
                    - id: on_a
                      type: {LOG}
                      message: a
                  b:
                    - id: on_b
                      type: {LOG}
                      message: b
        """
    )
    assert sorted(started(run)) == ["on_a", "on_b"]


def test_a_flowable_property_renders_with_its_task() -> None:
    run = Run(
        f"""
        id: t
        namespace: company.team
        tasks:
          - id: seq
            type: io.kestra.plugin.core.flow.Sequential
            timeout: "PT{{{{ task.id | length }}}}S"
            tasks:
              - id: inner
                type: {LOG}
                message: hi
        """
    )
    (wake,) = [c for c in run.commands if isinstance(c, WakeAt) and c.delay is DelayKind.TIMEOUT]
    assert wake.when == T0 + timedelta(seconds=3)
