"""Run flows through the engine in memory, with no worker, database or clock.

Used by the engine's tests, its benchmark and its property tests. Runnable tasks
end as ``outcome(task_run, attempt)`` says (SUCCESS with no outputs by default);
delays fire at once, in the order they are due, on a simulated clock; Subflow
tasks run their child flow from ``flows`` in the same way.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from runtime.flow.engine import apply
from runtime.flow.events import (
    Command,
    CreateExecution,
    CreateSubflow,
    DelayElapsed,
    Event,
    ExecutionCreated,
    ExecutionEnded,
    KillTask,
    Log,
    RunTask,
    SubflowEnded,
    WakeAt,
    WorkerResult,
)
from runtime.flow.execution import Execution, TaskRun, new_execution
from runtime.flow.model import Flow
from runtime.flow.states import StateType

#: what a runnable task run's attempt ends with: a state, and outputs
Outcome = tuple[StateType, dict[str, Any] | None]
OutcomeFn = Callable[[TaskRun, int], Outcome]

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)


def succeed(run: TaskRun, attempt: int) -> Outcome:
    return StateType.SUCCESS, None


class Simulation:
    """One execution (and its subflows) driven to the end in memory."""

    def __init__(
        self,
        flow: Flow,
        *,
        outcome: OutcomeFn = succeed,
        flows: Mapping[str, Flow] | None = None,
        inputs: dict[str, Any] | None = None,
        execution_id: str = "exec",
        start: datetime = EPOCH,
        max_events: int = 100_000,
    ) -> None:
        self.flows = {f"{f.namespace}.{f.id}": f for f in (flows or {}).values()}
        self.flows.setdefault(flow.uid, flow)
        self.outcome = outcome
        self.now = start
        self.max_events = max_events
        self.executions: dict[str, Execution] = {}
        self.flow_of: dict[str, Flow] = {}
        self.logs: list[Log] = []
        self.commands: list[Command] = []
        self.events = 0
        self._queue: deque[tuple[str, Event]] = deque()
        self._timers: list[tuple[datetime, int, str, Event]] = []
        self._counter = itertools.count()
        self.root_id = execution_id
        self._add(
            flow,
            new_execution(
                id=execution_id,
                namespace=flow.namespace,
                flow_id=flow.id,
                flow_revision=flow.revision,
                at=start,
                inputs=inputs,
            ),
        )

    def _add(self, flow: Flow, execution: Execution) -> None:
        self.executions[execution.id] = execution
        self.flow_of[execution.id] = flow
        self._queue.append((execution.id, ExecutionCreated(at=self.now)))

    @property
    def execution(self) -> Execution:
        return self.executions[self.root_id]

    def send(self, execution_id: str, event: Event) -> None:
        """Queue an outside event (a kill, a resume) for an execution."""
        self._queue.append((execution_id, event))

    def run(self) -> Execution:
        """Process events until nothing is left to do; return the root execution."""
        while self._queue or self._timers:
            if not self._queue:
                when, _, target, event = heapq.heappop(self._timers)
                self.now = max(self.now, when)
                self._queue.append((target, event))
                continue
            target, event = self._queue.popleft()
            self.step(target, event)
        return self.execution

    def step(self, execution_id: str, event: Event) -> list[Command]:
        self.events += 1
        if self.events > self.max_events:
            raise RuntimeError(f"simulation did not end within {self.max_events} events")
        execution = self.executions[execution_id]
        new, commands = apply(execution, self.flow_of[execution_id], event)
        self.executions[execution_id] = new
        self.commands.extend(commands)
        for command in commands:
            self._carry_out(execution_id, command)
        return commands

    def _carry_out(self, execution_id: str, command: Command) -> None:
        at = self.now
        if isinstance(command, RunTask):
            run = self.executions[execution_id].find(command.task_run_id)
            assert run is not None
            self._queue.append(
                (
                    execution_id,
                    WorkerResult(
                        at=at, task_run_id=run.id, attempt=command.attempt, state=StateType.RUNNING
                    ),
                )
            )
            state, outputs = self.outcome(run, command.attempt)
            self._queue.append(
                (
                    execution_id,
                    WorkerResult(
                        at=at,
                        task_run_id=run.id,
                        attempt=command.attempt,
                        state=state,
                        outputs=outputs,
                    ),
                )
            )
        elif isinstance(command, KillTask):
            self._queue.append(
                (
                    execution_id,
                    WorkerResult(
                        at=at,
                        task_run_id=command.task_run_id,
                        attempt=self._attempt(execution_id, command.task_run_id),
                        state=StateType.KILLED,
                    ),
                )
            )
        elif isinstance(command, WakeAt):
            heapq.heappush(
                self._timers,
                (
                    command.when,
                    next(self._counter),
                    execution_id,
                    DelayElapsed(
                        at=command.when,
                        delay=command.delay,
                        task_run_id=command.task_run_id,
                        attempt=command.attempt,
                    ),
                ),
            )
        elif isinstance(command, CreateSubflow):
            child_flow = self.flows.get(f"{command.namespace}.{command.flow_id}")
            if child_flow is None:
                self._queue.append(
                    (
                        execution_id,
                        SubflowEnded(
                            at=at,
                            task_run_id=command.task_run_id,
                            execution_id=command.execution_id,
                            state=StateType.FAILED,
                        ),
                    )
                )
                return
            child = new_execution(
                id=command.execution_id,
                namespace=child_flow.namespace,
                flow_id=child_flow.id,
                flow_revision=child_flow.revision,
                at=at,
                inputs=command.inputs,
                labels=command.labels,
                parent_id=execution_id if command.wait else None,
                parent_task_run_id=command.task_run_id if command.wait else None,
            )
            self._add(child_flow, child)
        elif isinstance(command, ExecutionEnded):
            if command.parent_id and command.parent_task_run_id:
                self._queue.append(
                    (
                        command.parent_id,
                        SubflowEnded(
                            at=at,
                            task_run_id=command.parent_task_run_id,
                            execution_id=command.execution_id,
                            state=command.state,
                            outputs=command.outputs,
                        ),
                    )
                )
        elif isinstance(command, CreateExecution):
            self._add(self.flow_of[execution_id], command.execution)
        elif isinstance(command, Log):
            self.logs.append(command)

    def _attempt(self, execution_id: str, task_run_id: str) -> int:
        run = self.executions[execution_id].find(task_run_id)
        return max(1, run.attempt_count) if run else 1


def simulate(flow: Flow, **kwargs: Any) -> Execution:
    """Run ``flow`` to its end in memory; see :class:`Simulation`."""
    return Simulation(flow, **kwargs).run()


__all__ = ["EPOCH", "Outcome", "OutcomeFn", "Simulation", "simulate", "succeed"]
