"""The worker: claims jobs, runs runnable tasks with bounded concurrency, reports.

Each job is one attempt of one task run. The worker tells the executor when it
starts (RUNNING) and how it ended, publishing the final result and acking the job
in one transaction, so a crash never leaves a result without its job acked or the
other way round (jobs ending while such a write is in flight share the next one).
Jobs are leased to this worker's id for as long as it lives; the liveness actor
hands the jobs of a worker that stopped heartbeating to others.

Kills arrive through the kill store, checked as a job starts and every
``kill_poll_seconds`` while it runs. A graceful stop stops claiming, lets running
tasks finish within ``grace_seconds``, then cancels them and gives their jobs back
to the queue (nothing accepted is lost; the next worker runs them again).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import os
import shutil
import tempfile
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from backends.errors import Transient
from backends.protocols import Backend, QueueMessage, ServiceInstance, Storage
from runtime.actors import ChildContext, ProcessPool, ServiceState
from runtime.config import WorkerConfig
from runtime.flow import dynamic, template
from runtime.flow.engine import task_index
from runtime.flow.events import WorkerResult
from runtime.flow.model import RunnableTask, Task
from runtime.flow.states import StateType
from runtime.log import get_logger
from runtime.messages import (
    EXECUTOR_QUEUE,
    WORKER_QUEUE,
    LogEntry,
    WorkerJob,
    decode_job,
    encode_event,
)
from runtime.tasks.context import TaskFailure
from runtime.tasks.template_services import WorkerFunctionServices
from services.common import host, sleep_or_stop, wait_or_stop
from services.flows import FlowCache, FlowNotFoundError
from services.task_services import BackendTaskServices

log = get_logger(__name__)

#: a report the database refused is tried again after this many seconds, doubling up
#: to RESULT_RETRY_MAX, for as long as it takes
RESULT_RETRY_FIRST = 0.2
RESULT_RETRY_MAX = 5.0


class _LogBuffer:
    """Log lines of running tasks, written to the log store in batches."""

    def __init__(self) -> None:
        self.entries: list[LogEntry] = []

    def add(self, entry: LogEntry) -> None:
        self.entries.append(entry)

    def take(self) -> list[LogEntry]:
        entries, self.entries = self.entries, []
        return entries


class _TaskLogger:
    def __init__(self, job: WorkerJob, buffer: _LogBuffer, clock: Callable[[], datetime]) -> None:
        self._job = job
        self._buffer = buffer
        self._clock = clock
        #: secret values this task rendered: written as *** in its logs, as Kestra does
        self.masked: set[str] = set()

    def log(self, level: str, message: str) -> None:
        job = self._job
        for secret in self.masked:
            message = message.replace(secret, "***")
        self._buffer.add(
            LogEntry(
                execution_id=job.execution_id,
                namespace=job.namespace,
                flow_id=job.flow_id,
                timestamp=self._clock(),
                level=level.upper(),
                message=message,
                task_run_id=job.task_run_id,
                task_id=job.task_id,
                attempt=job.attempt,
            )
        )

    def debug(self, message: str) -> None:
        self.log("DEBUG", message)

    def info(self, message: str) -> None:
        self.log("INFO", message)

    def warning(self, message: str) -> None:
        self.log("WARN", message)

    def error(self, message: str) -> None:
        self.log("ERROR", message)


class _Report(NamedTuple):
    """A job's end, to publish with its ack."""

    message: QueueMessage
    job: WorkerJob
    result: bytes
    killed: bool


