"""What the engine consumes (events) and what it asks for (commands).

Events carry their own timestamp ``at``: the engine reads no clock. Every struct is
a tagged msgspec union member so the executor can put them on the wire as is.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import msgspec

from runtime.flow.execution import Execution, TaskMetric
from runtime.flow.states import StateType


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="kind"):
    at: datetime


# -- events --------------------------------------------------------------------
class ExecutionCreated(_Message, frozen=True, kw_only=True, tag="created"):
    """Start (or, for a QUEUED execution, try again to start) the execution.

    ``running`` is how many other executions of the same flow are running now; the
    flow's ``concurrency`` limit is checked against it, unless ``force`` (the API's
    unqueue and force-run: start now, past the limit).
    """

    running: int = 0
    force: bool = False


class WorkerResult(_Message, frozen=True, kw_only=True, tag="worker_result"):
    """A worker's report on one attempt: RUNNING when it starts, then a final state."""

    task_run_id: str
    attempt: int
    state: StateType
    outputs: dict[str, Any] | None = None
    worker_id: str | None = None
    #: when the attempt started; lets a worker skip the RUNNING report of a short task
    started: datetime | None = None
    #: the metrics the attempt reported (counters, timers)
    metrics: tuple[TaskMetric, ...] = ()


class Kill(_Message, frozen=True, kw_only=True, tag="kill"):
    pass


class Resume(_Message, frozen=True, kw_only=True, tag="resume"):
    """Resume a paused execution; ``inputs`` answer the Pause task's ``onResume``."""

    task_run_id: str | None = None
    inputs: dict[str, Any] = {}


class DelayKind(enum.Enum):
    RETRY = "RETRY"  #: start the next attempt of a task run
    PAUSE = "PAUSE"  #: a Pause task's pauseDuration has passed
    WAIT_FOR = "WAIT_FOR"  #: start the next WaitFor iteration
    TIMEOUT = "TIMEOUT"  #: a flowable task's timeout
    FLOW_TIMEOUT = "FLOW_TIMEOUT"  #: the flow's timeout
    NEW_EXECUTION = "NEW_EXECUTION"  #: retry behaviour CREATE_NEW_EXECUTION
    SLA = "SLA"  #: a flow's MAX_DURATION sla has passed (``attempt``: its index)


class DelayElapsed(_Message, frozen=True, kw_only=True, tag="delay"):
    delay: DelayKind
    task_run_id: str | None = None
    #: copied from the WakeAt: the attempt (RETRY) or iteration (WAIT_FOR) it was set
    #: for, so a wake-up delivered again later cannot start a later one early
    attempt: int | None = None


class SubflowEnded(_Message, frozen=True, kw_only=True, tag="subflow_ended"):
    task_run_id: str
    execution_id: str
    state: StateType
    outputs: dict[str, Any] | None = None
    #: the child's task outputs (``outputs.<task>``), read by the Subflow's own
    #: ``outputs`` property (Kestra's, deprecated since 0.15 but still common)
    task_outputs: dict[str, Any] | None = None


class Restart(_Message, frozen=True, kw_only=True, tag="restart"):
    """Run the failed task runs of a terminated execution again; or, with
    ``task_run_id``, mark that task run ``state`` and take the execution up again from
    there (the API's task-run state change, Kestra's "mark as")."""

    task_run_id: str | None = None
    state: StateType | None = None


class Replay(_Message, frozen=True, kw_only=True, tag="replay"):
    """Create a new execution that starts again from ``task_run_id`` (or from scratch)."""

    new_execution_id: str
    task_run_id: str | None = None


Event = (
    ExecutionCreated | WorkerResult | Kill | Resume | DelayElapsed | SubflowEnded | Restart | Replay
)


# -- commands ------------------------------------------------------------------
class RunTask(_Message, frozen=True, kw_only=True, tag="run_task"):
    task_run_id: str
    task_id: str
    attempt: int


class KillTask(_Message, frozen=True, kw_only=True, tag="kill_task"):
    task_run_id: str


class CreateSubflow(_Message, frozen=True, kw_only=True, tag="create_subflow"):
    task_run_id: str
    execution_id: str
    namespace: str
    flow_id: str
    revision: int | None
    inputs: dict[str, Any]
    labels: dict[str, str]
    wait: bool


class KillExecution(_Message, frozen=True, kw_only=True, tag="kill_execution"):
    execution_id: str


class WakeAt(_Message, frozen=True, kw_only=True, tag="wake_at"):
    """Send DelayElapsed(delay, task_run_id) back to this execution at ``when``."""

    when: datetime
    delay: DelayKind
    task_run_id: str | None = None
    attempt: int | None = None


class ExecutionEnded(_Message, frozen=True, kw_only=True, tag="execution_ended"):
    execution_id: str
    state: StateType
    outputs: dict[str, Any] | None = None
    parent_id: str | None = None
    parent_task_run_id: str | None = None
    #: a waited-for subflow's task outputs, for its parent's Subflow ``outputs``
    task_outputs: dict[str, Any] | None = None


class CreateExecution(_Message, frozen=True, kw_only=True, tag="create_execution"):
    """A new execution to store and start (replay, retry as a new execution)."""

    execution: Execution


class Log(_Message, frozen=True, kw_only=True, tag="log"):
    level: str
    message: str
    task_run_id: str | None = None
    task_id: str | None = None


Command = (
    RunTask
    | KillTask
    | CreateSubflow
    | KillExecution
    | WakeAt
    | ExecutionEnded
    | CreateExecution
    | Log
)
