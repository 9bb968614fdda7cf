"""Executions and task runs, in Kestra's shape (``taskRunList``, ``state.histories``).

All structs are frozen: the engine returns a new execution for every event and
shares whatever did not change.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from runtime.flow.states import State, StateType


class _Wire(msgspec.Struct, frozen=True, kw_only=True, rename="camel", omit_defaults=True):
    """Base of the execution structs: camelCase on the wire; unknown fields ignored."""


class Attempt(_Wire, frozen=True, kw_only=True):
    state: State
    worker_id: str | None = None


#: the kinds of metric a task reports, as Kestra's
METRIC_TYPES = ("counter", "timer")


class TaskMetric(_Wire, frozen=True, kw_only=True):
    """A metric a task reported (Kestra's counters and timers): a counter's value
    is a count, a timer's is seconds."""

    name: str
    type: str  # "counter" or "timer"
    value: float
    tags: dict[str, str] = {}
    timestamp: datetime | None = None


class TaskRun(_Wire, frozen=True, kw_only=True):
    id: str
    execution_id: str
    namespace: str
    flow_id: str
    task_id: str
    parent_task_run_id: str | None = None
    value: str | None = None
    iteration: int | None = None
    attempts: tuple[Attempt, ...] = ()
    outputs: dict[str, Any] | None = None
    state: State
    #: engine bookkeeping that must survive between events (ForEach values,
    #: WaitFor iterations, the child execution of a Subflow); not part of Kestra's shape
    memo: dict[str, Any] | None = None
    #: the metrics its attempts reported, served by /api/v1/metrics
    metrics: tuple[TaskMetric, ...] = ()

    def with_state(self, state: StateType, at: datetime) -> TaskRun:
        return msgspec.structs.replace(self, state=self.state.to(state, at))

    @property
    def attempt_count(self) -> int:
        return len(self.attempts)


class ExecutionMetadata(_Wire, frozen=True, kw_only=True):
    attempt_number: int = 1
    original_created_date: datetime | None = None


class Execution(_Wire, frozen=True, kw_only=True):
    id: str
    namespace: str
    flow_id: str
    flow_revision: int | None = None
    state: State
    task_run_list: tuple[TaskRun, ...] = ()
    inputs: dict[str, Any] = {}
    outputs: dict[str, Any] | None = None
    labels: tuple[dict[str, str], ...] = ()
    variables: dict[str, Any] | None = None
    trigger: dict[str, Any] | None = None
    parent_id: str | None = None
    original_id: str | None = None
    #: the parent's Subflow task run, when this execution was created by one
    parent_task_run_id: str | None = None
    metadata: ExecutionMetadata = ExecutionMetadata()
    #: engine bookkeeping (flow timeout hit, error while computing outputs)
    memo: dict[str, Any] | None = None

    def find(self, task_run_id: str) -> TaskRun | None:
        for run in self.task_run_list:
            if run.id == task_run_id:
                return run
        return None

    def runs_of(self, task_id: str) -> list[TaskRun]:
        return [run for run in self.task_run_list if run.task_id == task_id]

    @property
    def start_date(self) -> datetime | None:
        return self.state.start_date


#: the label tying the executions of one tree together (Kestra's Label.CORRELATION_ID)
CORRELATION_ID = "system.correlationId"


def new_execution(
    *,
    id: str,
    namespace: str,
    flow_id: str,
    flow_revision: int | None,
    at: datetime,
    inputs: dict[str, Any] | None = None,
    labels: dict[str, str] | None = None,
    trigger: dict[str, Any] | None = None,
    parent_id: str | None = None,
    parent_task_run_id: str | None = None,
) -> Execution:
    """A CREATED execution, ready for the ExecutionCreated event. As in Kestra it
    carries ``system.correlationId``: the id of the execution tree's root (given in
    ``labels`` for a subflow, its own id otherwise)."""
    labels = {**(labels or {})}
    labels.setdefault(CORRELATION_ID, id)
    return Execution(
        id=id,
        namespace=namespace,
        flow_id=flow_id,
        flow_revision=flow_revision,
        state=State.new(StateType.CREATED, at),
        inputs=inputs or {},
        labels=tuple({"key": k, "value": v} for k, v in (labels or {}).items()),
        trigger=trigger,
        parent_id=parent_id,
        original_id=id,
        parent_task_run_id=parent_task_run_id,
        metadata=ExecutionMetadata(attempt_number=1, original_created_date=at),
    )


def to_kestra_dict(execution: Execution) -> dict[str, Any]:
    """The execution as Kestra's API shows it (engine bookkeeping left out)."""
    data: dict[str, Any] = msgspec.to_builtins(execution)
    data.pop("memo", None)
    for run in data.get("taskRunList", ()):
        run.pop("memo", None)
        run.setdefault("outputs", None)
    data.setdefault("taskRunList", [])
    data.setdefault("inputs", {})
    data.setdefault("outputs", None)
    return data
