"""A driver for engine tests: one execution sent events through ``apply``, as the
executor does, keeping every command the engine asked for."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime

import yaml

from runtime.flow.engine import apply
from runtime.flow.events import (
    Command,
    CreateSubflow,
    Event,
    ExecutionCreated,
    RunTask,
    WorkerResult,
)
from runtime.flow.execution import Execution, TaskRun, new_execution
from runtime.flow.loader import build_flow
from runtime.flow.model import Flow
from runtime.flow.states import StateType

S = StateType
T0 = datetime(2024, 1, 1, tzinfo=UTC)
LOG = "io.kestra.plugin.core.log.Log"


def flow_of(text: str) -> Flow:
    return build_flow(yaml.safe_load(textwrap.dedent(text)))


class Run:
    """One execution driven through ``apply``, keeping every command it produced."""

    def __init__(self, text: str, labels: dict[str, str] | None = None) -> None:
        self.flow: Flow = flow_of(text)
        self.execution: Execution = new_execution(
            id="e", namespace="company.team", flow_id="t", flow_revision=1, at=T0, labels=labels
        )
        self.commands: list[Command] = []
        self.send_created()

    def send_created(self) -> list[Command]:
        return self.send(ExecutionCreated(at=self.execution.state.histories[-1].date))

    def send(self, event: Event) -> list[Command]:
        self.execution, commands = apply(self.execution, self.flow, event)
        self.commands.extend(commands)
        return commands

    def run_of(self, task_id: str) -> TaskRun:
        (run,) = self.execution.runs_of(task_id)
        return run

    def report(self, task_id: str, state: StateType, at: datetime = T0) -> list[Command]:
        """The worker's end of the task's current attempt (RUNNING first, then ``state``)."""
        run = self.run_of(task_id)
        job = [c for c in self.commands if isinstance(c, RunTask) and c.task_run_id == run.id][-1]
        self.send(WorkerResult(at=at, task_run_id=run.id, attempt=job.attempt, state=S.RUNNING))
        return self.send(WorkerResult(at=at, task_run_id=run.id, attempt=job.attempt, state=state))

    def children_created(self) -> list[CreateSubflow]:
        return [c for c in self.commands if isinstance(c, CreateSubflow)]
