"""Executions driven through the real executor on the memory backend, with scripted
task outcomes and a simulated clock.

The engine's tests, its property tests and its benchmark use this instead of a
second interpreter of the engine's commands: every event is handled by
:class:`~services.executor.Executor` (claim, lock, apply, carry out, save, ack, in one
transaction), and only the workers and the clock are played. A scripted worker
answers each job at once with what ``outcome(task_run, attempt)`` says (a RUNNING
report, then the end); delayed events come due by moving the clock to them when
nothing else is left to do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import msgspec

from backends.memory import MemoryBackend
from backends.protocols import QueueMessage, Stores
from runtime.config import ExecutorConfig
from runtime.flow.events import Command, Event, Log, WorkerResult
from runtime.flow.execution import Execution, TaskRun, new_execution
from runtime.flow.model import Flow
from runtime.flow.states import StateType
from runtime.messages import (
    EXECUTOR_QUEUE,
    WORKER_QUEUE,
    WorkerJob,
    decode_event,
    decode_job,
    encode_event,
)
from services.executor import Executor, Outbox
from services.flows import FlowCache
from services.submit import send_event, submit

#: what a runnable task run's attempt ends with: a state, and outputs
Outcome = tuple[StateType, dict[str, Any] | None]
OutcomeFn = Callable[[TaskRun, int], Outcome]

EPOCH = datetime(2024, 1, 1, tzinfo=UTC)
#: the scripted worker's id, as results and leases name it
WORKER_ID = "dry-run-worker"


def succeed(run: TaskRun, attempt: int) -> Outcome:
    return StateType.SUCCESS, None


class RecordingExecutor(Executor):
    """The executor, also keeping every command it carries out (in order)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands: list[Command] = []
        #: errors the engine (or the carrying out) raised on an execution's events,
        #: which the executor logs and retries: a dry run raises them instead
        self.failures: list[Exception] = []

    def _give_up(self, execution_id: str, messages: list[QueueMessage], exc: Exception) -> bool:
        self.failures.append(exc)
        return super()._give_up(execution_id, messages, exc)

    async def carry_out(
        self,
        tx: Stores,
        flow: Flow,
        execution: Execution,
        commands: Sequence[Command],
        outbox: Outbox,
    ) -> None:
        self.commands.extend(commands)
        await super().carry_out(tx, flow, execution, commands, outbox)


