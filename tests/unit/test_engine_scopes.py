"""What every flowable scope does with its own ``errors``, ``finally``,
``allowFailure`` and templates, and the ordering rules of WaitFor and Dag: rules a
mutation run found unguarded for some flowable types."""

from __future__ import annotations

import pytest

from runtime.flow.events import RunTask, WorkerResult
from runtime.flow.states import StateType
from tests.unit.engine_driver import LOG, T0, Run

S = StateType
CORE = "io.kestra.plugin.core.flow."

#: one flowable of each kind around the same child ``inner``; ``HANDLERS`` goes in
#: at the flowable's level
WRAPPERS = {
    "Sequential": "type: {core}Sequential\n    tasks:\n      - {inner}",
    "Parallel": "type: {core}Parallel\n    tasks:\n      - {inner}",
    "Dag": "type: {core}Dag\n    tasks:\n      - task: {inner}",
    "If": (
        "type: {core}If\n    condition: \"{{{{ task.id == 'wrapper' }}}}\"\n"
        "    then:\n      - {inner}"
    ),
    "Switch": (
        'type: {core}Switch\n    value: "{{{{ task.id }}}}"\n'
        "    cases:\n      wrapper:\n        - {inner}"
    ),
    "ForEach": (
        'type: {core}ForEach\n    values: ["{{{{ task.id }}}}"]\n    tasks:\n      - {inner}'
    ),
    "WaitFor": 'type: {core}WaitFor\n    condition: "{{{{ true }}}}"\n    tasks:\n      - {inner}',
}
INNER = f"{{id: inner, type: {LOG}, message: inner}}"


def wrapped(kind: str, handlers: str) -> Run:
    body = WRAPPERS[kind].format(core=CORE, inner=INNER)
    return Run(f"""
id: t
namespace: company.team
tasks:
  - id: wrapper
    {body}
{handlers}
""")


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_a_failing_child_runs_the_flowables_errors_and_finally_then_fails_it(kind: str) -> None:
    run = wrapped(
        kind,
        f"    errors:\n      - {{id: handle, type: {LOG}, message: h}}\n"
        f"    finally:\n      - {{id: tidy, type: {LOG}, message: t}}",
    )
    run.report("inner", S.FAILED)
    assert [r.task_id for r in run.execution.task_run_list][-1] == "handle"
    run.report("handle", S.SUCCESS)
    run.report("tidy", S.SUCCESS)
    for task_id in ("handle", "tidy"):
        assert run.run_of(task_id).parent_task_run_id == run.run_of("wrapper").id
    assert run.run_of("wrapper").state.current is S.FAILED
    assert run.execution.state.current is S.FAILED


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
@pytest.mark.parametrize(
    ("allow", "end"),
    [("allowFailure: true", S.WARNING), ("allowFailure: true\n    allowWarning: true", S.SUCCESS)],
)
def test_allow_failure_softens_a_flowables_failure(kind: str, allow: str, end: StateType) -> None:
    run = wrapped(kind, f"    {allow}")
    run.report("inner", S.FAILED)
    assert run.run_of("wrapper").state.current is end
    assert run.execution.state.current is end


@pytest.mark.parametrize("kind", sorted(WRAPPERS))
def test_a_flowables_templates_see_its_task(kind: str) -> None:
    run = wrapped(kind, "")
    # the If, Switch and ForEach above only take their branch or value if task.id renders
    assert [c.task_id for c in run.commands if isinstance(c, RunTask)] == ["inner"]
    run.report("inner", S.SUCCESS)
    assert run.run_of("wrapper").state.current is S.SUCCESS


def test_wait_for_runs_its_tasks_one_after_another() -> None:
    run = Run(f"""
id: t
namespace: company.team
tasks:
  - id: w
    type: {CORE}WaitFor
    condition: "{{{{ true }}}}"
    tasks:
      - {{id: first, type: {LOG}, message: a}}
      - {{id: second, type: {LOG}, message: b}}
""")
    assert [c.task_id for c in run.commands if isinstance(c, RunTask)] == ["first"]
    run.report("first", S.SUCCESS)
    assert [c.task_id for c in run.commands if isinstance(c, RunTask)] == ["first", "second"]


def test_a_dag_runs_at_most_concurrent_tasks_at_once() -> None:
    run = Run(f"""
id: t
namespace: company.team
tasks:
  - id: d
    type: {CORE}Dag
    concurrent: 1
    tasks:
      - task: {{id: a, type: {LOG}, message: a}}
      - task: {{id: b, type: {LOG}, message: b}}
""")
    assert [c.task_id for c in run.commands if isinstance(c, RunTask)] == ["a"]
    run.report("a", S.SUCCESS)
    assert [c.task_id for c in run.commands if isinstance(c, RunTask)] == ["a", "b"]


@pytest.mark.parametrize(
    ("kind", "head"),
    [
        ("If", 'condition: "{{ outputs.inner is not defined }}"\n    then'),
        ("Switch", "value: \"{{ outputs.inner is defined }}\"\n    cases:\n      'false'"),
    ],
)
def test_a_branch_once_taken_is_kept_when_its_template_would_now_differ(
    kind: str, head: str
) -> None:
    run = Run(f"""
id: t
namespace: company.team
tasks:
  - id: pick
    type: {CORE}{kind}
    {head}:
      - {{id: inner, type: io.kestra.plugin.core.debug.Return, format: x}}
      - {{id: after, type: {LOG}, message: b}}
""")
    inner = run.run_of("inner").id
    outputs = {"value": "x"}
    run.send(WorkerResult(at=T0, task_run_id=inner, attempt=1, state=S.SUCCESS, outputs=outputs))
    # now the template would pick the other branch (none)
    run.report("after", S.SUCCESS)
    assert run.run_of("pick").state.current is S.SUCCESS
    assert [r.task_id for r in run.execution.task_run_list] == ["pick", "inner", "after"]
