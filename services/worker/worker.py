"""The worker: receives jobs from its inbox, runs runnable tasks with bounded
concurrency, reports.

Each job is one attempt of one task run, and one :class:`RunningJob` record while it
runs (its message, its task, its run context, whether it was killed, whether it has
begun). The worker tells the executor when a job starts (RUNNING, for longer ones)
and how it ended, the final result committing together with the job's ack (see
:mod:`services.worker.reports`). Jobs are leased to this worker's id for as long as it
lives; the liveness actor hands the jobs of a worker that stopped heartbeating to
others.

Kills arrive through the kill store, checked as a job starts and every
``kill_poll_seconds`` while it runs. A graceful stop stops receiving, lets running
tasks finish within ``grace_seconds``, then cancels them and gives their jobs back
(nothing accepted is lost; the next worker runs them again). A side task that dies
(heartbeat, kill poll, log flush, a report that can never be written) fails the
worker, for its supervisor to start a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import traceback
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any

from backends.errors import Transient
from backends.protocols import Backend, QueueMessage, ServiceInstance, Storage
from runtime.actors import ChildContext, ProcessPool, ServiceState, SideActor
from runtime.config import WorkerConfig
from runtime.flow import budgeted, dynamic, template
from runtime.flow.engine import task_index
from runtime.flow.events import WorkerResult
from runtime.flow.execution import TaskMetric
from runtime.flow.model import RunnableTask, Task
from runtime.flow.states import StateType
from runtime.log import get_logger
from runtime.messages import EXECUTOR_QUEUE, WORKER_QUEUE, WorkerJob, decode_job, encode_event
from runtime.tasks.context import TaskFailure
from services import metrics
from services.common import host, sleep_or_stop, wait_or_stop
from services.flows import FlowCache, FlowNotFoundError
from services.poison import requeued_too_often
from services.worker.context import LogBuffer, TaskLogger, WorkerRunContext, call_kill_callbacks
from services.worker.reports import (
    Report,
    send_until_written,
    start_report_writer,
    write_reports,
)

log = get_logger("services.worker")


class RunningJob:
    """One job while this worker has it: everything kept about it, in one place."""

    __slots__ = ("began", "ctx", "job", "killed", "message", "task")

    #: the job's run, set as it is started
    task: asyncio.Task[None]

    def __init__(self, message: QueueMessage, job: WorkerJob) -> None:
        self.message = message
        self.job = job
        #: set once the task is about to run (tests, kills reach it through this)
        self.ctx: WorkerRunContext | None = None
        #: a kill request cancelled it: it ends KILLED, not given back
        self.killed = False
        #: its coroutine started: it settles itself; one cancelled before is settled
        #: from outside (see Worker._finished)
        self.began = False


class Worker:
    """One worker; run it as a supervised child with :meth:`run` (once: a restart
    builds a new one)."""

    def __init__(
        self,
        backend: Backend,
        storage: Storage,
        flows: FlowCache,
        *,
        worker_id: str,
        settings: WorkerConfig | None = None,
        secrets: dict[str, str] | None = None,
    ) -> None:
        self.backend = backend
        self.storage = storage
        self.flows = flows
        self.id = worker_id
        self.settings = settings or WorkerConfig()
        self.secrets = secrets or {}
        self.inbox = backend.inbox(
            WORKER_QUEUE, worker_id, lease_seconds=self.settings.lease_seconds
        )
        #: the jobs this worker has, by task run id
        self.running: dict[str, RunningJob] = {}
        #: tasks settling jobs cancelled before they began
        self._settling: set[asyncio.Task[None]] = set()
        self._logs = LogBuffer()
        #: the report writer, an actor on a bounded mailbox: started with the worker
        #: (or by the first report, for a worker driven without ``run``)
        self._reports: SideActor[Report] | None = None
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        #: set with the error when a job's own bookkeeping (its report, its give-back)
        #: fails in a way no retry covers: the worker then fails and is restarted
        self._broken: asyncio.Future[None] | None = None
        self._started = datetime.now(UTC)
        self.pool = ProcessPool(self.settings.process_pool, name=f"{worker_id}-pool")
        self.completed = 0

    # -- the child's life -------------------------------------------------------
    async def run(self, ctx: ChildContext) -> None:
        ctx.on_stop_requested(self._stopping.set)
        broken: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._broken = broken
        await self.pool.start()
        await self._heartbeat(ServiceState.RUNNING)
        metrics.watch_worker(self)
        reports = self._report_writer()
        side = [
            asyncio.create_task(self._heartbeats(), name=f"{self.id}.heartbeat"),
            asyncio.create_task(self._watch_kills(), name=f"{self.id}.kills"),
            asyncio.create_task(self._flush_logs(), name=f"{self.id}.logs"),
        ]
        ctx.ready()
        log.info("worker.started", worker=self.id, concurrency=self.settings.concurrency)
        receive = asyncio.create_task(self._receive_loop(), name=f"{self.id}.receive")
        watched: list[asyncio.Future[None]] = [receive, *side, reports.task, broken]
        try:
            # A side task (heartbeat, kill poll, log flush, report write) that dies fails
            # the worker, loudly: its supervisor restarts a fresh one.
            done, _ = await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not receive and task.exception() is not None:
                    raise RuntimeError(
                        f"worker {self.id}: side task {_name(task)} died: {task.exception()!r}"
                    ) from task.exception()
            await receive
            await self._drain()
            if broken.done():
                broken.result()
        finally:
            # An immediate stop (cancellation) ends the receive loop and running jobs
            # too; each job gives itself back to the queue as it is cancelled.
            self._stopping.set()
            broken.cancel()  # a failure from here on is the stop's own business
            receive.cancel()
            await asyncio.gather(receive, return_exceptions=True)
            jobs = [record.task for record in self.running.values()]
            for task in [*side, *jobs]:
                task.cancel()
            await asyncio.gather(*side, *jobs, return_exceptions=True)
            if self._settling:
                # bounded: with the database away, liveness hands the jobs on instead
                await asyncio.wait(list(self._settling), timeout=5.0)
            await reports.stop(within=5.0)
            await asyncio.shield(self._final_flush())
            metrics.forget_worker(self)
            await self.pool.stop()
            # Said, not left for liveness to infer: `execute --wait` and the instance
            # view see at once that this worker runs nothing any more.
            with contextlib.suppress(Transient):
                await asyncio.shield(self._heartbeat(ServiceState.TERMINATED_GRACEFULLY))
            log.info("worker.stopped", worker=self.id, completed=self.completed)

    async def _receive_loop(self) -> None:
        inbox = self.inbox
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self.running)
            if free <= 0:
                self._slot_freed.clear()
                await wait_or_stop(self._stopping, self._slot_freed.wait())
                continue
            try:
                batch = await inbox.receive(free)
            except Transient as exc:
                log.warning("worker.backend_unavailable", error=str(exc))
                await sleep_or_stop(self._stopping, 1.0)
                continue
            if not batch:
                await wait_or_stop(self._stopping, inbox.wait(1.0))
                continue
            jobs = [(message, decode_job(message.payload)) for message in batch]
            for message, job in jobs:
                self._start(message, job)
            # Kill requests for jobs that waited in the queue: checked once they have
            # started rather than before (a round trip less on every job's way; a
            # killed job is cancelled as soon as the answer comes, the way a kill
            # requested while it runs is).
            await self._kill_requested([job.task_run_id for _, job in jobs])
            if len(batch) < free:
                # It took everything available: wait for a publish (one made since the
                # claim has latched the wake-up) instead of claiming again for nothing.
                await wait_or_stop(self._stopping, inbox.wait(1.0))

    def _start(self, message: QueueMessage, job: WorkerJob) -> None:
        record = RunningJob(message, job)
        record.task = asyncio.create_task(self._run_job(record), name=f"job.{job.task_run_id}")
        self.running[job.task_run_id] = record
        record.task.add_done_callback(lambda done: self._finished(record))

    def _finished(self, record: RunningJob) -> None:
        if self.running.get(record.job.task_run_id) is record:
            del self.running[record.job.task_run_id]
        self._slot_freed.set()
        task = record.task
        error = None if task.cancelled() else task.exception()
        killed, began = record.killed, record.began
        if error is not None:
            # Tasks' own errors are caught in _execute: this is the worker's bookkeeping
            # (a report the database refused for good). The job goes back to the queue
            # and the worker fails.
            if self._broken is not None and not self._broken.done():
                self._broken.set_exception(
                    RuntimeError(
                        f"worker {self.id}: job {record.job.task_run_id} could not be "
                        f"settled: {error!r}"
                    )
                )
            began, killed = False, False
        if (task.cancelled() or error is not None) and not began:
            # Cancelled before it ran a line (a stop, or a kill, right after the claim):
            # its own handlers never ran, so the job is settled from here.
            self._settle(self._settle_unstarted(record, killed))

    def _settle(self, settling: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run a job's settlement as a task the worker owns: a second cancellation of
        the job leaves it running, and the worker's stop waits for it (bounded)."""
        task = asyncio.create_task(settling, name=f"{self.id}.settle")
        self._settling.add(task)
        task.add_done_callback(self._settling.discard)
        return task

    async def _settle_unstarted(self, record: RunningJob, killed: bool) -> None:
        if killed:
            await self._finish(record.message, record.job, StateType.KILLED, None)
        else:
            await self._give_back(record.message)

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then give the rest back."""
        tasks = [record.task for record in self.running.values()]
        if not tasks:
            return
        log.info("worker.draining", worker=self.id, running=len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=self.settings.grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # -- one job ----------------------------------------------------------------
    async def _run_job(self, record: RunningJob) -> None:
        message, job = record.message, record.job
        record.began = True
        poisoned = requeued_too_often(message.attempts, self.settings.max_requeues)
        if poisoned is not None:
            self._logger(job).error(poisoned)
            await self._finish(message, job, StateType.FAILED, None)
            return
        try:
            task = await self._task(job)
        except FlowNotFoundError as exc:
            self._logger(job).error(str(exc))
            await self._finish(message, job, StateType.FAILED, None)
            return
        except asyncio.CancelledError:
            await asyncio.shield(self._settle(self._cancelled(record, None)))
            raise
        started = self.backend.clock()
        # A short task reports only its end (with its start date); a longer one also
        # says it is RUNNING, so people watching see it.
        reporter = asyncio.create_task(
            self._report_running(job, started), name=f"job.{job.task_run_id}.running"
        )
        ctx = WorkerRunContext(
            job,
            workdir_parent=self.settings.workdir,
            logger=self._logger(job),
            storage=self.storage,
            backend=self.backend,
            pool=self.pool,
            secrets=self.secrets,
        )
        record.ctx = ctx
        try:
            state, outputs = await self._execute(task, ctx)
        except asyncio.CancelledError:
            await asyncio.shield(self._settle(self._cancelled(record, started)))
            raise
        finally:
            reporter.cancel()
            await ctx.cleanup()
        await self._finish(message, job, state, outputs, started, metrics=tuple(ctx.metrics))
        self.completed += 1

    async def _cancelled(self, record: RunningJob, started: datetime | None) -> None:
        """A job cancelled by a kill ends KILLED; by a stop past its grace period, it
        goes back to the queue for another worker."""
        if record.killed:
            await self._finish(record.message, record.job, StateType.KILLED, None, started)
        else:
            await self._give_back(record.message)

    async def _report_running(self, job: WorkerJob, started: datetime) -> None:
        await asyncio.sleep(self.settings.running_report_seconds)
        # On failure no harm done: the final result carries the start date anyway.
        with contextlib.suppress(Transient):
            await self.backend.queues.publish(
                EXECUTOR_QUEUE,
                [(job.execution_id, self._result(job, StateType.RUNNING, None, started))],
            )

    async def _execute(
        self, task: Task, ctx: WorkerRunContext
    ) -> tuple[StateType, dict[str, Any] | None]:
        if not isinstance(task, RunnableTask):
            ctx.log.error(f"task {task.id!r} of type {task.type} cannot run on a worker")
            return StateType.FAILED, None
        try:
            runnable = await dynamic.resolve_async(task, ctx.render)
        except (dynamic.DynamicPropertyError, template.TemplateError) as exc:
            ctx.log.error(str(exc))
            return StateType.FAILED, None
        timeout = runnable.timeout.total_seconds() if runnable.timeout is not None else None
        try:
            async with asyncio.timeout(timeout):
                outputs = await runnable.run(ctx)
        except TaskFailure as exc:
            ctx.log.error(str(exc))
            return StateType.FAILED, exc.outputs
        except TimeoutError:
            call_kill_callbacks(ctx)
            ctx.log.error(f"task {task.id!r} timed out after {runnable.timeout}: killed")
            return StateType.FAILED, None
        except template.TemplateError as exc:
            prop = budgeted.property_of(task, exc.template)
            ctx.log.error(f"task {task.id!r}{f', property {prop!r}' if prop else ''}: {exc}")
            return StateType.FAILED, None
        except NotImplementedError:
            ctx.log.error(f"task type {task.type} cannot run here yet")
            return StateType.FAILED, None
        except Exception as exc:
            ctx.log.error(
                f"task {task.id!r} failed: {exc!r}\n{''.join(traceback.format_exception(exc))}"
            )
            return StateType.FAILED, None
        if ctx.warning is not None:
            ctx.log.warning(ctx.warning)
            return StateType.WARNING, outputs
        return StateType.SUCCESS, outputs

    async def _task(self, job: WorkerJob) -> Task:
        flow = await self.flows.get(job.namespace, job.flow_id, job.flow_revision)
        task = task_index(flow).get(job.task_id)
        if task is None:
            raise FlowNotFoundError(
                f"task {job.task_id!r} is not in {job.namespace}.{job.flow_id} "
                f"revision {job.flow_revision}"
            )
        return task

    def _logger(self, job: WorkerJob) -> TaskLogger:
        return TaskLogger(job, self._logs, self.backend.clock)

    def _result(
        self,
        job: WorkerJob,
        state: StateType,
        outputs: Any,
        started: datetime | None = None,
        metrics: tuple[TaskMetric, ...] = (),
    ) -> bytes:
        return encode_event(
            WorkerResult(
                at=self.backend.clock(),
                task_run_id=job.task_run_id,
                attempt=job.attempt,
                state=state,
                outputs=outputs,
                worker_id=self.id,
                started=started,
                metrics=metrics,
            )
        )

    async def _finish(
        self,
        message: QueueMessage,
        job: WorkerJob,
        state: StateType,
        outputs: Any,
        started: datetime | None = None,
        *,
        metrics: tuple[TaskMetric, ...] = (),
    ) -> None:
        """Publish the final result and ack the job, together (with the results of
        the jobs that end meanwhile: see :class:`~services.worker.reports.ReportWriter`)."""
        result = self._result(job, state, outputs, started, metrics)
        report = Report(message, job, result, state is StateType.KILLED)
        await send_until_written(self._report_writer().ref, report)

    def _report_writer(self) -> SideActor[Report]:
        if self._reports is None:
            self._reports = start_report_writer(
                lambda reports: write_reports(self.inbox, self._logs, reports),
                name=f"{self.id}.reports",
                concurrency=self.settings.concurrency,
            )
        return self._reports

    async def _give_back(self, message: QueueMessage) -> None:
        try:
            await self.inbox.give_back([message])
        except Transient:
            log.warning("worker.give_back_failed", message=message.id)

    # -- side loops ---------------------------------------------------------------
    async def _heartbeat(self, state: ServiceState) -> None:
        now = self.backend.clock()
        await self.backend.services.heartbeat(
            ServiceInstance(
                id=self.id,
                kind="worker",
                state=state.value,
                host=host(),
                pid=os.getpid(),
                started=self._started,
                heartbeat=now,
                info={"running": len(self.running), "concurrency": self.settings.concurrency},
            )
        )

    def slots(self) -> tuple[int, int]:
        """Busy and free task slots (``runtime_worker_slots``)."""
        busy = len(self.running)
        return busy, max(0, self.settings.concurrency - busy)

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_seconds)
            try:
                await self._heartbeat(
                    ServiceState.TERMINATING if self._stopping.is_set() else ServiceState.RUNNING
                )
            except Transient as exc:
                log.warning("worker.heartbeat_failed", error=str(exc))

    async def _watch_kills(self) -> None:
        while True:
            await asyncio.sleep(self.settings.kill_poll_seconds)
            await self._kill_requested(list(self.running))

    async def _kill_requested(self, task_run_ids: list[str]) -> None:
        """Cancel the running jobs among ``task_run_ids`` that have a kill request."""
        if not task_run_ids:
            return
        try:
            killed = await self.backend.kills.requested(task_run_ids)
        except Transient:
            return  # the next poll asks again
        for run_id in killed:
            record = self.running.get(run_id)
            if record is None or record.killed:
                continue
            record.killed = True
            if record.ctx is not None:
                record.ctx.log.warning("killed on request")
                call_kill_callbacks(record.ctx)
            record.task.cancel()

    async def _flush_logs(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log_flush_seconds)
            await self._final_flush()

    async def _final_flush(self) -> None:
        entries = self._logs.take()
        if not entries:
            return
        try:
            await self.backend.logs.append(entries)
        except Transient as exc:
            log.warning("worker.logs_retry", error=str(exc), count=len(entries))
            self._logs.entries[:0] = entries


def _name(task: asyncio.Future[None]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else "job settlement"


__all__ = ["RunningJob", "Worker"]