class DryRun:
    """One execution (and the ones it starts) driven to the end.

    Synchronous methods (:meth:`run`, :meth:`step`) each run an event loop of their
    own; from async code use :meth:`run_async` / :meth:`step_async`.
    """

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
        batch: int = 100,
    ) -> None:
        self.now = start
        self.backend = MemoryBackend(clock=self._clock)
        self.cache = FlowCache(self.backend)
        self.flows = {f.uid: f for f in [*(flows or {}).values(), flow]}
        self.outcome = outcome
        self.max_events = max_events
        #: the executions as the executor last committed them
        self.executions: dict[str, Execution] = {}
        self.executor = RecordingExecutor(
            self.backend,
            self.cache,
            consumer_id="dry-run-executor",
            settings=ExecutorConfig(batch=batch),
            listeners=[self._changed],
        )
        self.root_id = execution_id
        self._root = new_execution(
            id=execution_id,
            namespace=flow.namespace,
            flow_id=flow.id,
            flow_revision=1,
            at=start,
            inputs=inputs,
        )
        self.executions[execution_id] = self._root
        self._deployed = False
        self._outbound: list[tuple[str, Event]] = []
        #: jobs the worker took and holds (see :meth:`hold_jobs`), by task run id
        self._held: dict[str, tuple[QueueMessage, WorkerJob]] = {}
        self._holding = False

    # -- what tests read --------------------------------------------------------------
    @property
    def execution(self) -> Execution:
        return self.executions[self.root_id]

    @property
    def commands(self) -> list[Command]:
        """Every command the executor carried out, in order."""
        return self.executor.commands

    @property
    def logs(self) -> list[Log]:
        return [c for c in self.executor.commands if isinstance(c, Log)]

    @property
    def events(self) -> int:
        """Events the executor handled."""
        return self.executor.processed

    # -- what tests do ----------------------------------------------------------------
    def send(self, execution_id: str, event: Event) -> None:
        """Queue an outside event (a kill, a resume) for an execution."""
        self._outbound.append((execution_id, event))

    def hold_jobs(self) -> None:
        """From now on the worker takes jobs and never ends them by itself (a task that
        runs forever); a kill request still ends them KILLED."""
        self._holding = True

    def run(self) -> Execution:
        """Handle events until nothing is left to do; return the root execution."""
        return asyncio.run(self.run_async())

    def step(self, execution_id: str, event: Event) -> list[Command]:
        """Queue ``event`` and let the executor handle one batch; its commands."""
        return asyncio.run(self.step_async(execution_id, event))

    async def run_async(self) -> Execution:
        await self.prepare()
        queues = self.backend.queues
        while True:
            if self.executor.processed > self.max_events:
                raise RuntimeError(f"dry run did not end within {self.max_events} events")
            if await self.executor.step():
                self.raise_failures()
                continue
            if await self._work():
                continue
            due = await queues.next_available(EXECUTOR_QUEUE)
            if due is None:
                return self.execution
            self.now = max(self.now, due)

    async def step_async(self, execution_id: str, event: Event) -> list[Command]:
        await self.prepare()
        await send_event(self.backend, execution_id, event)
        mark = len(self.executor.commands)
        await self.executor.step()
        self.raise_failures()
        return self.executor.commands[mark:]

    def raise_failures(self) -> None:
        """Raise the first error the executor met on an event (it would retry it)."""
        if self.executor.failures:
            raise self.executor.failures[0]

    async def sweep(self) -> tuple[list[tuple[str, Event]], list[WorkerJob]]:
        """Take (and ack) everything queued: the executor's events to itself (delayed
        ones included) and the workers' jobs. For drivers that deliver events in an
        order of their own choosing."""
        now, self.now = self.now, datetime(9000, 1, 1, tzinfo=UTC)
        try:
            events = await self._take(EXECUTOR_QUEUE)
            jobs = await self._take(WORKER_QUEUE)
        finally:
            self.now = now
        return (
            [(m.key or "", decode_event(m.payload)) for m in events],
            [decode_job(m.payload) for m in jobs],
        )

    # -- the played parts -------------------------------------------------------------
    def _clock(self) -> datetime:
        return self.now

    def _changed(self, execution: Execution) -> None:
        self.executions[execution.id] = execution

    async def prepare(self) -> None:
        """Deploy the flows and submit the execution (once); queue what was sent."""
        if not self._deployed:
            self._deployed = True
            for flow in self.flows.values():
                # The flows are given as objects: the store gets a placeholder source,
                # the executor's cache the flow itself under that revision.
                record = await self.backend.flows.deploy(
                    flow.namespace, flow.id, f"# {flow.uid}: given to a dry run as an object"
                )
                self.cache.remember(record, msgspec.structs.replace(flow, revision=1))
            await submit(self.backend, self._root)
        outbound, self._outbound = self._outbound, []
        for execution_id, event in outbound:
            await send_event(self.backend, execution_id, event)

    async def _work(self) -> bool:
        """Answer every waiting job (and the kill requests of held ones); True if any."""
        claimed = await self.backend.queues.claim(WORKER_QUEUE, WORKER_ID, 10_000, 3600.0)
        results: list[tuple[str | None, bytes]] = []
        done: list[int] = []
        for message in claimed:
            job = decode_job(message.payload)
            if self._holding:
                self._held[job.task_run_id] = (message, job)
                continue
            execution = await self.backend.executions.get(job.execution_id)
            run = execution.find(job.task_run_id) if execution is not None else None
            if run is None:
                done.append(message.id)
                continue
            state, outputs = self.outcome(run, job.attempt)
            for reported, out in ((StateType.RUNNING, None), (state, outputs)):
                results.append((job.execution_id, self._result(job, reported, out)))
            done.append(message.id)
        killed: set[str] = set()
        if self._held:
            killed = await self.backend.kills.requested(list(self._held))
            for run_id in sorted(killed):
                message, job = self._held.pop(run_id)
                results.append((job.execution_id, self._result(job, StateType.KILLED, None)))
                done.append(message.id)
        if results or done:
            async with self.backend.transaction() as tx:
                if results:
                    await tx.queues.publish(EXECUTOR_QUEUE, results)
                await tx.queues.ack(WORKER_QUEUE, done)
                if killed:
                    await tx.kills.clear(sorted(killed))
        return bool(claimed) or bool(killed)

    def _result(self, job: WorkerJob, state: StateType, outputs: Any) -> bytes:
        return encode_event(
            WorkerResult(
                at=self.now,
                task_run_id=job.task_run_id,
                attempt=job.attempt,
                state=state,
                outputs=outputs,
                worker_id=WORKER_ID,
            )
        )

    async def _take(self, queue: str) -> list[QueueMessage]:
        taken = await self.backend.queues.claim(queue, "dry-run-sweep", 100_000, 3600.0)
        if taken:
            await self.backend.queues.ack(queue, [m.id for m in taken])
        return taken


def dry_run(flow: Flow, **kwargs: Any) -> Execution:
    """Run ``flow`` to its end through the executor; see :class:`DryRun`."""
    return DryRun(flow, **kwargs).run()


__all__ = ["EPOCH", "DryRun", "Outcome", "OutcomeFn", "RecordingExecutor", "dry_run", "succeed"]