class _Reports:
    """Group commit of job reports: a report is written at once when no write is in
    flight; reports arriving during a write go together in the next one. An idle
    worker's report waits for nothing, a busy worker's cost one transaction per
    group instead of one per job."""

    def __init__(self, write: Callable[[list[_Report]], Awaitable[None]]) -> None:
        self._write = write
        self._pending: list[tuple[_Report, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def send(self, report: _Report) -> None:
        """Return once ``report`` is committed; raise what its write raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((report, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name="worker.reports")
        await future

    async def _drain(self) -> None:
        while self._pending:
            group, self._pending = self._pending, []
            try:
                await self._write([report for report, _ in group])
            except asyncio.CancelledError:
                for _, future in [*group, *self._pending]:
                    future.cancel()
                self._pending = []
                raise
            except Exception as exc:
                # each sender decides (a Transient is retried by its job)
                for _, future in group:
                    if not future.done():
                        future.set_exception(exc)
            else:
                for _, future in group:
                    if not future.done():
                        future.set_result(None)


class WorkerRunContext:
    """The RunContext a task sees (runtime.tasks.context.RunContext)."""

    def __init__(
        self,
        job: WorkerJob,
        *,
        workdir_parent: str | None,
        logger: _TaskLogger,
        storage: Storage,
        backend: Backend,
        pool: ProcessPool,
        secrets: dict[str, str],
    ) -> None:
        self.execution_id = job.execution_id
        self.task_run_id = job.task_run_id
        self.task_id = job.task_id
        self.attempt = job.attempt
        self.namespace = job.namespace
        self.flow_id = job.flow_id
        self.variables = job.variables
        self._workdir_parent = workdir_parent
        self._workdir: Path | None = None
        self.log = logger
        self.storage = storage
        self.kv = backend.kv
        self.logs = backend.logs
        #: what the tasks acting on executions, logs and triggers use
        self.backend_services = BackendTaskServices(backend)
        self.pool = pool
        self._secrets = secrets
        self.warning: str | None = None
        self.kill_callbacks: list[Callable[[], None]] = []

    @property
    def workdir(self) -> Path:
        """Made on first use: most tasks never need one."""
        if self._workdir is None:
            self._workdir = Path(
                tempfile.mkdtemp(
                    prefix=f"runtime-{self.task_run_id[:8]}-", dir=self._workdir_parent
                )
            )
        return self._workdir

    async def cleanup(self) -> None:
        if self._workdir is not None:
            await asyncio.to_thread(shutil.rmtree, self._workdir, True)

    async def render(self, value: Any, extra: dict[str, Any] | None = None) -> Any:
        variables = {**self.variables, **extra} if extra else self.variables
        return await template.render_value_async(
            value, variables, services=_TemplateServices(self, self._secrets)
        )

    def warn(self, reason: str) -> None:
        self.warning = reason

    def on_kill(self, callback: Callable[[], None]) -> None:
        self.kill_callbacks.append(callback)


class _TemplateServices(WorkerFunctionServices):
    """secret(), kv() and read() for the task's templates (the functions reading the
    execution's logs and files come from WorkerFunctionServices)."""

    def __init__(self, ctx: WorkerRunContext, secrets: dict[str, str]) -> None:
        self._ctx = ctx
        self._secrets = secrets

    async def secret(self, key: str) -> str:
        try:
            # Kestra's environment secrets are SECRET_<KEY>: secret('my_key') finds it
            value = self._secrets[key] if key in self._secrets else self._secrets[key.upper()]
        except KeyError:
            raise LookupError(
                f"secret {key!r} is not set: export SECRET_{key.upper()}=<base64 of the value> "
                "in the worker's environment"
            ) from None
        if len(value) >= 3:  # masking a one-letter secret would garble every line
            self._ctx.log.masked.add(value)
        return value

    async def kv(self, key: str, namespace: str | None, error_on_missing: bool) -> Any:
        space = namespace or self._ctx.namespace
        entry = await self._ctx.kv.get(space, key)
        if entry is None:
            if error_on_missing:
                raise LookupError(f"no KV entry {key!r} in namespace {space!r}")
            return None
        return entry.value

    async def read(self, path: str) -> str:
        data = await self._ctx.storage.get(path)
        return data.decode("utf-8", errors="replace")


class Worker:
    """One worker; run it as a supervised child with :meth:`run`."""

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
        self.running: dict[str, tuple[asyncio.Task[None], WorkerRunContext | None]] = {}
        self._killed: set[str] = set()
        #: jobs whose coroutine started (a job cancelled before it did is settled by
        #: _finished); tasks settling such jobs
        self._began: set[str] = set()
        self._settling: set[asyncio.Task[None]] = set()
        self._buffer = _LogBuffer()
        self._reports = _Reports(self._write_reports)
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()
        self._started = datetime.now(UTC)
        self.pool = ProcessPool(self.settings.process_pool, name=f"{worker_id}-pool")
        self.completed = 0

    # -- the child's life -------------------------------------------------------
    async def run(self, ctx: ChildContext) -> None:
        ctx.on_stop_requested(self._stopping.set)
        await self.pool.start()
        await self._heartbeat(ServiceState.RUNNING)
        side = [
            asyncio.create_task(self._heartbeats(), name=f"{self.id}.heartbeat"),
            asyncio.create_task(self._watch_kills(), name=f"{self.id}.kills"),
            asyncio.create_task(self._flush_logs(), name=f"{self.id}.logs"),
        ]
        ctx.ready()
        log.info("worker.started", worker=self.id, concurrency=self.settings.concurrency)
        claim = asyncio.create_task(self._claim_loop(), name=f"{self.id}.claim")
        try:
            done, _ = await asyncio.wait([claim, *side], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if task is not claim and task.exception() is not None:
                    raise RuntimeError(f"worker side task {task.get_name()} died") from (
                        task.exception()
                    )
            await claim
            await self._drain()
        finally:
            # An immediate stop (cancellation) ends the claim loop and running jobs
            # too; each job gives itself back to the queue as it is cancelled.
            self._stopping.set()
            claim.cancel()
            await asyncio.gather(claim, return_exceptions=True)
            jobs = [task for task, _ in self.running.values()]
            for task in [*side, *jobs]:
                task.cancel()
            await asyncio.gather(*side, *jobs, return_exceptions=True)
            if self._settling:
                # bounded: with the database away, liveness hands the jobs on instead
                await asyncio.wait(list(self._settling), timeout=5.0)
            await asyncio.shield(self._final_flush())
            await self.pool.stop()
            log.info("worker.stopped", worker=self.id, completed=self.completed)

    async def _claim_loop(self) -> None:
        queues = self.backend.queues
        while not self._stopping.is_set():
            free = self.settings.concurrency - len(self.running)
            if free <= 0:
                self._slot_freed.clear()
                await wait_or_stop(self._stopping, self._slot_freed.wait())
                continue
            try:
                batch = await queues.claim(WORKER_QUEUE, self.id, free, self.settings.lease_seconds)
            except Transient as exc:
                log.warning("worker.backend_unavailable", error=str(exc))
                await sleep_or_stop(self._stopping, 1.0)
                continue
            if not batch:
                await wait_or_stop(self._stopping, queues.wait(WORKER_QUEUE, 1.0))
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
                await wait_or_stop(self._stopping, queues.wait(WORKER_QUEUE, 1.0))

    def _start(self, message: QueueMessage, job: WorkerJob) -> None:
        task = asyncio.create_task(self._run_job(message, job), name=f"job.{job.task_run_id}")
        self.running[job.task_run_id] = (task, None)
        task.add_done_callback(lambda done: self._finished(done, message, job))

    def _finished(self, task: asyncio.Task[None], message: QueueMessage, job: WorkerJob) -> None:
        run_id = job.task_run_id
        self.running.pop(run_id, None)
        killed = run_id in self._killed
        self._killed.discard(run_id)
        began = run_id in self._began
        self._began.discard(run_id)
        self._slot_freed.set()
        if task.cancelled() and not began:
            # Cancelled before it ran a line (a stop, or a kill, right after the claim):
            # its own handlers never ran, so the job is settled from here.
            settle = asyncio.create_task(self._settle_unstarted(message, job, killed))
            self._settling.add(settle)
            settle.add_done_callback(self._settling.discard)

    async def _settle_unstarted(self, message: QueueMessage, job: WorkerJob, killed: bool) -> None:
        if killed:
            await self._finish(message, job, StateType.KILLED, None)
        else:
            await self._give_back(message)

    async def _drain(self) -> None:
        """Let running jobs finish within the grace period, then give the rest back."""
        tasks = [task for task, _ in self.running.values()]
        if not tasks:
            return
        log.info("worker.draining", worker=self.id, running=len(tasks))
        _, pending = await asyncio.wait(tasks, timeout=self.settings.grace_seconds)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

    # -- one job ----------------------------------------------------------------
    async def _run_job(self, message: QueueMessage, job: WorkerJob) -> None:
        self._began.add(job.task_run_id)
        try:
            task = await self._task(job)
        except FlowNotFoundError as exc:
            self._logger(job).error(str(exc))
            await self._finish(message, job, StateType.FAILED, None)
            return
        except asyncio.CancelledError:
            await asyncio.shield(self._cancelled(message, job, None))
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
        current = self.running.get(job.task_run_id)
        if current is not None:
            self.running[job.task_run_id] = (current[0], ctx)
        try:
            state, outputs = await self._execute(task, ctx)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancelled(message, job, started))
            raise
        finally:
            reporter.cancel()
            await ctx.cleanup()
        await self._finish(message, job, state, outputs, started)
        self.completed += 1

    async def _cancelled(
        self, message: QueueMessage, job: WorkerJob, started: datetime | None
    ) -> None:
        """A job cancelled by a kill ends KILLED; by a stop past its grace period, it
        goes back to the queue for another worker."""
        if job.task_run_id in self._killed:
            await self._finish(message, job, StateType.KILLED, None, started)
        else:
            await self._give_back(message)

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
            _call_kill_callbacks(ctx)
            ctx.log.error(f"task {task.id!r} timed out after {runnable.timeout}: killed")
            return StateType.FAILED, None
        except template.TemplateError as exc:
            ctx.log.error(f"task {task.id!r}: {exc}")
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

    def _logger(self, job: WorkerJob) -> _TaskLogger:
        return _TaskLogger(job, self._buffer, self.backend.clock)

    def _result(
        self, job: WorkerJob, state: StateType, outputs: Any, started: datetime | None = None
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
            )
        )

    async def _finish(
        self,
        message: QueueMessage,
        job: WorkerJob,
        state: StateType,
        outputs: Any,
        started: datetime | None = None,
    ) -> None:
        """Publish the final result and ack the job, together (with the results of
        the jobs that end meanwhile: see :class:`_Reports`)."""
        report = _Report(
            message, job, self._result(job, state, outputs, started), state is StateType.KILLED
        )
        # Until it is written, however long the database is away: given up, the job
        # would stay leased to this live worker (a day) and then run a second time.
        attempt = 0
        while True:
            try:
                await self._reports.send(report)
                return
            except Transient as exc:
                log.warning(
                    "worker.result_retry",
                    error=str(exc),
                    attempt=attempt,
                    task_run=job.task_run_id,
                )
                await asyncio.sleep(
                    min(RESULT_RETRY_MAX, RESULT_RETRY_FIRST * 2 ** min(attempt, 8))
                )
                attempt += 1

    async def _write_reports(self, reports: list[_Report]) -> None:
        """One transaction: the log lines so far, the results, the acks."""
        logs = self._buffer.take()
        try:
            async with self.backend.transaction() as tx:
                if logs:
                    await tx.logs.append(logs)
                results = [(r.job.execution_id, r.result) for r in reports]
                await tx.queues.publish(EXECUTOR_QUEUE, results)
                await tx.queues.ack(WORKER_QUEUE, [r.message.id for r in reports])
                killed = [r.job.task_run_id for r in reports if r.killed]
                if killed:
                    await tx.kills.clear(killed)
        except BaseException:
            self._buffer.entries[:0] = logs  # they go with the next write
            raise

    async def _give_back(self, message: QueueMessage) -> None:
        try:
            await self.backend.queues.nack(WORKER_QUEUE, [message.id])
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
        for run_id in killed - self._killed:
            entry = self.running.get(run_id)
            if entry is None:
                continue
            task, ctx = entry
            self._killed.add(run_id)
            if ctx is not None:
                ctx.log.warning("killed on request")
                _call_kill_callbacks(ctx)
            task.cancel()

    async def _flush_logs(self) -> None:
        while True:
            await asyncio.sleep(self.settings.log_flush_seconds)
            await self._final_flush()

    async def _final_flush(self) -> None:
        entries = self._buffer.take()
        if not entries:
            return
        try:
            await self.backend.logs.append(entries)
        except Transient as exc:
            log.warning("worker.logs_retry", error=str(exc), count=len(entries))
            self._buffer.entries[:0] = entries


def _call_kill_callbacks(ctx: WorkerRunContext) -> None:
    for callback in ctx.kill_callbacks:
        try:
            callback()
        except Exception as exc:
            log.warning("worker.kill_callback_failed", error=repr(exc))


def secrets_from_env(environ: dict[str, str]) -> dict[str, str]:
    """Kestra's open-source convention: SECRET_<KEY> holds base64 of the value."""
    out = {}
    for name, value in environ.items():
        if name.startswith("SECRET_"):
            try:
                out[name.removeprefix("SECRET_")] = base64.b64decode(value).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError):
                log.warning("worker.secret_not_base64", name=name)
    return out


__all__ = ["Worker", "WorkerRunContext", "secrets_from_env"]
