"""Helpers for the engine tests: flows from YAML text, outcomes by task id."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from typing import Any

import yaml

from runtime.flow.execution import Execution, TaskRun
from runtime.flow.loader import build_flow
from runtime.flow.model import Flow
from runtime.flow.states import StateType
from services.dry_run import DryRun, Outcome

S = StateType


def flow_of(text: str) -> Flow:
    return build_flow(yaml.safe_load(textwrap.dedent(text)))


def outcomes(
    spec: dict[str, Any] | None = None,
) -> Callable[[TaskRun, int], Outcome]:
    """``spec`` maps a task id to a state, a (state, outputs) pair, a list of states by
    attempt, or a callable(run, attempt); other tasks succeed with outputs
    {"value": task id}."""
    spec = spec or {}

    def outcome(run: TaskRun, attempt: int) -> Outcome:
        wanted = spec.get(run.task_id)
        if wanted is None:
            return S.SUCCESS, {"value": run.task_id if run.value is None else run.value}
        if callable(wanted):
            return wanted(run, attempt)  # type: ignore[no-any-return]
        if isinstance(wanted, list):
            state = wanted[min(attempt, len(wanted)) - 1]
            return state, None
        if isinstance(wanted, tuple):
            return wanted
        return wanted, None

    return outcome


def run(text: str, spec: dict[str, Any] | None = None, **kw: Any) -> Execution:
    """Run the flow through the real executor on the memory backend."""
    return DryRun(flow_of(text), outcome=outcomes(spec), **kw).run()


def sim(text: str, spec: dict[str, Any] | None = None, **kw: Any) -> DryRun:
    return DryRun(flow_of(text), outcome=outcomes(spec), **kw)


def states(execution: Execution) -> dict[str, str]:
    """task id (with loop value) -> final state name."""
    out = {}
    for r in execution.task_run_list:
        key = r.task_id if r.value is None else f"{r.task_id}[{r.value}]"
        out[key] = r.state.current.value
    return out


def order(execution: Execution) -> list[str]:
    """Task ids in the order their runs were created."""
    return [
        r.task_id if r.value is None else f"{r.task_id}[{r.value}]" for r in execution.task_run_list
    ]


def history(run: TaskRun) -> list[str]:
    return [h.state.value for h in run.state.histories]


HEADER = "id: t\nnamespace: company.team\n"
LOG = "io.kestra.plugin.core.log.Log"
