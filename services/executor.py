"""The executor: consumes engine events, runs the engine, and carries out its commands.

It claims a batch from the executor queue, groups it by execution, and in ONE
transaction per batch: locks each execution, applies its events in order, saves
it, publishes the messages its commands produce (worker jobs, delayed wake-ups,
child executions, events for parents) and acks the events it consumed. A crash
anywhere before the commit leaves the events leased; they come back and the engine,
being idempotent, ends in the same place.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable, Sequence
from datetime import datetime

import msgspec

from backends.errors import BackendError, Transient
from backends.protocols import Backend, QueueMessage, ServiceInstance, Stores
from runtime.actors import ChildContext, ServiceState
from runtime.config import ExecutorConfig
from runtime.flow import budget
from runtime.flow.context import variables
from runtime.flow.engine import EngineError, EventRefused, apply, task_index
from runtime.flow.events import (
    Command,
    CreateExecution,
    CreateSubflow,
    DelayElapsed,
    ExecutionCreated,
    ExecutionEnded,
    Kill,
    KillExecution,
    KillTask,
    Log,
    RunTask,
    SubflowEnded,
    WakeAt,
)
from runtime.flow.execution import Execution, new_execution
from runtime.flow.inputs import InputError, resolve_inputs
from runtime.flow.model import Flow
from runtime.flow.states import StateType
from runtime.log import get_logger
from runtime.messages import (
    EXECUTOR_QUEUE,
    WORKER_QUEUE,
    LogEntry,
    WorkerJob,
    decode_event,
    encode_event,
    encode_job,
)
from services import metrics, poison
from services.common import host, sleep_or_stop, wait_or_stop
from services.flows import FlowCache, FlowNotFoundError
from services.submit import send_event, submit
from services.tracing import ExecutionTracer
from services.triggers import flow_trigger_executions, flows_with_flow_triggers

log = get_logger(__name__)

#: a poison event (one the engine keeps failing on) quarantines its execution after
#: this many tries (services/poison.py)
MAX_EVENT_ATTEMPTS = poison.MAX_EVENT_ATTEMPTS


class Executor:
    """One executor; run it as a supervised child with :meth:`run`."""

    def __init__(
        self,
        backend: Backend,
        flows: FlowCache,
        *,
        consumer_id: str,
        settings: ExecutorConfig | None = None,
        listeners: list[Callable[[Execution], None]] | None = None,
        tracer: ExecutionTracer | None = None,
    ) -> None:
        self.backend = backend
        self.flows = flows
        self.consumer_id = consumer_id
        #: its id in the service registry (the instance page lists it)
        self.id = consumer_id
        self.settings = settings or ExecutorConfig()
        self.processed = 0
        self._started = backend.clock()
        #: when the earliest delayed event was due, as of the last empty claim
        self._next_due: datetime | None = None
        #: called with each execution a committed batch changed (in-process observers:
        #: `flow test` progress, live API streams); must not block
        self.listeners = listeners if listeners is not None else []
        #: given each ended execution once its batch committed (services/tracing.py)
        self.tracer = tracer
        #: where its events come from: the batch and its unit of work together
        self.inbox = backend.inbox(
            EXECUTOR_QUEUE,
            consumer_id,
            lease_seconds=self.settings.lease_seconds,
            prefetch_executions=True,
        )

    async def run(self, ctx: ChildContext) -> None:
        stopping = asyncio.Event()
        ctx.on_stop_requested(stopping.set)
        beating = asyncio.create_task(self._heartbeats(stopping), name=f"{self.id}.heartbeat")
        ctx.ready()
        log.info("executor.started", consumer=self.consumer_id)
        try:
            await self._loop(stopping)
        finally:
            beating.cancel()
            await asyncio.gather(beating, return_exceptions=True)
        with contextlib.suppress(BackendError):
            await asyncio.shield(self._heartbeat(ServiceState.TERMINATED_GRACEFULLY))
        log.info("executor.stopped", consumer=self.consumer_id, processed=self.processed)

    async def _loop(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                handled = await self.step()
            except Transient as exc:
                log.warning("executor.backend_unavailable", error=str(exc))
                await sleep_or_stop(stopping, 1.0)
                continue
            except BackendError as exc:
                log.error("executor.batch_failed", error=str(exc))
                await sleep_or_stop(stopping, 1.0)
                continue
            if handled < self.settings.batch:
                # A partial batch took everything available: rather than claim again
                # (and most likely find nothing), wait; a publish made meanwhile has
                # latched the wake-up, so the wait then returns at once.
                if handled == 0:
                    # only an empty claim asks when the next delayed event is due
                    self._next_due = await self.inbox.next_available()
                await wait_or_stop(stopping, self.inbox.wait(self._idle_wait()))

    async def _heartbeats(self, stopping: asyncio.Event) -> None:
        """Beat beside the loop, not in it: a heartbeat's write never delays a batch.
        A failed beat is retried at the next one (the loop reports the backend's
        absence itself)."""
        while not stopping.is_set():
            try:
                await self._heartbeat(ServiceState.RUNNING)
            except BackendError as exc:
                log.warning("executor.heartbeat_failed", error=str(exc))
            except Exception:
                # a bug here must not end the beats for good without a word
                log.exception("executor.heartbeat_bug")
            await sleep_or_stop(stopping, self.settings.heartbeat_seconds)

    async def _heartbeat(self, state: ServiceState) -> None:
        await self.backend.services.heartbeat(
            ServiceInstance(
                id=self.id,
                kind="executor",
                state=state.value,
                host=host(),
                pid=os.getpid(),
                started=self._started,
                heartbeat=self.backend.clock(),
                info={"processed": self.processed, "batch": self.settings.batch},
            )
        )

    def _idle_wait(self) -> float:
        """How long to wait for a wake-up: until the next delayed event known to be due
        (a stale date only costs an early, empty claim), at most ``idle_wait_seconds``.
        Delayed events published meanwhile wake the wait themselves."""
        if self._next_due is None:
            return self.settings.idle_wait_seconds
        wait = (self._next_due - self.backend.clock()).total_seconds()
        return max(0.0, min(wait, self.settings.idle_wait_seconds))

    async def step(self) -> int:
        """Handle one batch of the inbox in its unit of work; returns its size.

        The inbox claims inside the unit of work, so a crash or a database error rolls
        the claim back with everything else: the events are at once claimable again,
        with no lease to wait out.
        """
        changed: list[Execution] = []
        done = 0
        began = time.perf_counter()
        async with self.inbox.batch(self.settings.batch) as batch:
            if not batch.messages:
                return 0
            tx = batch.stores
            groups: dict[str, list[QueueMessage]] = {}
            for message in batch.messages:
                groups.setdefault(message.key or "", []).append(message)
            poisoned: list[tuple[str, Exception]] = []
            outbox = Outbox()
            for execution_id, messages in groups.items():
                try:
                    updated = await self._process_execution(tx, execution_id, messages, outbox)
                except BackendError:
                    # A failed statement may have aborted the transaction (PostgreSQL
                    # does): roll the whole batch back; its events come back.
                    raise
                except Exception as exc:
                    if self._give_up(execution_id, messages, exc):
                        done += len(messages)  # acked: dropped for good
                        if not isinstance(exc, EventRefused):
                            # a sound execution refused a stale or wrong event: it
                            # goes on; anything else is poison, and ends it
                            poisoned.append((execution_id, exc))
                    else:
                        batch.retry(messages, delay_seconds=1.0)
                    continue
                done += len(messages)
                if updated is not None:
                    changed.append(updated)
            for execution_id, error in poisoned:
                ended = await self._quarantine(tx, execution_id, error, outbox)
                if ended is not None:
                    changed.append(ended)
            await outbox.send(tx)
        # committed: only now is what the batch did counted
        metrics.EXECUTOR_PASS.observe(time.perf_counter() - began)
        metrics.EXECUTOR_BATCH_SIZE.observe(len(batch.messages))
        for before, after, flow in outbox.passes:
            metrics.observe_pass(before, after, flow)
            if self.tracer is not None and after.state.current.terminated:
                self._trace(after, flow)
        self.processed += done
        for execution in changed:
            for listener in self.listeners:
                try:
                    listener(execution)
                except Exception:
                    log.exception("executor.listener_failed")
        return len(batch.messages)

    def _trace(self, execution: Execution, flow: Flow) -> None:
        assert self.tracer is not None
        try:
            types = {task_id: task.type for task_id, task in task_index(flow).items()}
            self.tracer(execution, types)
        except Exception:
            # a trace is an extra: its failure costs the trace, nothing else
            log.exception("executor.trace_failed", execution=execution.id)

    def _give_up(self, execution_id: str, messages: list[QueueMessage], exc: Exception) -> bool:
        """An event the engine cannot apply is retried a few times, then dropped (True)
        and its execution quarantined by the caller."""
        spent = max(m.attempts for m in messages) + 1 >= MAX_EVENT_ATTEMPTS
        log.error(
            "executor.event_failed",
            execution=execution_id,
            error=str(exc),
            dropped=spent,
            exc_info=exc if not isinstance(exc, (EngineError, FlowNotFoundError)) else None,
        )
        return spent

    async def _quarantine(
        self, tx: Stores, execution_id: str, exc: Exception, outbox: Outbox
    ) -> Execution | None:
        """End the execution of a poison event FAILED, with the reason in its logs."""
        mark = outbox.mark()
        try:
            execution = await tx.executions.get_for_update(execution_id)
            verdict = (
                None
                if execution is None
                else poison.quarantined(
                    execution, f"{type(exc).__name__}: {exc}", self.backend.clock()
                )
            )
            if verdict is None:
                return None
            ended, commands = verdict
            try:
                flow = await self.flows.get(ended.namespace, ended.flow_id, ended.flow_revision)
            except FlowNotFoundError:
                # without its flow, only the log goes out (parents and triggers need it)
                outbox.logs.extend(_log_entry(ended, c) for c in commands if isinstance(c, Log))
            else:
                await self.carry_out(tx, flow, ended, commands, outbox)
            await tx.executions.save(ended)
        except BackendError:
            raise
        except Exception:
            outbox.rollback_to(mark)
            log.exception("executor.quarantine_failed", execution=execution_id)
            return None
        log.error("executor.execution_quarantined", execution=execution_id, error=str(exc))
        return ended

    async def _process_execution(
        self, tx: Stores, execution_id: str, messages: list[QueueMessage], outbox: Outbox
    ) -> Execution | None:
        """Apply the events; returns the execution when it changed."""
        execution = await tx.executions.get_for_update(execution_id)
        if execution is None:
            log.warning("executor.unknown_execution", execution=execution_id, events=len(messages))
            return None
        flow = await self.flows.get(execution.namespace, execution.flow_id, execution.flow_revision)
        original = execution
        commands: list[Command] = []
        for message in messages:
            event = decode_event(message.payload)
            if isinstance(event, ExecutionCreated) and flow.concurrency is not None:
                running = await tx.executions.count_running(execution.namespace, execution.flow_id)
                running -= 1 if _holds_slot(execution) else 0
                event = msgspec.structs.replace(event, running=running)
            # a flow's expressions may need more than the loop can give: off it then
            applied: tuple[Execution, list[Command]] = await budget.evaluate(
                apply, execution, flow, event
            )
            execution, produced = applied
            commands.extend(produced)
        mark = outbox.mark()
        try:
            await self.carry_out(tx, flow, execution, commands, outbox)
        except BaseException:
            # nothing of this execution's pass goes out (its events are retried)
            outbox.rollback_to(mark)
            raise
        if execution is not original:
            await tx.executions.save(execution)
            outbox.passes.append((original, execution, flow))
        return execution if execution is not original else None

    async def carry_out(
        self,
        tx: Stores,
        flow: Flow,
        execution: Execution,
        commands: Sequence[Command],
        outbox: Outbox,
    ) -> None:
        """Turn commands into messages and writes, inside the batch's transaction; the
        messages and log lines wait in ``outbox`` for the end of the batch."""
        events = outbox.events
        for command in commands:
            if isinstance(command, RunTask):
                outbox.jobs.append((None, encode_job(self._job(flow, execution, command))))
            elif isinstance(command, KillTask):
                await tx.kills.request([command.task_run_id])
            elif isinstance(command, WakeAt):
                event = DelayElapsed(
                    at=command.when,
                    delay=command.delay,
                    task_run_id=command.task_run_id,
                    attempt=command.attempt,
                )
                await tx.queues.publish(
                    EXECUTOR_QUEUE, [(execution.id, encode_event(event))], available_at=command.when
                )
            elif isinstance(command, CreateSubflow):
                events.extend(await self._create_subflow(tx, execution, command, outbox.logs))
            elif isinstance(command, KillExecution):
                events.append((command.execution_id, encode_event(Kill(at=command.at))))
            elif isinstance(command, ExecutionEnded):
                events.extend(await self._on_ended(tx, flow, execution, command, outbox))
            elif isinstance(command, CreateExecution):
                await tx.executions.save(command.execution)
                events.append((command.execution.id, encode_event(ExecutionCreated(at=command.at))))
            elif isinstance(command, Log):
                outbox.logs.append(_log_entry(execution, command))

    def _job(self, flow: Flow, execution: Execution, command: RunTask) -> WorkerJob:
        run = execution.find(command.task_run_id)
        task = task_index(flow).get(command.task_id) if run is not None else None
        return WorkerJob(
            execution_id=execution.id,
            task_run_id=command.task_run_id,
            task_id=command.task_id,
            attempt=command.attempt,
            namespace=execution.namespace,
            flow_id=execution.flow_id,
            flow_revision=execution.flow_revision or 1,
            variables=variables(flow, execution, task=task, task_run=run),
        )

    async def _create_subflow(
        self, tx: Stores, parent: Execution, command: CreateSubflow, logs: list[LogEntry]
    ) -> list[tuple[str | None, bytes]]:
        def failed(message: str) -> list[tuple[str | None, bytes]]:
            logs.append(
                _log_entry(
                    parent,
                    Log(
                        at=command.at,
                        level="ERROR",
                        message=message,
                        task_run_id=command.task_run_id,
                    ),
                )
            )
            ended = SubflowEnded(
                at=command.at,
                task_run_id=command.task_run_id,
                execution_id=command.execution_id,
                state=StateType.FAILED,
            )
            return [(parent.id, encode_event(ended))]

        if await tx.executions.get(command.execution_id) is not None:
            return []  # created by an earlier delivery of the same command
        try:
            child_flow = await self.flows.get(command.namespace, command.flow_id, command.revision)
        except FlowNotFoundError as exc:
            return failed(f"subflow: {exc}")
        try:
            inputs = resolve_inputs(child_flow, command.inputs, now=command.at)
        except InputError as exc:
            return failed(f"subflow {child_flow.uid}: {exc}")
        child = new_execution(
            id=command.execution_id,
            namespace=child_flow.namespace,
            flow_id=child_flow.id,
            flow_revision=child_flow.revision,
            at=command.at,
            inputs=inputs,
            labels=command.labels,
            parent_id=parent.id if command.wait else None,
            parent_task_run_id=command.task_run_id if command.wait else None,
        )
        await tx.executions.save(child)
        return [(child.id, encode_event(ExecutionCreated(at=command.at)))]

    async def _on_ended(
        self,
        tx: Stores,
        flow: Flow,
        execution: Execution,
        command: ExecutionEnded,
        outbox: Outbox,
    ) -> list[tuple[str | None, bytes]]:
        out: list[tuple[str | None, bytes]] = []
        if command.parent_id and command.parent_task_run_id:
            ended = SubflowEnded(
                at=command.at,
                task_run_id=command.parent_task_run_id,
                execution_id=execution.id,
                state=command.state,
                outputs=command.outputs,
                task_outputs=command.task_outputs,
            )
            out.append((command.parent_id, encode_event(ended)))
        if flow.concurrency is not None:
            queued = await tx.executions.oldest_queued(execution.namespace, execution.flow_id)
            if queued is not None:
                out.append((queued, encode_event(ExecutionCreated(at=command.at))))
        if outbox.trigger_flows is None:
            # once per batch: the deployed flows with Flow triggers
            outbox.trigger_flows = await flows_with_flow_triggers(tx, self.flows)
        triggered_by = flow_trigger_executions(tx, outbox.trigger_flows, execution, command)
        for triggered in await triggered_by:
            await tx.executions.save(triggered)
            out.append((triggered.id, encode_event(ExecutionCreated(at=command.at))))
        return out


class Outbox:
    """What one batch's executions send, written together at the end of the batch:
    one publish per queue and one log write, whatever the batch's size."""

    __slots__ = ("events", "jobs", "logs", "passes", "trigger_flows")

    def __init__(self) -> None:
        self.jobs: list[tuple[str | None, bytes]] = []
        self.events: list[tuple[str | None, bytes]] = []
        self.logs: list[LogEntry] = []
        #: the flows with Flow triggers, read at the batch's first execution end
        self.trigger_flows: list[Flow] | None = None
        #: each execution's state before and after its pass (metrics, once committed)
        self.passes: list[tuple[Execution, Execution, Flow]] = []

    def mark(self) -> tuple[int, int, int]:
        return len(self.jobs), len(self.events), len(self.logs)

    def rollback_to(self, mark: tuple[int, int, int]) -> None:
        """Forget what was added since ``mark``."""
        del self.jobs[mark[0] :], self.events[mark[1] :], self.logs[mark[2] :]

    async def send(self, tx: Stores) -> None:
        if self.jobs:
            await tx.queues.publish(WORKER_QUEUE, self.jobs)
        if self.events:
            await tx.queues.publish(EXECUTOR_QUEUE, self.events)
        if self.logs:
            await tx.logs.append(self.logs)


def _holds_slot(execution: Execution) -> bool:
    state = execution.state.current
    return not state.terminated and state not in (StateType.CREATED, StateType.QUEUED)


def _log_entry(execution: Execution, command: Log) -> LogEntry:
    return LogEntry(
        execution_id=execution.id,
        namespace=execution.namespace,
        flow_id=execution.flow_id,
        timestamp=command.at,
        level=command.level,
        message=command.message,
        task_run_id=command.task_run_id,
        task_id=command.task_id,
    )


# the entry points other code imported from here; they live in services.submit
__all__ = ["Executor", "Outbox", "send_event", "submit"]
