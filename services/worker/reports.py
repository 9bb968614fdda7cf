"""The worker's reports: a job's end (its result, published together with its ack
and the log lines so far) written by group commit, and retried for as long as the
database is away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NamedTuple

from backends.errors import Transient
from backends.protocols import Inbox, QueueMessage
from runtime.log import get_logger
from runtime.messages import EXECUTOR_QUEUE, WorkerJob
from services.worker.context import LogBuffer

log = get_logger("services.worker")

#: a report the database refused is tried again after this many seconds, doubling up
#: to RESULT_RETRY_MAX, for as long as it takes
RESULT_RETRY_FIRST = 0.2
RESULT_RETRY_MAX = 5.0


class Report(NamedTuple):
    """A job's end, to publish with its ack."""

    message: QueueMessage
    job: WorkerJob
    result: bytes
    killed: bool


class Reports:
    """Group commit of job reports: a report is written at once when no write is in
    flight; reports arriving during a write go together in the next one. An idle
    worker's report waits for nothing, a busy worker's cost one transaction per
    group instead of one per job."""

    def __init__(
        self, write: Callable[[list[Report]], Awaitable[None]], name: str = "worker.reports"
    ) -> None:
        self._write = write
        self._name = name
        self._pending: list[tuple[Report, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def send(self, report: Report) -> None:
        """Return once ``report`` is committed; raise what its write raised."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((report, future))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain(), name=self._name)
        await future

    async def idle(self, within: float) -> None:
        """Until no write is in flight (at most ``within`` seconds, then it is
        cancelled): the worker's stop leaves no writer behind."""
        writer = self._writer
        if writer is None or writer.done():
            return
        _, pending = await asyncio.wait({writer}, timeout=within)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)

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


async def send_until_written(reports: Reports, report: Report) -> None:
    """Send ``report``, however long the database is away: given up, the job would
    stay leased to this live worker (a day) and then run a second time."""
    attempt = 0
    while True:
        try:
            await reports.send(report)
            return
        except Transient as exc:
            log.warning(
                "worker.result_retry",
                error=str(exc),
                attempt=attempt,
                task_run=report.job.task_run_id,
            )
            await asyncio.sleep(min(RESULT_RETRY_MAX, RESULT_RETRY_FIRST * 2 ** min(attempt, 8)))
            attempt += 1


async def write_reports(inbox: Inbox, logs: LogBuffer, reports: list[Report]) -> None:
    """One unit of work of the jobs' inbox: the log lines so far, the results, and the
    jobs' acks (and their kill requests, for jobs that ended KILLED)."""
    entries = logs.take()
    try:
        async with inbox.settle([r.message for r in reports]) as tx:
            if entries:
                await tx.logs.append(entries)
            await tx.queues.publish(
                EXECUTOR_QUEUE, [(r.job.execution_id, r.result) for r in reports]
            )
            killed = [r.job.task_run_id for r in reports if r.killed]
            if killed:
                await tx.kills.clear(killed)
    except BaseException:
        logs.entries[:0] = entries  # they go with the next write
        raise


__all__ = [
    "RESULT_RETRY_FIRST",
    "RESULT_RETRY_MAX",
    "Report",
    "Reports",
    "send_until_written",
    "write_reports",
]
